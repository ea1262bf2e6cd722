// AssumeRoleSource end to end over a fake STS transport: success, duration cap, expired source, failures.
import CreddCore
import Foundation
import Logging
import Testing

// MARK: - Fakes shared by the AssumeRole*Tests files

/// A scripted STS: answers in order, records every request it got.
final class AssumeRoleFakeSTS: @unchecked Sendable {
    enum Answer {
        case http(Int, String)
        case fail(any Error)
    }

    private let lock = NSLock()
    private var answers: [Answer]
    private var received: [STSHTTPRequest] = []

    init(_ answers: [Answer]) { self.answers = answers }

    var requests: [STSHTTPRequest] { lock.withLock { received } }

    var transport: STSTransport {
        { request, _ in
            let answer: Answer = self.lock.withLock {
                self.received.append(request)
                return self.answers.isEmpty ? .http(500, "no scripted answer left") : self.answers.removeFirst()
            }
            switch answer {
            case .http(let status, let body): return (status, Array(body.utf8))
            case .fail(let error): throw error
            }
        }
    }

    static func success(
        arn: String = "arn:aws:sts::123456789012:assumed-role/deploy/credd-test", expiration: String = "2026-11-22T19:04:05Z",
        key: String = "ASIAROLEKEYEXAMPLE01", secret: String = "role-secret-key-value-0001",
        token: String = "role-session-token-value-0001"
    ) -> Answer {
        .http(200, """
            <AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
              <AssumeRoleResult>
                <SourceIdentity>alice</SourceIdentity>
                <AssumedRoleUser>
                  <Arn>\(arn)</Arn>
                  <AssumedRoleId>AROA3XFRBF535EXAMPLE:credd-test</AssumedRoleId>
                </AssumedRoleUser>
                <Credentials>
                  <AccessKeyId>\(key)</AccessKeyId>
                  <SecretAccessKey>\(secret)</SecretAccessKey>
                  <SessionToken>\(token)</SessionToken>
                  <Expiration>\(expiration)</Expiration>
                </Credentials>
                <PackedPolicySize>6</PackedPolicySize>
              </AssumeRoleResult>
              <ResponseMetadata>
                <RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId>
              </ResponseMetadata>
            </AssumeRoleResponse>
            """)
    }

    static func error(_ status: Int, _ code: String, _ message: String, type: String = "Sender") -> Answer {
        .http(status, """
            <ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
              <Error>
                <Type>\(type)</Type>
                <Code>\(code)</Code>
                <Message>\(message)</Message>
              </Error>
              <RequestId>4d1b2f3a-0000-4000-8000-000000000001</RequestId>
            </ErrorResponse>
            """)
    }
}

/// Keeps every log event (swift-log's in-memory pattern; never `LoggingSystem.bootstrap`).
final class AssumeRoleLogRecorder: @unchecked Sendable {
    struct Entry {
        var level: Logger.Level
        var message: String
        var metadata: Logger.Metadata
    }

    private let lock = NSLock()
    private var stored: [Entry] = []

    var entries: [Entry] { lock.withLock { stored } }
    func append(_ entry: Entry) { lock.withLock { stored.append(entry) } }

    var logger: Logger {
        var logger = Logger(label: "test") { _ in Handler(recorder: self) }
        logger.logLevel = .trace
        return logger
    }

    /// Everything logged, as one text to scan for secrets.
    var text: String { entries.map { "\($0.level) \($0.message) \($0.metadata)" }.joined(separator: "\n") }

    struct Handler: LogHandler {
        let recorder: AssumeRoleLogRecorder
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            recorder.append(Entry(
                level: event.level, message: "\(event.message)",
                metadata: metadata.merging(event.metadata ?? [:]) { _, new in new }))
        }
    }
}

/// Source credentials handed to the source under test, counting how often each closure ran.
final class AssumeRoleSourceSet: @unchecked Sendable {
    private let lock = NSLock()
    private var current: Credentials
    private var refreshed: [Credentials]
    private(set) var currentCalls = 0
    private(set) var refreshCalls = 0
    var failure: (any Error)?

