// The login cache file: every bad input gives a clear message and is never overwritten; the rewrite and the lock.
import AsyncHTTPClient
import CreddCore
import CreddCrypto
import Foundation
import Logging
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("aws login: cache file")
struct LoginCacheFileTests {
    static let session = "arn:aws:iam::123456789012:user/dev"

    static func validDocument(expiresIn: TimeInterval = 120) -> [String: Any] {
        [
            "accessToken": [
                "accessKeyId": "ASIAEXAMPLEOLD000001",
                "secretAccessKey": "old-secret-key-value-for-tests-000000000",
                "sessionToken": "old-session-token-value-for-tests",
                "accountId": "123456789012",
                "expiresAt": RFC3339.format(Date().addingTimeInterval(expiresIn)),
            ] as [String: Any],
            "tokenType": "aws_sigv4",
            "refreshToken": "old-refresh-token-value-for-tests",
            "idToken": "eyJhbGciOiJub25lIn0.eyJzdWIiOiJkZXYifQ.",
            "clientId": "arn:aws:signin:::devtools/same-device",
            "dpopKey": LoginTestKeys.p256,
        ]
    }

    /// A HOME with a profile `dev` whose cache file holds `content` (nil: no cache file).
    static func home(content: Data?) throws -> (LoginTestHome, cacheFile: String) {
        let home = try LoginTestHome()
        try FileManager.default.createDirectory(atPath: home.path + "/.aws/login/cache", withIntermediateDirectories: true)
        try "[profile dev]\nlogin_session = \(session)\nregion = us-east-1\n"
            .write(toFile: home.path + "/.aws/config", atomically: true, encoding: .utf8)
        let file = home.path + "/.aws/login/cache/" + LoginCacheLocation.cacheFileName(loginSession: session)
        if let content { try content.write(to: URL(fileURLWithPath: file)) }
        return (home, file)
    }

    static func json(_ object: Any) -> Data { try! JSONSerialization.data(withJSONObject: object) }

    static func without(_ path: [String]) -> Data {
        var doc = validDocument()
        if path.count == 1 {
            doc.removeValue(forKey: path[0])
        } else {
            var inner = doc[path[0]] as! [String: Any]
            inner.removeValue(forKey: path[1])
            doc[path[0]] = inner
        }
        return json(doc)
    }

    static func with(_ key: String, _ value: Any, inAccessToken: Bool = false) -> Data {
        var doc = validDocument()
        if inAccessToken {
            var inner = doc["accessToken"] as! [String: Any]
            inner[key] = value
            doc["accessToken"] = inner
        } else {
            doc[key] = value
        }
        return json(doc)
    }

    struct BadInput: Sendable, CustomTestStringConvertible {
        let name: String
        let content: Data?
        let code: String
        let fragment: String
        var testDescription: String { name }
    }

