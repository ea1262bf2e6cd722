import CreddCore
import CreddServer
import Foundation
import NIOCore
import NIOHTTP1
import Testing

@Suite struct AccessPolicyTests {
    let token = Array("tok-abc".utf8)
    func policy(sets: [SetConfig] = [], setTokens: [String: [UInt8]] = [:]) -> AccessPolicy {
        AccessPolicy(token: token, tokenFile: "/run/credd/token", access: AccessConfig(allowUids: [1000], allowGids: [50]), sets: sets, setTokens: setTokens)
    }

    @Test func tcpNeedsTheToken() {
        let p = policy()
        #expect(p.check(set: "default", peer: .tcp(remote: "127.0.0.1:1"), authorization: nil)?.reason == .missingToken)
        #expect(p.check(set: "default", peer: .tcp(remote: "127.0.0.1:1"), authorization: "")?.reason == .missingToken)
        #expect(p.check(set: "default", peer: .tcp(remote: "127.0.0.1:1"), authorization: "tok-abd")?.reason == .wrongToken)
        #expect(p.check(set: "default", peer: .tcp(remote: "127.0.0.1:1"), authorization: "Bearer tok-abc")?.reason == .wrongToken)
        #expect(p.check(set: "default", peer: .tcp(remote: "127.0.0.1:1"), authorization: "tok-abc") == nil)
        let denied = p.check(set: "default", peer: .tcp(remote: "x"), authorization: "wrong")
        #expect(denied?.message.contains("/run/credd/token") == true)
        #expect(denied?.message.contains("tok-abc") == false)
    }

    @Test func unixCallersByUidAndGroup() {
        let p = policy()
        #expect(p.check(set: "default", peer: .unix(uid: 1000, gid: 1000, pid: 1, groups: []), authorization: nil) == nil)
        #expect(p.check(set: "default", peer: .unix(uid: 0, gid: 0, pid: 1, groups: []), authorization: nil) == nil)
        #expect(p.check(set: "default", peer: .unix(uid: 1001, gid: 50, pid: 1, groups: []), authorization: nil) == nil)
        #expect(p.check(set: "default", peer: .unix(uid: 1001, gid: 1001, pid: 1, groups: [50]), authorization: nil) == nil)
        let denied = p.check(set: "default", peer: .unix(uid: 1001, gid: 1001, pid: 1, groups: [7]), authorization: nil)
        #expect(denied?.reason == .callerNotAllowed)
        #expect(denied?.message.contains("uid 1001") == true)
        // The Unix socket needs no token even if one is sent.
        #expect(p.check(set: "default", peer: .unix(uid: 1000, gid: 1, pid: 1, groups: []), authorization: "junk") == nil)
    }

    @Test func perSetRulesReplaceTheGlobalOnes() {
        let deploy = SetConfig(name: "deploy", source: .imds, access: SetAccessConfig(allowUids: [2000], allowGids: nil, tokenFile: "/run/credd/deploy.token"))
        let p = policy(sets: [deploy], setTokens: ["deploy": Array("deploy-tok".utf8)])
        #expect(p.check(set: "deploy", peer: .unix(uid: 1000, gid: 1000, pid: 1, groups: []), authorization: nil)?.reason == .callerNotAllowed)
        #expect(p.check(set: "deploy", peer: .unix(uid: 2000, gid: 2000, pid: 1, groups: []), authorization: nil) == nil)
        #expect(p.check(set: "deploy", peer: .tcp(remote: "x"), authorization: "tok-abc")?.reason == .wrongToken)
        #expect(p.check(set: "deploy", peer: .tcp(remote: "x"), authorization: "deploy-tok") == nil)
        #expect(p.check(set: "default", peer: .tcp(remote: "x"), authorization: "deploy-tok")?.reason == .wrongToken)
    }

    @Test(arguments: [
        ("127.0.0.1", true), ("127.0.0.1:9702", true), ("localhost", true), ("LOCALHOST:9702", true), ("[::1]", true),
        ("[::1]:9702", true), ("127.8.9.10:1", true), ("evil.example.com", false), ("evil.example.com:9702", false),
        ("169.254.170.2", false), ("127.0.0.1.nip.io", false), ("[::2]:1", false), ("127.0.0.1:x", false), ("", false),
        ("localhost.", false), ("0.0.0.0", false),
    ])
    func hostMustBeLoopback(host: String, ok: Bool) {
        #expect(AccessPolicy.isLoopbackHost(host) == ok)
    }
}

@Suite struct RouterTests {
    @Test(arguments: [
        ("/v1/credentials", Route.credentials(set: "default")),
        ("/v1/credentials/", Route.credentials(set: "default")),
        ("/v1/credentials/deploy", Route.credentials(set: "deploy")),
        ("/v1/credentials/a.b-c_d", Route.credentials(set: "a.b-c_d")),
        ("/v1/credentials?x=1", Route.credentials(set: "default")),
        ("/healthz", Route.health),
        ("/v1/status", Route.status),
        ("/metrics", Route.metrics),
    ])
    func routes(uri: String, route: Route) {
        guard case .success(let r) = Router.route(method: .GET, uri: uri) else { Issue.record("no route for \(uri)"); return }
        #expect(r == route)
    }

    @Test(arguments: [
        ("/v1/credentials/..", 404), ("/v1/credentials/../etc/passwd", 404), ("/v1/credentials/a%2Fb", 404),
        ("/v1/credentials/%C3%A9", 404), ("/v1/credentials/a/b", 404), ("/etc/passwd", 404), ("/", 404),
        ("http://evil/v1/credentials", 400), ("*", 400), ("/v1/credentials/\u{e9}", 404),
    ])
    func badTargets(uri: String, status: Int) {
        guard case .failure(let e) = Router.route(method: .GET, uri: uri) else { Issue.record("routed \(uri)"); return }
        #expect(Int(e.status.code) == status)
    }

    @Test func wrongMethods() {
        for m in [HTTPMethod.POST, .PUT, .DELETE, .PATCH, .OPTIONS] {
            guard case .failure(let e) = Router.route(method: m, uri: "/v1/credentials") else { Issue.record("\(m)"); continue }
            #expect(e.status == .methodNotAllowed)
        }
    }

    @Test func errorBodiesAreJSONWithCodeAndMessage() throws {
        let buffer = ResponseBytes.error(HTTPError(.serviceUnavailable, "IMDSUnreachable", "IMDS unreachable at http://169.254.169.254.", retryAfter: 1), keepAlive: true)
        let text = String(buffer: buffer)
        #expect(text.hasPrefix("HTTP/1.1 503 Service Unavailable\r\n"))
        #expect(text.contains("Retry-After: 1\r\n"))
        let body = try #require(text.components(separatedBy: "\r\n\r\n").last)
        let json = try #require(try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: String])
        #expect(json == ["code": "IMDSUnreachable", "message": "IMDS unreachable at http://169.254.169.254."])
    }
}
