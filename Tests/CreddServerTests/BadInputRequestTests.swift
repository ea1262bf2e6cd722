// Hostile request lines, Host headers and token guessing against the router, the access check and the guess limiter.
import CreddCore
import CreddServer
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import Testing

@Suite struct BadInputRouterTests {
    /// Targets a hostile or confused client sends, and what credd answers (status, stable code).
    @Test(arguments: [
        ("/v1/credentials/%2e%2e", 404, "UnknownSet"),
        ("/v1/credentials/%2E%2E%2Fetc%2Fpasswd", 404, "UnknownSet"),
        ("/v1/credentials/..%2f..%2fetc%2fpasswd", 404, "UnknownSet"),
        ("/v1/credentials/./default", 404, "UnknownSet"),
        ("/v1/credentials/default/", 404, "UnknownSet"),
        ("/v1/credentials//default", 404, "UnknownSet"),
        ("/v1/credentials/%64efault", 404, "UnknownSet"),
        ("/v1/credentials/%ff%fe", 404, "UnknownSet"),
        ("/v1/credentials/%", 404, "UnknownSet"),
        ("/v1/credentials/\u{fffd}\u{fffd}", 404, "UnknownSet"),
        ("/v1/credentials/\u{0}", 404, "UnknownSet"),
        ("/v1/credentials/" + String(repeating: "a", count: 65), 404, "UnknownSet"),
        ("/v1/credentials/a b", 404, "UnknownSet"),
        ("/v1//credentials", 404, "NotFound"),
        ("/V1/CREDENTIALS", 404, "NotFound"),
        ("/v1/credentials;x", 404, "NotFound"),
        ("http://127.0.0.1/v1/credentials", 400, "BadTarget"),
        ("//evil.example.com/v1/credentials", 404, "NotFound"),
        ("127.0.0.1:9702", 400, "BadTarget"),
        ("*", 400, "BadTarget"),
        ("", 400, "BadTarget"),
    ])
    func hostileTargets(uri: String, status: Int, code: String) {
        switch Router.route(method: .GET, uri: uri) {
        case .success(let route): Issue.record("\(uri.debugDescription) was routed to \(route)")
        case .failure(let e):
            #expect(Int(e.status.code) == status, "\(uri.debugDescription)")
            #expect(e.code == code, "\(uri.debugDescription)")
            #expect(e.message.hasSuffix("."), "an error is a sentence")
        }
    }

    @Test(arguments: [HTTPMethod.POST, .PUT, .DELETE, .PATCH, .OPTIONS, .TRACE, .CONNECT, .RAW(value: "BREW")])
    func everyOtherMethodIs405(method: HTTPMethod) {
        for uri in ["/v1/credentials", "/v1/credentials/deploy", "/healthz", "/v1/status"] {
            guard case .failure(let e) = Router.route(method: method, uri: uri) else {
                Issue.record("\(method) \(uri) was routed")
                continue
            }
            #expect(e.status == .methodNotAllowed)
            #expect(e.code == "MethodNotAllowed")
        }
    }

    @Test func errorAnswersCarryAllowRetryAfterAndClose() {
        let e405 = String(buffer: ResponseBytes.error(HTTPError(.methodNotAllowed, "MethodNotAllowed", "only GET."), keepAlive: true))
        #expect(e405.contains("Allow: GET, HEAD\r\n"))
        #expect(!e405.contains("Connection: close"))
        let limited = HTTPError(AccessDenied(reason: .tooManyWrongTokens, message: "slow down.", retryAfter: 3))
        #expect(limited.status == .tooManyRequests && limited.closeConnection && limited.retryAfter == 3)
        let text = String(buffer: ResponseBytes.error(limited, keepAlive: true))
        #expect(text.hasPrefix("HTTP/1.1 429 Too Many Requests\r\n"))
        #expect(text.contains("Retry-After: 3\r\n") && text.contains("Connection: close\r\n"))
        #expect(HTTPError(AccessDenied(reason: .wrongToken, message: "no.")).closeConnection, "every guess costs a connection")
        #expect(!HTTPError(AccessDenied(reason: .missingToken, message: "no.")).closeConnection)
    }

