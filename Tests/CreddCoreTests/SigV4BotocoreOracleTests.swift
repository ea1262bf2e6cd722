// The SigV4 signer and the AssumeRole form body against botocore's own, on real AssumeRole requests.
import CreddCore
import Foundation
import Testing

/// Paths of the oracle script and the venv's python, found from this file's location.
enum BotocoreOracle {
    static let repositoryRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let script = repositoryRoot.appendingPathComponent("Tests/integration/sigv4_oracle.py")
    static let python: URL = {
        let local = repositoryRoot.appendingPathComponent(".venv/bin/python")
        if FileManager.default.isExecutableFile(atPath: local.path) { return local }
        return URL(fileURLWithPath: "/work/main/.venv/bin/python")
    }()

    static var isAvailable: Bool {
        FileManager.default.isExecutableFile(atPath: python.path) && FileManager.default.fileExists(atPath: script.path)
    }

    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        var accessKeyId: String
        var secretAccessKey: String
        var sessionToken: String?
        var region: String
        /// nil: the regional endpoint.
        var endpoint: String?
        var allowGlobalEndpoint = false
        var parameters: AssumeRoleParameters
        var timestamp: String
        var testDescription: String { name }
    }

    static let temporaryToken =
        "IQoJb3JpZ2luX2VjEPT//////////wEaCWV1LXdlc3QtMSJHMEUCIQDexampleexampleexampleexample+/=="

    static let cases: [Case] = [
        Case(
            name: "temporary source credentials (session token), minimal parameters",
            accessKeyId: "ASIAEXAMPLEEXAMPLE01", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            sessionToken: temporaryToken, region: "eu-west-1",
            parameters: AssumeRoleParameters(
                roleArn: "arn:aws:iam::123456789012:role/deploy", roleSessionName: "credd-alice@build-01"),
            timestamp: "2026-01-02T03:04:05Z"),
        Case(
            name: "long-term source keys (no session token)",
            accessKeyId: "AKIAEXAMPLEEXAMPLE02", secretAccessKey: "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY",
            sessionToken: nil, region: "us-east-1",
            parameters: AssumeRoleParameters(
                roleArn: "arn:aws:iam::210987654321:role/path/to/reader", roleSessionName: "s2",
                duration: .seconds(900)),
            timestamp: "2025-12-31T23:59:59Z"),
        Case(
            name: "ExternalId with reserved characters",
            accessKeyId: "ASIAEXAMPLEEXAMPLE03", secretAccessKey: "secret/with+plus=equals",
            sessionToken: temporaryToken, region: "ap-southeast-2",
            parameters: AssumeRoleParameters(
                roleArn: "arn:aws:iam::123456789012:role/third-party", roleSessionName: "credd-bob@host.example.com",
                duration: .seconds(7200), externalId: "ext:id/with+plus=and@at,comma"),
            timestamp: "2026-06-30T12:00:00Z"),
        Case(
            name: "Policy with spaces, quotes, braces, wildcards, slashes, newlines and non-ASCII",
            accessKeyId: "ASIAEXAMPLEEXAMPLE04", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            sessionToken: temporaryToken, region: "eu-central-1",
            parameters: AssumeRoleParameters(
                roleArn: "arn:aws:iam::123456789012:role/deploy", roleSessionName: "credd-carol@h",
                policy: """
                    {"Version": "2012-10-17",
                     "Statement": [{"Effect": "Allow", "Action": ["s3:Get*", "s3:List*"],
                       "Resource": "arn:aws:s3:::bucket/prefix ~ (ünïcödé)/*"}]}
                    """),
            timestamp: "2026-03-04T05:06:07Z"),
        Case(
            name: "SourceIdentity",
            accessKeyId: "ASIAEXAMPLEEXAMPLE05", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            sessionToken: temporaryToken, region: "me-south-1",
            parameters: AssumeRoleParameters(
                roleArn: "arn:aws:iam::123456789012:role/audited", roleSessionName: "credd-dave@h",
                sourceIdentity: "dave@example.com"),
            timestamp: "2026-02-28T00:00:00Z"),
        Case(
            name: "everything at once, loopback endpoint with a port (Host carries it)",
            accessKeyId: "ASIAEXAMPLEEXAMPLE06", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            sessionToken: temporaryToken, region: "us-west-2", endpoint: "http://127.0.0.1:50123",
            parameters: AssumeRoleParameters(
                roleArn: "arn:aws:iam::123456789012:role/all", roleSessionName: "credd-erin@h",
                duration: .seconds(3600), externalId: "abc-123",
                policy: #"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"*","Resource":"*"}]}"#,
                sourceIdentity: "erin"),
            timestamp: "2026-11-22T18:04:05Z"),
        Case(
            name: "China partition regional endpoint",
            accessKeyId: "ASIAEXAMPLEEXAMPLE07", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            sessionToken: temporaryToken, region: "cn-north-1", endpoint: "https://sts.cn-north-1.amazonaws.com.cn",
            parameters: AssumeRoleParameters(
                roleArn: "arn:aws-cn:iam::123456789012:role/cn", roleSessionName: "credd-fay@h"),
            timestamp: "2026-05-05T05:05:05Z"),
        Case(
            name: "global endpoint when allowed explicitly (signed for us-east-1)",
            accessKeyId: "ASIAEXAMPLEEXAMPLE08", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            sessionToken: temporaryToken, region: "us-east-1", endpoint: "https://sts.amazonaws.com",
            allowGlobalEndpoint: true,
            parameters: AssumeRoleParameters(
                roleArn: "arn:aws:iam::123456789012:role/global", roleSessionName: "credd-gus@h"),
            timestamp: "2026-07-07T07:07:07Z"),
    ]

    struct Answer: Decodable {
        var name: String
        var url: String
        var authorization: String
        var x_amz_date: String
        var body: String
        var signed_headers: [String]
        var content_type: String
    }

    static func endpoint(for c: Case) throws -> STSEndpoint {
        try STSEndpoint.resolve(
            setName: "oracle", region: c.region, endpoint: c.endpoint, allowGlobalEndpoint: c.allowGlobalEndpoint,
            environment: [:]
        ).get()
    }

    /// botocore's answers for every case, from one run of the oracle script.
    static let answers: Result<[String: Answer], any Error> = Result {
        var specs: [[String: Any]] = []
        for c in cases {
            let ep = try endpoint(for: c)
            // The same fields in the same order as credd sends them (botocore keeps keyword order).
            var params: [(String, Any)] = []
            for (key, value) in STSClient.assumeRoleFields(c.parameters, durationSeconds: c.parameters.durationSeconds)
            where key != "Action" && key != "Version" {
                params.append((key, key == "DurationSeconds" ? Int(value)! : value))
            }
            var spec: [String: Any] = [
                "name": c.name, "access_key_id": c.accessKeyId, "secret_access_key": c.secretAccessKey,
                "region": ep.signingRegion, "endpoint_url": ep.url.absoluteString, "timestamp": c.timestamp,
                "params_order": params.map(\.0),
                "params": Dictionary(uniqueKeysWithValues: params),
            ]
            if let token = c.sessionToken { spec["session_token"] = token }
            specs.append(spec)
        }
        let input = try JSONSerialization.data(withJSONObject: ["cases": specs])
        let output = try runOracle(input)
        let decoded = try JSONDecoder().decode([Answer].self, from: output)
        return Dictionary(uniqueKeysWithValues: decoded.map { ($0.name, $0) })
    }

    struct OracleFailed: Error, CustomStringConvertible {
        var description: String
    }

    static func runOracle(_ input: Data) throws -> Data {
        let process = Process()
        process.executableURL = python
        process.arguments = [script.path]
        // No AWS_* variable of this machine (AWS_CA_BUNDLE is set here) reaches botocore.
        var environment = ["PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "BOTO_DISABLE_CRT": "true"]
        environment["HOME"] = FileManager.default.temporaryDirectory.path
        process.environment = environment
        let stdin = Pipe(), stdout = Pipe(), stderr = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = stderr
        try process.run()
        stdin.fileHandleForWriting.write(input)
        try stdin.fileHandleForWriting.close()
        let output = stdout.fileHandleForReading.readDataToEndOfFile()
        let errors = stderr.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw OracleFailed(description:
                "sigv4_oracle.py exited with \(process.terminationStatus): \(String(decoding: errors.suffix(3000), as: UTF8.self))")
        }
        return output
    }
}

