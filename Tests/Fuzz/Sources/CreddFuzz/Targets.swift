// The fuzz targets: every reader of untrusted bytes in credd, one function each, chosen by CREDD_FUZZ_TARGET.
@testable import CreddCore
@testable import CreddServer
import Foundation
import Logging
import NIOCore
import NIOEmbedded
import NIOHTTP1

/// A target: takes arbitrary bytes, must never crash, hang or leak (ASan), whatever they are.
typealias FuzzTarget = ([UInt8]) -> Void

let targets: [String: FuzzTarget] = [
    "config": fuzzConfig,
    "imds": fuzzIMDS,
    "login": fuzzLoginCache,
    "sts": fuzzSTS,
    "router": fuzzRouterAndAccess,
    "http": fuzzHTTPRequests,
]

/// credd.yaml as `credd serve` and `credd config check` read it.
func fuzzConfig(_ bytes: [UInt8]) {
    guard let text = String(bytes: bytes, encoding: .utf8) else { return }
    let env = RuntimeEnvironment(uid: 1000, environment: ["HOME": "/nonexistent-fuzz-home"])
    if let config = try? CreddConfig.parse(text, file: "/fuzz/credd.yaml", environment: env) {
        _ = config.warnings(environment: env)
        for set in config.sets { _ = config.chain(of: set.name) }
    }
}

/// IMDS answers: the credentials document, the role listing, the identity document.
func fuzzIMDS(_ bytes: [UInt8]) {
    if let c = try? IMDSParsing.credentials(bytes, where: "http://127.0.0.1:1/latest/meta-data/iam/security-credentials/r") {
        _ = ContainerCredentialsDocument.encode(c, expiration: c.expiration)
        _ = "\(c)"
    }
    _ = IMDSParsing.roleName(bytes)
    _ = IMDSParsing.accountId(bytes)
}

/// The `aws login` cache file, its rewrite after a refresh, and the AWS config file that locates it.
func fuzzLoginCache(_ bytes: [UInt8]) {
    let data = Data(bytes)
    if let doc = try? LoginCacheDocument(data: data, path: "/fuzz/cache.json", profile: "default") {
        let grant = SignInGrant(
            accessKeyId: "ASIAFUZZFUZZFUZZFUZZ", secretAccessKey: Secret("fuzz-secret"), sessionToken: Secret("fuzz-token"),
            expiresIn: 900, refreshToken: Secret("fuzz-refresh"))
        if let rewritten = try? LoginCacheDocument.refreshed(base: doc.original, grant: grant, now: Date(timeIntervalSince1970: 1_800_000_000)) {
            // What credd writes must read back.
            guard (try? LoginCacheDocument(data: rewritten, path: "/fuzz/cache.json", profile: "default")) != nil else {
                fatalError("a cache file credd rewrote does not parse again")
            }
        }
    }
    if let text = String(bytes: bytes, encoding: .utf8) {
        _ = try? AWSConfigProfiles.parse(text, file: "/fuzz/config")
    }
}

/// STS answers: AssumeRoleResponse and ErrorResponse XML.
func fuzzSTS(_ bytes: [UInt8]) {
    _ = try? STSResponseParser.assumeRoleResult(from: bytes)
    _ = STSResponseParser.serviceError(status: 400, body: bytes)
    if let text = String(bytes: bytes, encoding: .utf8) { _ = STSResponseParser.accountId(fromARN: text) }
}

let fuzzPolicy = AccessPolicy(
    token: Array("fuzz-token-0123456789abcdefghijklmnopqrstu".utf8), tokenFile: "/fuzz/token",
    access: AccessConfig(allowUids: [1000], allowGids: [100]),
    sets: [SetConfig(name: "deploy", source: .imds, access: SetAccessConfig(allowUids: [2000], allowGids: nil, tokenFile: "/fuzz/deploy.token"))],
    setTokens: ["deploy": Array("deploy-token".utf8)])