    @Test(arguments: [
        "127.0.0.1.", "127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1:", "127.0.0.01x", "127.0.0.256", "127.0.0",
        "[::1", "[::1]x", "[::ffff:127.0.0.1]", "[0:0:0:0:0:0:0:1]:80", "::1", "localhost:0x50", "localhost:80:80",
        "127.0.0.1 ", " 127.0.0.1", "127.0.0.1\u{0}", "evil.localhost", "localhost.evil.example.com", "%6cocalhost",
    ])
    func confusingHostsAreNotLoopback(host: String) {
        #expect(!AccessPolicy.isLoopbackHost(host), "\(host.debugDescription)")
    }
}

@Suite struct BadInputTokenGuessingTests {
    final class Ticks: Sendable {
        private let value = NIOLockedValueBox(1000.0)
        var seconds: Double { value.withLockedValue { $0 } }
        func advance(_ s: Double) { value.withLockedValue { $0 += s } }
    }

    @Test func aPeerGetsItsBurstThen429UntilItSlowsDown() {
        let ticks = Ticks()
        let limiter = TokenGuessLimiter(burst: 5, refillPerSecond: 1, now: { ticks.seconds })
        for _ in 0..<5 { #expect(limiter.recordWrongToken(peer: "127.0.0.1").allowed) }
        let first = limiter.recordWrongToken(peer: "127.0.0.1")
        #expect(!first.allowed && first.lockoutStarted && first.retryAfter == 1)
        let second = limiter.recordWrongToken(peer: "127.0.0.1")
        #expect(!second.allowed && !second.lockoutStarted, "one log line per lockout, not one per guess")
        // Another address has its own budget.
        #expect(limiter.recordWrongToken(peer: "127.0.0.2").allowed)
        ticks.advance(1.0)
        #expect(limiter.recordWrongToken(peer: "127.0.0.1").allowed, "one guess regained per second")
        #expect(!limiter.recordWrongToken(peer: "127.0.0.1").allowed)
        ticks.advance(3600)
        for _ in 0..<5 { #expect(limiter.recordWrongToken(peer: "127.0.0.1").allowed, "the bucket refills to the burst, not beyond") }
        #expect(!limiter.recordWrongToken(peer: "127.0.0.1").allowed)
    }

    @Test func aCorrectTokenIsNeverLimited() {
        let ticks = Ticks()
        let policy = AccessPolicy(
            token: Array("right-token".utf8), tokenFile: "/run/credd/token", access: AccessConfig(allowUids: [], allowGids: []),
            sets: [], setTokens: [:], guesses: TokenGuessLimiter(burst: 3, refillPerSecond: 0.01, now: { ticks.seconds }))
        let peer = Peer.tcp(remote: "127.0.0.1:40000")
        var reasons: [AccessDenied.Reason] = []
        for i in 0..<10 { reasons.append(policy.check(set: "default", peer: peer, authorization: "guess-\(i)")?.reason ?? .origin) }
        #expect(reasons == Array(repeating: .wrongToken, count: 3) + Array(repeating: .tooManyWrongTokens, count: 7))
        #expect(policy.check(set: "default", peer: peer, authorization: "right-token") == nil)
        #expect(policy.check(set: "default", peer: Peer.tcp(remote: "127.0.0.1:40001"), authorization: "right-token") == nil)
        let refused = policy.check(set: "default", peer: peer, authorization: "guess-11")
        #expect(refused?.retryAfter ?? 0 >= 1)
        #expect(refused?.message.contains("guess-11") == false && refused?.message.contains("right-token") == false)
        // A missing token is a misconfigured client, not a guess.
        #expect(policy.check(set: "default", peer: peer, authorization: nil)?.reason == .missingToken)
    }

    @Test func aFloodOfAddressesCannotGrowTheTable() {
        let limiter = TokenGuessLimiter(burst: 1, refillPerSecond: 1000, now: { 0 })
        for i in 0..<20_000 { _ = limiter.recordWrongToken(peer: "10.\(i / 65536).\(i / 256 % 256).\(i % 256)") }
        #expect(limiter.recordWrongToken(peer: "127.0.0.1").allowed)
    }

    @Test(arguments: [("127.0.0.1:5000", "127.0.0.1"), ("::1:5000", "::1"), ("?", "?"), ("127.0.0.1", "127.0.0.1")])
    func peerAddress(remote: String, address: String) {
        #expect(TokenGuessLimiter.address(ofRemote: remote) == address)
    }
}