    init(current: Credentials, refreshed: [Credentials] = []) {
        self.current = current
        self.refreshed = refreshed
    }

    var currentCredentials: @Sendable () async throws -> Credentials {
        {
            try self.lock.withLock {
                self.currentCalls += 1
                if let failure = self.failure { throw failure }
                return self.current
            }
        }
    }

    var refresh: @Sendable () async throws -> Credentials {
        {
            try self.lock.withLock {
                self.refreshCalls += 1
                if let failure = self.failure { throw failure }
                if !self.refreshed.isEmpty { self.current = self.refreshed.removeFirst() }
                return self.current
            }
        }
    }

    var counts: (current: Int, refresh: Int) { lock.withLock { (currentCalls, refreshCalls) } }
}

enum AssumeRoleFixtures {
    static let now = Date(timeIntervalSince1970: 1_795_370_645)  // 2026-11-22T18:04:05Z
    static let endpoint = STSEndpoint.regional(region: "eu-west-1")
    static let roleArn = "arn:aws:iam::123456789012:role/deploy"

    static func sourceCredentials(
        key: String = "ASIASOURCEKEYEX1234", secret: String = "source-secret-key-0001",
        token: String = "source-session-token-0001", expiresIn: TimeInterval = 6 * 3600, role: Bool = false
    ) -> Credentials {
        Credentials(
            accessKeyId: key, secretAccessKey: Secret(secret), sessionToken: Secret(token),
            expiration: now.addingTimeInterval(expiresIn), accountId: "123456789012", isRoleCredentials: role)
    }

    static let secrets = [
        "source-secret-key-0001", "source-session-token-0001", "source-secret-key-0002", "source-session-token-0002",
        "role-secret-key-value-0001", "role-session-token-value-0001",
    ]

    static func source(
        _ sts: AssumeRoleFakeSTS, _ set: AssumeRoleSourceSet, duration: Duration = .seconds(3600)
    ) -> AssumeRoleSource {
        let client = STSClient(endpoint: endpoint, now: { now }, transport: sts.transport)
        return AssumeRoleSource(
            setName: "deploy", sourceSetName: "default",
            parameters: AssumeRoleParameters(roleArn: roleArn, roleSessionName: "credd-test", duration: duration),
            client: client, now: { now },
            currentSourceCredentials: set.currentCredentials, refreshSource: set.refresh)
    }

    static func body(_ request: STSHTTPRequest) -> String { String(decoding: request.body, as: UTF8.self) }

    static func header(_ request: STSHTTPRequest, _ name: String) -> String? {
        request.headers.first { $0.name.lowercased() == name.lowercased() }?.value
    }
}

// MARK: - Tests

@Suite("AssumeRole source")
struct AssumeRoleSourceTests {
    typealias F = AssumeRoleFixtures