/// The router, the Host check and the access check on one request: method, target, Host, Authorization and
/// the peer are cut from the input at NUL bytes.
func fuzzRouterAndAccess(_ bytes: [UInt8]) {
    let parts = bytes.split(separator: 0, maxSplits: 4, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
    func part(_ i: Int) -> String { i < parts.count ? parts[i] : "" }
    let method = HTTPMethod(rawValue: part(0))
    let uri = part(1)
    _ = AccessPolicy.isLoopbackHost(part(2))
    let peer: Peer = (bytes.first ?? 0) & 1 == 0
        ? .tcp(remote: part(4))
        : .unix(uid: UInt32(bytes.count), gid: UInt32(bytes.first ?? 0), pid: 1, groups: bytes.prefix(8).map(UInt32.init))
    switch Router.route(method: method, uri: uri) {
    case .success(.credentials(let set)):
        if let denied = fuzzPolicy.check(set: set, peer: peer, authorization: parts.count > 3 ? part(3) : nil) {
            _ = ResponseBytes.error(HTTPError(denied), keepAlive: true)
        }
    case .success:
        _ = fuzzPolicy.check(set: nil, peer: peer, authorization: part(3))
    case .failure(let e):
        _ = ResponseBytes.error(e, keepAlive: false)
    }
}

/// A source that never answers: the fuzzed daemon serves adopted credentials only.
struct IdleSource: CredentialSource {
    let kind = "imds"
    let summary = "fuzz"
    let refreshTraits = RefreshTraits()
    func fetch(logger: Logger) async throws -> Credentials { throw SourceError(code: "Fuzz", message: "no upstream.") }
}

/// The serving state of a daemon with one set holding credentials, built once.
let fuzzState: ServingStateBox = {
    let logger = Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() })
    let set = CredentialSet(name: "default", source: IdleSource(), logger: logger)
    let credentials = Credentials(
        accessKeyId: "ASIAFUZZFUZZFUZZFUZZ", secretAccessKey: Secret("fuzz-secret"), sessionToken: Secret("fuzz-token"),
        expiration: Date().addingTimeInterval(6 * 3600), accountId: "123456789012")
    let done = DispatchSemaphore(value: 0)
    Task {
        await set.adopt(credentials, servedExpiration: credentials.expiration)
        done.signal()
    }
    done.wait()
    let sets = ["default": ServedSet(name: "default", view: set.view)]
    return ServingStateBox(ServingState(sets: sets, access: fuzzPolicy, policy: .standard, server: ServerConfig(), auditEnabled: false))
}()

/// Raw bytes through the listener's real pipeline (HTTP decoder, request handler) on an embedded channel,
/// as a TCP peer (even first byte) or a Unix-socket peer.
func fuzzHTTPRequests(_ bytes: [UInt8]) {
    let transport: ListenerContext.Transport = (bytes.first ?? 0) & 1 == 0 ? .tcp : .unix
    let logger = Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() })
    let listener = ListenerContext(
        transport: transport, state: fuzzState, audit: AuditLog(logger: logger),
        statusProvider: { StatusDocument(pid: 1, startedAt: Date(timeIntervalSince1970: 0), config: "fuzz", sets: []) },
        connections: ConnectionCounter(limit: 10), logger: logger)
    let channel = EmbeddedChannel()
    let activity = ConnectionActivity(headerTimeout: .seconds(10), idleTimeout: .seconds(300))
    do {
        try CredentialsListener.addHandlers(to: channel.pipeline.syncOperations, listener: listener, activity: activity)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9702)).wait()
        // Feed in two pieces so partial heads are exercised too.
        let cut = bytes.isEmpty ? 0 : Int(bytes[0]) % (bytes.count + 1)
        for piece in [bytes[..<cut], bytes[cut...]] where !piece.isEmpty {
            try channel.writeInbound(ByteBuffer(bytes: piece))
        }
        while let _ = try channel.readOutbound(as: ByteBuffer.self) {}
    } catch {
        // Refusals surface as errors on an embedded channel; only crashes matter here.
    }
    _ = try? channel.finish()
    // A real event loop runs the connection's timers (header and idle timeouts) when they are due; the
    // embedded one only when told. Run them, or their closures keep the closed connection alive (a cycle
    // LeakSanitizer reports, which a real daemon does not have: its RSS stays flat over 10,000s of connections).
    channel.embeddedEventLoop.advanceTime(by: .hours(1))
}