    static let badInputs: [BadInput] = {
        let full = json(validDocument())
        return [
            BadInput(name: "missing", content: nil, code: "LoginRequired", fragment: "there is no aws login cache file at"),
            BadInput(name: "empty", content: Data(), code: "LoginCacheInvalid", fragment: "it is empty"),
            BadInput(name: "whitespace only", content: Data(" \n".utf8), code: "LoginCacheInvalid", fragment: "it is empty"),
            BadInput(name: "corrupt", content: Data("not json at all".utf8), code: "LoginCacheInvalid", fragment: "not valid JSON"),
            BadInput(name: "half-written", content: full.prefix(full.count / 2), code: "LoginCacheInvalid", fragment: "not valid JSON"),
            BadInput(name: "not an object", content: Data("[1,2]".utf8), code: "LoginCacheInvalid", fragment: "not an object"),
            BadInput(name: "wrong key type (P-384)", content: with("dpopKey", LoginTestKeys.p384), code: "LoginCacheInvalid",
                     fragment: "the field dpopKey is not a usable P-256 private key"),
            BadInput(name: "wrong key type (Ed25519)", content: with("dpopKey", LoginTestKeys.ed25519),
                     code: "LoginCacheInvalid", fragment: "the field dpopKey is not a usable P-256 private key"),
            BadInput(name: "key not PEM", content: with("dpopKey", "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"),
                     code: "LoginCacheInvalid", fragment: "the field dpopKey"),
            BadInput(name: "no accessToken", content: without(["accessToken"]), code: "LoginCacheInvalid",
                     fragment: "the field accessToken is missing"),
            BadInput(name: "accessToken not an object", content: with("accessToken", "x"), code: "LoginCacheInvalid",
                     fragment: "the field accessToken is not an object"),
            BadInput(name: "no accessKeyId", content: without(["accessToken", "accessKeyId"]), code: "LoginCacheInvalid",
                     fragment: "the field accessToken.accessKeyId is missing"),
            BadInput(name: "no secretAccessKey", content: without(["accessToken", "secretAccessKey"]),
                     code: "LoginCacheInvalid", fragment: "the field accessToken.secretAccessKey is missing"),
            BadInput(name: "no sessionToken", content: without(["accessToken", "sessionToken"]), code: "LoginCacheInvalid",
                     fragment: "the field accessToken.sessionToken is missing"),
            BadInput(name: "no expiresAt", content: without(["accessToken", "expiresAt"]), code: "LoginCacheInvalid",
                     fragment: "the field accessToken.expiresAt is missing"),
            BadInput(name: "bad expiresAt", content: with("expiresAt", "tomorrow", inAccessToken: true),
                     code: "LoginCacheInvalid", fragment: "the field accessToken.expiresAt is not an RFC 3339 time"),
            BadInput(name: "expiresAt a number", content: with("expiresAt", 12, inAccessToken: true),
                     code: "LoginCacheInvalid", fragment: "the field accessToken.expiresAt is not a string"),
            BadInput(name: "accountId a number", content: with("accountId", 1234, inAccessToken: true),
                     code: "LoginCacheInvalid", fragment: "the field accessToken.accountId"),
            BadInput(name: "no refreshToken", content: without(["refreshToken"]), code: "LoginCacheInvalid",
                     fragment: "the field refreshToken is missing"),
            BadInput(name: "empty refreshToken", content: with("refreshToken", ""), code: "LoginCacheInvalid",
                     fragment: "the field refreshToken is empty"),
            BadInput(name: "no clientId", content: without(["clientId"]), code: "LoginCacheInvalid",
                     fragment: "the field clientId is missing"),
            BadInput(name: "no dpopKey", content: without(["dpopKey"]), code: "LoginCacheInvalid",
                     fragment: "the field dpopKey is missing"),
        ]
    }()

