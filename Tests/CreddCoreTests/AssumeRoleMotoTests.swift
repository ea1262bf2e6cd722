// AssumeRoleSource over real HTTP (AsyncHTTPClient) against moto's STS with SigV4 checking on.
import AsyncHTTPClient
import CreddCore
import Foundation
import Logging
import Testing

/// One moto server on 127.0.0.1 for the whole test process, set up by a small Python script: an admin
/// user, a user without permissions, a role anyone in the account may assume, and role credentials for
/// that role (the "source" of a chain). moto checks every signature once set up. The script exits when
/// its stdin closes, that is when the test process ends.
final class AssumeRoleMoto: @unchecked Sendable {
    struct Keys: Decodable {
        var id: String
        var secret: String
        var token: String?
        var expiration: String?
    }

    struct Setup: Decodable {
        var url: String
        var role_arn: String
        var admin: Keys
        var limited: Keys
        var source: Keys
    }

    let setup: Setup
    private let process: Process
    private let stdin: Pipe

    static let script = #"""
        import json, sys, urllib.request
        from moto.server import ThreadedMotoServer
        import boto3
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        def reset(count):
            # text/plain: a form content type would make moto read an empty body.
            req = urllib.request.Request(f"{url}/moto-api/reset-auth", data=count.encode(), method="POST",
                                         headers={"Content-Type": "text/plain"})
            urllib.request.urlopen(req, timeout=10).read()
        def client(service, key, secret, token=None):
            return boto3.session.Session().client(service, endpoint_url=url, region_name="eu-west-1",
                aws_access_key_id=key, aws_secret_access_key=secret, aws_session_token=token)
        reset("inf")
        iam = client("iam", "AKIASETUPSETUPSETUP0", "setup-secret-not-checked-yet")
        admin_policy = json.dumps({"Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})
        iam.create_user(UserName="admin")
        iam.put_user_policy(UserName="admin", PolicyName="admin", PolicyDocument=admin_policy)
        admin = iam.create_access_key(UserName="admin")["AccessKey"]
        iam.create_user(UserName="limited")
        limited = iam.create_access_key(UserName="limited")["AccessKey"]
        # moto compares trust principals literally (an account root does not cover its users): allow any.
        trust = json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]})
        role = iam.create_role(RoleName="credd-test-role", AssumeRolePolicyDocument=trust)["Role"]
        iam.put_role_policy(RoleName="credd-test-role", PolicyName="admin", PolicyDocument=admin_policy)
        reset("0")
        src = client("sts", admin["AccessKeyId"], admin["SecretAccessKey"]).assume_role(
            RoleArn=role["Arn"], RoleSessionName="source-session", DurationSeconds=3600)["Credentials"]
        print(json.dumps({"url": url, "role_arn": role["Arn"],
            "admin": {"id": admin["AccessKeyId"], "secret": admin["SecretAccessKey"]},
            "limited": {"id": limited["AccessKeyId"], "secret": limited["SecretAccessKey"]},
            "source": {"id": src["AccessKeyId"], "secret": src["SecretAccessKey"], "token": src["SessionToken"],
                       "expiration": src["Expiration"].strftime("%Y-%m-%dT%H:%M:%SZ")}}), flush=True)
        sys.stdin.read()
        server.stop()
        """#

    struct StartFailed: Error, CustomStringConvertible {
        var description: String
    }

    init() throws {
        let process = Process()
        process.executableURL = BotocoreOracle.python
        process.arguments = ["-u", "-c", Self.script]
        process.environment = [
            "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": FileManager.default.temporaryDirectory.path,
            "BOTO_DISABLE_CRT": "true", "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "AWS_EC2_METADATA_DISABLED": "true", "NO_PROXY": "127.0.0.1,localhost",
        ]
        let stdin = Pipe(), stdout = Pipe()
        let errorLog = FileManager.default.temporaryDirectory.appendingPathComponent("credd-moto-\(UUID().uuidString).log")
        _ = FileManager.default.createFile(atPath: errorLog.path, contents: nil)
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = try FileHandle(forWritingTo: errorLog)
        try process.run()
        self.process = process
        self.stdin = stdin

        var line = Data()
        while !line.contains(UInt8(ascii: "\n")) {
            let chunk = stdout.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            line.append(chunk)
        }
        guard let decoded = try? JSONDecoder().decode(Setup.self, from: line) else {
            let log = (try? String(contentsOf: errorLog, encoding: .utf8)) ?? ""
            throw StartFailed(description: "moto did not start: \(log.suffix(2000))")
        }
        setup = decoded
    }

    deinit {
        try? stdin.fileHandleForWriting.close()
    }

    static let shared: Result<AssumeRoleMoto, any Error> = Result { try AssumeRoleMoto() }

    var endpoint: STSEndpoint {
        get throws {
            try STSEndpoint.resolve(
                setName: "deploy", region: "eu-west-1", endpoint: setup.url, allowGlobalEndpoint: false, environment: [:]
            ).get()
        }
    }

    func source(
        _ keys: Keys, isRole: Bool, duration: Duration = .seconds(3600), role: String? = nil
    ) throws -> (AssumeRoleSource, AssumeRoleSourceSet) {
        let creds = Credentials(
            accessKeyId: keys.id, secretAccessKey: Secret(keys.secret), sessionToken: Secret(keys.token ?? ""),
            expiration: Date().addingTimeInterval(3000), isRoleCredentials: isRole)
        let set = AssumeRoleSourceSet(current: creds)
        let source = AssumeRoleSource(
            setName: "deploy", sourceSetName: "default",
            parameters: AssumeRoleParameters(
                roleArn: role ?? setup.role_arn, roleSessionName: "credd-swift-test", duration: duration),
            endpoint: try endpoint, httpClient: HTTPClient.shared, timeout: .seconds(5),
            currentSourceCredentials: set.currentCredentials, refreshSource: set.refresh)
        return (source, set)
    }
}

@Suite(
    "AssumeRole against moto over HTTP",
    .enabled(if: BotocoreOracle.isAvailable, "skipped: the venv python (.venv/bin/python) with moto is absent"))
struct AssumeRoleMotoTests {
    @Test("long-term keys assume the role; the ARN and account come back")
    func longTermKeys() async throws {
        let moto = try AssumeRoleMoto.shared.get()
        let (source, _) = try moto.source(moto.setup.admin, isRole: false)
        let creds = try await source.fetch(logger: AssumeRoleLogRecorder().logger)
        #expect(creds.accessKeyId.hasPrefix("ASIA"))
        #expect(creds.accountId == "123456789012")
        #expect(creds.isRoleCredentials)
        let lifetime = creds.expiration.timeIntervalSinceNow
        #expect(lifetime > 3500 && lifetime <= 3600)
    }

    @Test("chained from role credentials (session token signed): a 4 h request is sent as 1 h")
    func chainedFromRoleCredentials() async throws {
        let moto = try AssumeRoleMoto.shared.get()
        let (source, _) = try moto.source(moto.setup.source, isRole: true, duration: .seconds(4 * 3600))
        let log = AssumeRoleLogRecorder()
        let creds = try await source.fetch(logger: log.logger)
        // moto itself grants any duration asked for, so the lifetime shows what credd sent.
        let lifetime = creds.expiration.timeIntervalSinceNow
        #expect(lifetime > 3500 && lifetime <= 3600)
        #expect(log.entries.contains { $0.level == .warning && $0.message.contains("capped at 1 hour") })
        #expect(!log.text.contains(moto.setup.source.secret))
        #expect(!log.text.contains(moto.setup.source.token ?? "-"))
        #expect(!log.text.contains(creds.secretAccessKey.exposed))
        #expect(!log.text.contains(creds.sessionToken.exposed))
    }

    @Test("the assumed credentials work in turn: chaining from what credd got")
    func credentialsFromCreddWork() async throws {
        let moto = try AssumeRoleMoto.shared.get()
        let (first, _) = try moto.source(moto.setup.admin, isRole: false)
        let creds = try await first.fetch(logger: AssumeRoleLogRecorder().logger)
        let (second, _) = try moto.source(
            AssumeRoleMoto.Keys(id: creds.accessKeyId, secret: creds.secretAccessKey.exposed, token: creds.sessionToken.exposed),
            isRole: true)
        let again = try await second.fetch(logger: AssumeRoleLogRecorder().logger)
        #expect(again.accessKeyId != creds.accessKeyId)
    }

    @Test("a user without permission: AccessDenied naming the role and the caller's ARN")
    func accessDenied() async throws {
        let moto = try AssumeRoleMoto.shared.get()
        let (source, _) = try moto.source(moto.setup.limited, isRole: false)
        let error = await #expect(throws: SourceError.self) { try await source.fetch(logger: AssumeRoleLogRecorder().logger) }
        #expect(error?.code == "AccessDenied")
        #expect(error?.message.contains(moto.setup.role_arn) == true)
        #expect(error?.message.contains("arn:aws:iam::123456789012:user/limited") == true)
    }

    @Test("a wrong secret: SignatureDoesNotMatch, mentioning the clock")
    func wrongSecret() async throws {
        let moto = try AssumeRoleMoto.shared.get()
        var keys = moto.setup.admin
        keys.secret = String(repeating: "x", count: 40)
        let (source, _) = try moto.source(keys, isRole: false)
        let error = await #expect(throws: SourceError.self) { try await source.fetch(logger: AssumeRoleLogRecorder().logger) }
        #expect(error?.code == "SignatureDoesNotMatch")
        #expect(error?.message.contains("clock") == true)
    }

    @Test("an unknown key: InvalidClientTokenId naming the key suffix")
    func unknownKey() async throws {
        let moto = try AssumeRoleMoto.shared.get()
        let (source, _) = try moto.source(AssumeRoleMoto.Keys(id: "AKIAUNKNOWNUNKNWZ9Q", secret: "x"), isRole: false)
        let error = await #expect(throws: SourceError.self) { try await source.fetch(logger: AssumeRoleLogRecorder().logger) }
        #expect(error?.code == "InvalidClientTokenId")
        #expect(error?.message.contains("…WZ9Q") == true)
    }

    @Test("nothing listening: STSUnreachable, transient, within the deadline")
    func unreachable() async throws {
        // A port that was free a moment ago on loopback: connection refused.
        let endpoint = try STSEndpoint.resolve(
            setName: "deploy", region: "eu-west-1", endpoint: "http://127.0.0.1:9", allowGlobalEndpoint: false, environment: [:]
        ).get()
        let set = AssumeRoleSourceSet(current: AssumeRoleFixtures.sourceCredentials())
        let source = AssumeRoleSource(
            setName: "deploy", sourceSetName: "default",
            parameters: AssumeRoleParameters(roleArn: AssumeRoleFixtures.roleArn, roleSessionName: "credd-swift-test"),
            endpoint: endpoint, httpClient: HTTPClient.shared, timeout: .seconds(2),
            currentSourceCredentials: set.currentCredentials, refreshSource: set.refresh)
        let started = ContinuousClock.now
        let error = await #expect(throws: SourceError.self) { try await source.fetch(logger: AssumeRoleLogRecorder().logger) }
        // The 2 s timeout ends it; the bound is loose so that a loaded machine does not fail a timing.
        #expect(ContinuousClock.now - started < .seconds(20))
        #expect(error?.code == "STSUnreachable")
        #expect(error?.disposition == .transient)
        #expect(error?.message.contains("http://127.0.0.1:9") == true)
    }
}