    @Test("role credentials come back with the account from the ARN, marked as role credentials")
    func success() async throws {
        let sts = AssumeRoleFakeSTS([AssumeRoleFakeSTS.success()])
        let set = AssumeRoleSourceSet(current: F.sourceCredentials())
        let log = AssumeRoleLogRecorder()
        let creds = try await F.source(sts, set).fetch(logger: log.logger)

        #expect(creds.accessKeyId == "ASIAROLEKEYEXAMPLE01")
        #expect(creds.secretAccessKey.exposed == "role-secret-key-value-0001")
        #expect(creds.sessionToken.exposed == "role-session-token-value-0001")
        #expect(creds.expiration == RFC3339.parse("2026-11-22T19:04:05Z"))
        #expect(creds.accountId == "123456789012")
        #expect(creds.isRoleCredentials)

        let request = try #require(sts.requests.first)
        #expect(request.url.absoluteString == "https://sts.eu-west-1.amazonaws.com/")
        #expect(F.body(request).contains("&DurationSeconds=3600"))
        #expect(F.body(request).hasPrefix("Action=AssumeRole&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fdeploy&RoleSessionName=credd-test"))
        #expect(F.header(request, "X-Amz-Security-Token") == "source-session-token-0001")
        #expect(F.header(request, "Host") == "sts.eu-west-1.amazonaws.com")
        #expect(F.header(request, "Authorization")?.hasPrefix(
            "AWS4-HMAC-SHA256 Credential=ASIASOURCEKEYEX1234/20261122/eu-west-1/sts/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature=") == true)
        #expect(set.counts.refresh == 0)
        for secret in F.secrets { #expect(!log.text.contains(secret)) }
    }

    @Test(
        "duration is capped at 1 hour with a warning only when the source holds role credentials",
        arguments: [
            (Duration.seconds(4 * 3600), true, 3600, true),
            (Duration.seconds(4 * 3600), false, 14_400, false),
            (Duration.seconds(3600), true, 3600, false),
            (Duration.seconds(900), true, 900, false),
        ])
    func durationCap(requested: Duration, sourceIsRole: Bool, sentSeconds: Int, warned: Bool) async throws {
        let sts = AssumeRoleFakeSTS([AssumeRoleFakeSTS.success()])
        let set = AssumeRoleSourceSet(current: F.sourceCredentials(role: sourceIsRole))
        let log = AssumeRoleLogRecorder()
        _ = try await F.source(sts, set, duration: requested).fetch(logger: log.logger)
        let body = F.body(try #require(sts.requests.first))
        #expect(body.contains("&DurationSeconds=\(sentSeconds)&") || body.hasSuffix("&DurationSeconds=\(sentSeconds)"))
        let warnings = log.entries.filter { $0.level == .warning && $0.message.contains("capped at 1 hour") }
        #expect(warnings.count == (warned ? 1 : 0))

        let (duration, capped) = AssumeRoleSource.effectiveDuration(requested: requested, sourceIsRoleCredentials: sourceIsRole)
        #expect(duration == .seconds(sentSeconds))
        #expect(capped == warned)
    }

    @Test("ExpiredToken: the source is refreshed once and the call retried with the fresh credentials")
    func expiredTokenRetriesOnce() async throws {
        let sts = AssumeRoleFakeSTS([
            AssumeRoleFakeSTS.error(400, "ExpiredToken", "The security token included in the request is expired"),
            AssumeRoleFakeSTS.success(),
        ])
        let fresh = F.sourceCredentials(key: "ASIASOURCEKEYEX5678", secret: "source-secret-key-0002", token: "source-session-token-0002")
        let set = AssumeRoleSourceSet(current: F.sourceCredentials(), refreshed: [fresh])
        let creds = try await F.source(sts, set).fetch(logger: AssumeRoleLogRecorder().logger)

        #expect(creds.accessKeyId == "ASIAROLEKEYEXAMPLE01")
        #expect(set.counts.refresh == 1)
        #expect(sts.requests.count == 2)
        #expect(F.header(sts.requests[1], "X-Amz-Security-Token") == "source-session-token-0002")
        #expect(F.header(sts.requests[1], "Authorization")?.contains("Credential=ASIASOURCEKEYEX5678/") == true)
    }

    @Test("ExpiredToken twice: SourceCredentialsExpired after exactly one refresh")
    func expiredTokenTwice() async throws {
        let expired = AssumeRoleFakeSTS.error(400, "ExpiredToken", "The security token included in the request is expired")
        let sts = AssumeRoleFakeSTS([expired, expired, AssumeRoleFakeSTS.success()])
        let set = AssumeRoleSourceSet(current: F.sourceCredentials())
        let error = await #expect(throws: SourceError.self) {
            try await F.source(sts, set).fetch(logger: AssumeRoleLogRecorder().logger)
        }
        #expect(error?.code == "SourceCredentialsExpired")
        #expect(error?.disposition == .transient)
        #expect(error?.message.contains("set default") == true)
        #expect(set.counts.refresh == 1)
        #expect(sts.requests.count == 2)
    }

    @Test("source credentials already expired by the clock are refreshed before the call")
    func expiredByClock() async throws {
        let sts = AssumeRoleFakeSTS([AssumeRoleFakeSTS.success()])
        let fresh = F.sourceCredentials(key: "ASIASOURCEKEYEX5678", secret: "source-secret-key-0002", token: "source-session-token-0002")
        let set = AssumeRoleSourceSet(current: F.sourceCredentials(expiresIn: -1), refreshed: [fresh])
        _ = try await F.source(sts, set).fetch(logger: AssumeRoleLogRecorder().logger)
        #expect(set.counts.refresh == 1)
        #expect(F.header(try #require(sts.requests.first), "X-Amz-Security-Token") == "source-session-token-0002")
    }

    @Test("a failing source set becomes SourceUnavailable with the source's own disposition", arguments: [
        SourceError.Disposition.transient, .needsAction,
    ])
    func sourceFails(disposition: SourceError.Disposition) async throws {
        let sts = AssumeRoleFakeSTS([AssumeRoleFakeSTS.success()])
        let set = AssumeRoleSourceSet(current: F.sourceCredentials())
        set.failure = SourceError(code: "IMDSUnreachable", message: "IMDS at http://127.0.0.1:1 did not answer.", disposition: disposition)
        let error = await #expect(throws: SourceError.self) {
            try await F.source(sts, set).fetch(logger: AssumeRoleLogRecorder().logger)
        }
        #expect(error?.code == "SourceUnavailable")
        #expect(error?.disposition == disposition)
        #expect(error?.message.contains("IMDSUnreachable") == true)
        #expect(error?.message.contains("set default") == true)
        #expect(sts.requests.isEmpty)
    }

    @Test("STS failures surface as SourceErrors (AccessDenied names role and caller)")
    func accessDenied() async throws {
        let sts = AssumeRoleFakeSTS([
            AssumeRoleFakeSTS.error(403, "AccessDenied", "User: arn:aws:sts::123456789012:assumed-role/web/i-0abc is not authorized to perform: sts:AssumeRole on resource: arn:aws:iam::123456789012:role/deploy"),
        ])
        let set = AssumeRoleSourceSet(current: F.sourceCredentials())
        let error = await #expect(throws: SourceError.self) {
            try await F.source(sts, set).fetch(logger: AssumeRoleLogRecorder().logger)
        }
        #expect(error?.code == "AccessDenied")
        #expect(error?.disposition == .needsAction)
        #expect(error?.message.contains(F.roleArn) == true)
        #expect(error?.message.contains("arn:aws:sts::123456789012:assumed-role/web/i-0abc") == true)
        #expect(set.counts.refresh == 0)
    }

    @Test("no answer from STS is transient: STSUnreachable")
    func unreachable() async throws {
        struct Refused: Error, CustomStringConvertible { var description: String { "connection refused" } }
        let sts = AssumeRoleFakeSTS([.fail(Refused())])
        let set = AssumeRoleSourceSet(current: F.sourceCredentials())
        let error = await #expect(throws: SourceError.self) {
            try await F.source(sts, set).fetch(logger: AssumeRoleLogRecorder().logger)
        }
        #expect(error?.code == "STSUnreachable")
        #expect(error?.disposition == .transient)
        #expect(error?.message.contains("https://sts.eu-west-1.amazonaws.com") == true)
    }

    @Test("kind, refresh traits and a summary without secrets")
    func describesItself() {
        let source = F.source(AssumeRoleFakeSTS([]), AssumeRoleSourceSet(current: F.sourceCredentials()))
        #expect(source.kind == "assume-role")
        #expect(source.refreshTraits.renewAtLifetimeFraction == 0.5)
        #expect(source.refreshTraits.refreshBefore == .seconds(20 * 60))
        #expect(source.refreshTraits.staticStability == false)
        #expect(source.summary.contains(F.roleArn))
        #expect(source.summary.contains("set default"))
        #expect(source.summary.contains("https://sts.eu-west-1.amazonaws.com"))
    }
}