    @Test("bad input: a clear message naming the file and the field, no Sign-In call, nothing overwritten",
          arguments: badInputs)
    func badInput(_ input: BadInput) async throws {
        let (home, file) = try Self.home(content: input.content)
        defer { home.remove() }
        // Sign-In at a closed loopback port: any attempt to call it would fail differently.
        let source = LoginSource(
            profile: "dev", environment: [:], homeDirectory: home.path, endpointOverride: "http://127.0.0.1:9",
            httpClient: .shared, now: { Date() }, clock: LoginTestClock())
        await #expect {
            try await source.fetch(logger: Logger(label: "test"))
        } throws: { error in
            guard let e = error as? SourceError else { return false }
            return e.code == input.code && e.disposition == .needsAction && e.message.contains(input.fragment)
                && e.message.contains(file) && e.message.contains("aws login --profile dev")
                && !e.message.contains("old-refresh-token") && !e.message.contains("old-secret-key")
                && !e.message.contains("MHcCAQEE")
        }
        #expect(loginFileBytes(file) == input.content)
        let names = try FileManager.default.contentsOfDirectory(atPath: home.path + "/.aws/login/cache")
        #expect(names.allSatisfy { $0.hasSuffix(".json") }, "no lock or temporary file left: \(names)")
    }

    @Test("a cache file that cannot be read (a directory, or no permission) says so and what access to give")
    func unreadable() async throws {
        let (home, file) = try Self.home(content: nil)
        defer { home.remove() }
        try FileManager.default.createDirectory(atPath: file, withIntermediateDirectories: false)
        let source = LoginSource(
            profile: "dev", environment: [:], homeDirectory: home.path, endpointOverride: "http://127.0.0.1:9",
            httpClient: .shared)
        await #expect {
            try await source.fetch(logger: Logger(label: "test"))
        } throws: { error in
            let e = error as? SourceError
            return e?.code == "LoginCacheUnreadable" && e?.message.contains("cannot be read") == true
                && e?.message.contains("read and write access to \(home.path)/.aws/login/cache") == true
        }
    }

    @Test(
        "an unreadable cache directory (permission denied) is named with the access to give",
        .enabled(if: geteuid() != 0, "skipped: running as root, which reads any directory whatever its mode"))
    func permissionDenied() async throws {
        let (home, file) = try Self.home(content: Self.json(Self.validDocument()))
        defer {
            chmod(home.path + "/.aws/login/cache", 0o700)
            home.remove()
        }
        let before = loginFileBytes(file)
        chmod(home.path + "/.aws/login/cache", 0o000)
        let source = LoginSource(
            profile: "dev", environment: [:], homeDirectory: home.path, endpointOverride: "http://127.0.0.1:9",
            httpClient: .shared)
        await #expect {
            try await source.fetch(logger: Logger(label: "test"))
        } throws: { error in
            let e = error as? SourceError
            return e?.code == "LoginCacheUnreadable" && e?.message.contains("Permission denied") == true
        }
        chmod(home.path + "/.aws/login/cache", 0o700)
        #expect(loginFileBytes(file) == before)
    }

    @Test("a cache directory credd may read but not write: refused before Sign-In is called",
          .enabled(if: geteuid() != 0, "skipped: running as root, which writes any directory whatever its mode"))
    func readOnlyDirectory() async throws {
        let (home, file) = try Self.home(content: Self.json(Self.validDocument()))
        defer {
            chmod(home.path + "/.aws/login/cache", 0o700)
            home.remove()
        }
        let before = loginFileBytes(file)
        chmod(home.path + "/.aws/login/cache", 0o500)
        let source = LoginSource(
            profile: "dev", environment: [:], homeDirectory: home.path, endpointOverride: "http://127.0.0.1:9",
            httpClient: .shared)
        await #expect {
            try await source.fetch(logger: Logger(label: "test"))
        } throws: { error in
            (error as? SourceError)?.code == "LoginCacheUnwritable"
        }
        #expect(loginFileBytes(file) == before)
    }

    @Test("a valid file parses into credentials with the account id; nothing secret in its description")
    func parses() throws {
        let data = Self.json(Self.validDocument(expiresIn: 600))
        let document = try LoginCacheDocument(data: data, path: "/c.json", profile: "dev")
        #expect(document.accessKeyId == "ASIAEXAMPLEOLD000001")
        #expect(document.accountId == "123456789012")
        #expect(document.clientId == "arn:aws:signin:::devtools/same-device")
        #expect(document.credentials.isRoleCredentials)
        #expect(document.dpopKey.x == (try P256SigningKey(pem: LoginTestKeys.p256)).x)
        let text = "\(document) \(document.credentials)"
        #expect(!text.contains("old-secret") && !text.contains("old-session") && !text.contains("old-refresh"))
    }

    @Test("the rewrite keeps every other field, accountId and the key; one line; expiresAt = now + expiresIn")
    func rewrite() throws {
        var doc = Self.validDocument()
        doc["futureField"] = ["a": [1, 2, 3], "b": NSNull(), "c": false, "d": "x/y", "e": 12345678901234] as [String: Any]
        let base = Self.json(doc)
        let grant = SignInGrant(
            accessKeyId: "ASIANEW", secretAccessKey: Secret("new-secret"), sessionToken: Secret("new-token"),
            expiresIn: 900, refreshToken: Secret("new-refresh"))
        let now = Date(timeIntervalSince1970: 1_790_000_000.9)
        let out = try LoginCacheDocument.refreshed(base: base, grant: grant, now: now)
        #expect(!out.contains(0x0A), "one line")
        #expect(!String(decoding: out, as: UTF8.self).contains("\\/"), "no escaped slashes")
        let new = try #require(try JSONSerialization.jsonObject(with: out) as? [String: Any])
        let access = try #require(new["accessToken"] as? [String: Any])
        #expect(access["accessKeyId"] as? String == "ASIANEW")
        #expect(access["secretAccessKey"] as? String == "new-secret")
        #expect(access["sessionToken"] as? String == "new-token")
        #expect(access["accountId"] as? String == "123456789012")
        #expect(access["expiresAt"] as? String == "2026-09-21T14:28:20Z")  // 1_790_000_000 + 900
        #expect(new["refreshToken"] as? String == "new-refresh")
        for key in ["clientId", "dpopKey", "idToken", "tokenType"] {
            #expect(new[key] as? String == doc[key] as? String)
        }
        let future = try #require(new["futureField"] as? [String: Any])
        #expect(future["a"] as? [Int] == [1, 2, 3])
        #expect(future["b"] is NSNull)
        #expect(future["c"] as? Bool == false)
        #expect(future["d"] as? String == "x/y")
        #expect((future["e"] as? NSNumber)?.int64Value == 12345678901234)
        _ = try LoginCacheDocument(data: out, path: "/c.json", profile: "dev")
    }

    @Test("the atomic replace: new inode, mode 0600 whatever the umask, no temporary file left")
    func atomicReplace() throws {
        let home = try LoginTestHome()
        defer { home.remove() }
        let file = home.path + "/c.json"
        try Data("old".utf8).write(to: URL(fileURLWithPath: file))
        chmod(file, 0o644)
        var before = stat()
        stat(file, &before)
        let previous = umask(0o000)
        defer { umask(previous) }
        try LoginFileIO.replaceAtomically(file, with: Data("new".utf8)).get()
        var after = stat()
        stat(file, &after)
        #expect(loginFileBytes(file) == Data("new".utf8))
        #expect(after.st_ino != before.st_ino, "replaced by rename, not rewritten in place")
        #expect(after.st_mode & 0o777 == 0o600)
        #expect(try FileManager.default.contentsOfDirectory(atPath: home.path) == ["c.json"])
    }

    @Test("a replace that cannot happen leaves the old file and no temporary file")
    func failedReplace() throws {
        let home = try LoginTestHome()
        defer { home.remove() }
        // The target is a non-empty directory: rename(2) fails after the temporary file was written.
        let target = home.path + "/c.json"
        try FileManager.default.createDirectory(atPath: target + "/inside", withIntermediateDirectories: true)
        let result = LoginFileIO.replaceAtomically(target, with: Data("new".utf8))
        guard case .failure = result else {
            Issue.record("replacing a non-empty directory succeeded")
            return
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: home.path) == ["c.json"])
        #expect(FileManager.default.fileExists(atPath: target + "/inside"))
        guard case .failure = LoginFileIO.replaceAtomically(home.path + "/missing/c.json", with: Data()) else {
            Issue.record("writing into a missing directory succeeded")
            return
        }
    }

    @Test("the lock is exclusive between holders and is free again once released")
    func lock() async throws {
        let home = try LoginTestHome()
        defer { home.remove() }
        let path = home.path + "/c.json.lock"
        let first = try await LoginFileIO.lock(path, timeout: .seconds(1)).get()
        let second = try await LoginFileIO.lock(path, timeout: .milliseconds(100))
        guard case .failure(let failure) = second else {
            Issue.record("a second holder got the lock")
            return
        }
        #expect(failure.errno == EWOULDBLOCK)
        first.release()
        let third = try await LoginFileIO.lock(path, timeout: .milliseconds(100)).get()
        third.release()
        var info = stat()
        stat(path, &info)
        #expect(info.st_mode & 0o777 == 0o600)
    }
}
