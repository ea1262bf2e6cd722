// STSClient: the form body, the signed request, and STS's XML answers read with XMLParser.
import CreddCore
import Foundation
import Testing

@Suite("AssumeRole STS client")
struct AssumeRoleSTSClientTests {
    typealias F = AssumeRoleFixtures

    func call(_ answer: AssumeRoleFakeSTS.Answer) async throws -> AssumeRoleResult {
        let sts = AssumeRoleFakeSTS([answer])
        let client = STSClient(endpoint: F.endpoint, now: { F.now }, transport: sts.transport)
        return try await client.assumeRole(
            AssumeRoleParameters(roleArn: F.roleArn, roleSessionName: "credd-test"), durationSeconds: 3600,
            credentials: F.sourceCredentials(), logger: AssumeRoleLogRecorder().logger)
    }

    func failure(_ answer: AssumeRoleFakeSTS.Answer) async -> STSFailure? {
        await #expect(throws: STSFailure.self) { _ = try await call(answer) }
    }

    // MARK: form

    @Test(
        "form encoding is Python urlencode's: unreserved stay, space is +, everything else %XX",
        arguments: [
            ("abc-._~XYZ019", "abc-._~XYZ019"),
            ("a b", "a+b"),
            ("a+b", "a%2Bb"),
            ("arn:aws:iam::1:role/x", "arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fx"),
            (#"{"a": "*"}"#, "%7B%22a%22%3A+%22%2A%22%7D"),
            ("ü\n&=", "%C3%BC%0A%26%3D"),
            ("a%20b", "a%2520b"),
        ])
    func formEncoding(value: String, encoded: String) {
        #expect(STSClient.formEncode([("K", value)]) == "K=\(encoded)")
    }

    @Test("the fields, in the order sent; optional ones only when set")
    func fields() {
        let minimal = STSClient.assumeRoleFields(
            AssumeRoleParameters(roleArn: "r", roleSessionName: "s"), durationSeconds: 900)
        #expect(minimal.map(\.0) == ["Action", "Version", "RoleArn", "RoleSessionName", "DurationSeconds"])
        #expect(minimal.map(\.1) == ["AssumeRole", "2011-06-15", "r", "s", "900"])
        let full = STSClient.assumeRoleFields(
            AssumeRoleParameters(roleArn: "r", roleSessionName: "s", externalId: "e", policy: "{}", sourceIdentity: "i"),
            durationSeconds: 3600)
        #expect(full.map(\.0) == [
            "Action", "Version", "RoleArn", "RoleSessionName", "DurationSeconds", "ExternalId", "Policy", "SourceIdentity",
        ])
    }

    @Test("the request: POST / with Host, form Content-Type, X-Amz-Date, token and Authorization")
    func request() {
        let client = STSClient(endpoint: F.endpoint, transport: { _, _ in (500, []) })
        let request = client.assumeRoleRequest(
            AssumeRoleParameters(roleArn: F.roleArn, roleSessionName: "credd-test"), durationSeconds: 3600,
            credentials: SigningCredentials(F.sourceCredentials()), date: F.now)
        #expect(request.url.absoluteString == "https://sts.eu-west-1.amazonaws.com/")
        #expect(request.headers.map(\.name) == ["Host", "Content-Type", "X-Amz-Date", "X-Amz-Security-Token", "Authorization"])
        #expect(F.header(request, "Content-Type") == "application/x-www-form-urlencoded; charset=utf-8")
        #expect(F.header(request, "X-Amz-Date") == "20261122T180405Z")
        #expect(request.signed.canonicalRequest.hasPrefix("POST\n/\n\ncontent-type:"))
        #expect(!request.description.contains("source-session-token-0001"))
        #expect(!request.description.contains("source-secret-key-0001"))
    }

    // MARK: answers

    @Test("an AssumeRoleResponse: credentials, ARN, role id, source identity, request id, account")
    func readsSuccess() async throws {
        let result = try await call(AssumeRoleFakeSTS.success())
        #expect(result.assumedRoleArn == "arn:aws:sts::123456789012:assumed-role/deploy/credd-test")
        #expect(result.assumedRoleId == "AROA3XFRBF535EXAMPLE:credd-test")
        #expect(result.sourceIdentity == "alice")
        #expect(result.requestId == "c6104cbe-af31-11e0-8154-cbc7ccf896c7")
        #expect(result.credentials.accountId == "123456789012")
        #expect(result.credentials.isRoleCredentials)
        #expect(!"\(result)".contains("role-secret-key-value-0001"))
        #expect(!"\(result)".contains("role-session-token-value-0001"))
    }

    @Test(
        "the account id comes from the assumed-role ARN, whatever the partition",
        arguments: [
            ("arn:aws:sts::123456789012:assumed-role/a/b", "123456789012"),
            ("arn:aws-cn:sts::210987654321:assumed-role/a/b", "210987654321"),
            ("arn:aws-us-gov:sts::000000000001:assumed-role/a/b/c", "000000000001"),
        ])
    func accountFromARN(arn: String, account: String) async throws {
        let result = try await call(AssumeRoleFakeSTS.success(arn: arn))
        #expect(result.credentials.accountId == account)
    }

    @Test("escaped XML text is unescaped; fractional expirations are read")
    func xmlEscapes() async throws {
        let result = try await call(AssumeRoleFakeSTS.success(
            expiration: "2026-11-22T19:04:05.123Z", secret: "a&amp;b&lt;c&gt;d", token: "t&#43;k"))
        #expect(result.credentials.secretAccessKey.exposed == "a&b<c>d")
        #expect(result.credentials.sessionToken.exposed == "t+k")
        #expect(abs(result.credentials.expiration.timeIntervalSince(RFC3339.parse("2026-11-22T19:04:05Z")!) - 0.123) < 0.001)
    }

    @Test(
        "answers that are not usable become unreadableAnswer, never a crash",
        arguments: [
            (200, "<AssumeRoleResponse><AssumeRoleResult><Credentials><AccessKeyId>A</AccessKeyId></Credentials></AssumeRoleResult></AssumeRoleResponse>"),
            (200, "<AssumeRoleResponse><AssumeRoleResult>"),
            (200, "{\"json\": true}"),
            (200, ""),
            (503, "<html><body>Service Unavailable</body></html>"),
            (403, "Forbidden"),
        ])
    func unreadable(status: Int, body: String) async {
        let failure = await failure(.http(status, body))
        guard case .unreadableAnswer(let got, let reason) = failure else {
            Issue.record("expected unreadableAnswer, got \(String(describing: failure))")
            return
        }
        #expect(got == status)
        #expect(!reason.isEmpty)
    }

    @Test("a missing session token is named in the failure without any value")
    func missingFieldNamed() async {
        let body = """
            <AssumeRoleResponse><AssumeRoleResult>
              <AssumedRoleUser><Arn>arn:aws:sts::123456789012:assumed-role/a/b</Arn></AssumedRoleUser>
              <Credentials><AccessKeyId>ASIA1</AccessKeyId><SecretAccessKey>role-secret-key-value-0001</SecretAccessKey>
              <Expiration>2026-11-22T19:04:05Z</Expiration></Credentials>
            </AssumeRoleResult></AssumeRoleResponse>
            """
        let failure = await failure(.http(200, body))
        #expect(failure == .unreadableAnswer(status: 200, reason: "the AssumeRole answer has no Credentials/SessionToken"))
    }

    @Test("an ErrorResponse: type, code, message (unescaped), request id, status")
    func readsErrorResponse() async {
        let failure = await failure(AssumeRoleFakeSTS.error(
            403, "AccessDenied", "User: arn:aws:iam::123456789012:user/bob is not authorized &amp; that&apos;s that"))
        #expect(failure == .service(STSServiceError(
            status: 403, type: "Sender", code: "AccessDenied",
            message: "User: arn:aws:iam::123456789012:user/bob is not authorized & that's that",
            requestId: "4d1b2f3a-0000-4000-8000-000000000001")))
    }

    @Test(
        "EC2-style error bodies (moto's) are read too, even with whitespace before the XML declaration",
        arguments: [
            "\n<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<ErrorResponse><Errors><Error><Code>AccessDenied</Code><Message>User: arn:aws:iam::123456789012:user/limited is not authorized to perform: sts:AssumeRole</Message><Type>Sender</Type></Error></Errors></ErrorResponse>",
            "<Response><Errors><Error><Code>AccessDenied</Code><Message>User: arn:aws:iam::123456789012:user/limited is not authorized to perform: sts:AssumeRole</Message><Type>Sender</Type></Error></Errors><RequestID>r</RequestID></Response>",
        ])
    func readsEC2StyleErrors(body: String) async {
        let failure = await failure(.http(403, body))
        guard case .service(let error) = failure else {
            Issue.record("expected a service error, got \(String(describing: failure))")
            return
        }
        #expect(error.code == "AccessDenied")
        #expect(error.type == "Sender")
        #expect(error.message == "User: arn:aws:iam::123456789012:user/limited is not authorized to perform: sts:AssumeRole")
    }

    @Test("transport errors become unreachable")
    func transportError() async {
        struct Boom: Error, CustomStringConvertible { var description: String { "connection reset by peer" } }
        let failure = await failure(.fail(Boom()))
        #expect(failure == .unreachable("connection reset by peer"))
    }
}