@Suite("SigV4 and the AssumeRole body against botocore")
struct SigV4BotocoreOracleTests {
    @Test(
        "same body, Authorization and X-Amz-Date as botocore's SigV4Auth",
        .enabled(if: BotocoreOracle.isAvailable, "skipped: the venv python (.venv/bin/python) or Tests/integration/sigv4_oracle.py is absent"),
        arguments: BotocoreOracle.cases)
    func matchesBotocore(_ c: BotocoreOracle.Case) throws {
        let answers = try BotocoreOracle.answers.get()
        let answer = try #require(answers[c.name])
        let endpoint = try BotocoreOracle.endpoint(for: c)
        let client = STSClient(endpoint: endpoint, transport: { _, _ in throw STSFailure.unreachable("not used") })
        let date = try #require(RFC3339.parse(c.timestamp))
        let request = client.assumeRoleRequest(
            c.parameters, durationSeconds: c.parameters.durationSeconds,
            credentials: SigningCredentials(
                accessKeyId: c.accessKeyId, secretAccessKey: Secret(c.secretAccessKey),
                sessionToken: c.sessionToken.map(Secret.init)),
            date: date)

        #expect(request.url.absoluteString == answer.url)
        #expect(String(decoding: request.body, as: UTF8.self) == answer.body)
        #expect(request.signed.authorization == answer.authorization)
        #expect(request.signed.amzDate == answer.x_amz_date)
        let sent = Dictionary(request.headers.map { ($0.name.lowercased(), $0.value) }, uniquingKeysWith: { a, _ in a })
        #expect(sent["content-type"] == answer.content_type)
        #expect(answer.signed_headers.contains("x-amz-security-token") == (c.sessionToken != nil))
        #expect((sent["x-amz-security-token"] != nil) == (c.sessionToken != nil))
    }
}
