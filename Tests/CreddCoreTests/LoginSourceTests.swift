// LoginSource against the strict Python fake Sign-In (which verifies every DPoP proof with `cryptography`).
import AsyncHTTPClient
import CreddCore
import CreddCrypto
import Foundation
import Logging
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The fake Sign-In service of the integration suite (Tests/integration/support/fake_signin.py), run as a
/// child process in its control mode: one JSON command per line on stdin, one JSON answer per line on stdout.
/// Answers carry identifiers and counters only, never a secret.
final class FakeSignInProcess: @unchecked Sendable {
    static let repositoryRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let script = repositoryRoot.appendingPathComponent("Tests/integration/support/fake_signin.py")
    static let python: URL = {
        let local = repositoryRoot.appendingPathComponent(".venv/bin/python")
        if FileManager.default.isExecutableFile(atPath: local.path) { return local }
        return URL(fileURLWithPath: "/work/main/.venv/bin/python")
    }()

    /// True when the venv's python can run the fake (it needs `cryptography`).
    static let isAvailable: Bool = {
        guard FileManager.default.isExecutableFile(atPath: python.path),
            FileManager.default.fileExists(atPath: script.path)
        else { return false }
        let p = Process()
        p.executableURL = python
        p.arguments = ["-c", "import cryptography"]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        do { try p.run() } catch { return false }
        p.waitUntilExit()
        return p.terminationStatus == 0
    }()

    static let skipReason: Comment = "skipped: needs the venv python with `cryptography` at .venv/bin/python to run the fake Sign-In"

    let process = Process()
    private let input = Pipe()
    private let output = Pipe()
    private var buffered: [UInt8] = []
    let url: String

    init(arguments: [String] = []) throws {
        process.executableURL = Self.python
        process.arguments = [Self.script.path, "--control"] + arguments
        // No AWS_* setting of this machine reaches the fake; it needs none.
        process.environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("AWS_") }
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        var first: [String: Any] = [:]
        var line = ""
        do {
            line = try Self.readLine(output.fileHandleForReading, buffer: &buffered)
            first = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] ?? [:]
        }
        guard let url = first["url"] as? String else {
            process.terminate()
            throw FakeError("the fake Sign-In did not start: \(line)")
        }
        self.url = url
    }

    struct FakeError: Error, CustomStringConvertible {
        let description: String
        init(_ d: String) { description = d }
    }

    static func readLine(_ handle: FileHandle, buffer: inout [UInt8]) throws -> String {
        while true {
            if let newline = buffer.firstIndex(of: 0x0A) {
                let line = String(decoding: buffer[..<newline], as: UTF8.self)
                buffer.removeSubrange(...newline)
                return line
            }
            var chunk = [UInt8](repeating: 0, count: 4096)
            let n = chunk.withUnsafeMutableBytes { read(handle.fileDescriptor, $0.baseAddress, $0.count) }
            if n < 0, errno == EINTR { continue }
            guard n > 0 else { throw FakeError("the fake Sign-In closed its output") }
            buffer.append(contentsOf: chunk[..<n])
        }
    }

    /// Sends one command and returns the answer.
    @discardableResult
    func command(_ command: [String: Any]) throws -> [String: Any] {
        var data = try JSONSerialization.data(withJSONObject: command)
        data.append(0x0A)
        try input.fileHandleForWriting.write(contentsOf: data)
        let line = try Self.readLine(output.fileHandleForReading, buffer: &buffered)
        guard let answer = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
            throw FakeError("the fake Sign-In answered no JSON object: \(line)")
        }
        if let error = answer["error"] as? String { throw FakeError("the fake Sign-In refused \(command["cmd"] ?? "?"): \(error)") }
        return answer
    }

    func stats() throws -> [String: Any] { try command(["cmd": "stats"]) }
    func int(_ key: String) throws -> Int { try stats()[key] as? Int ?? -1 }
    func rejections() throws -> [String: Int] { try stats()["rejections"] as? [String: Int] ?? [:] }
    func checkCache(_ path: String) throws -> [String: Any] { try command(["cmd": "check_cache", "path": path]) }

    /// Writes an `aws login` profile and cache into `home`; `expiresIn` seconds of life left in the file.
    func writeLogin(home: String, profile: String = "default", expiresIn: Double? = nil, extra: [String: Any]? = nil)
        throws -> (cacheFile: String, loginSession: String, accessKeyId: String)
    {
        var cmd: [String: Any] = ["cmd": "write_login", "home": home, "profile": profile, "region": "eu-west-1"]
        if let expiresIn { cmd["expires_in_seconds"] = expiresIn }
        if let extra { cmd["extra_fields"] = extra }
        let answer = try command(cmd)
        return (answer["cache_file"] as! String, answer["login_session"] as! String, answer["access_key_id"] as! String)
    }

    func stop() {
        try? input.fileHandleForWriting.close()
        process.waitUntilExit()
    }

    deinit {
        if process.isRunning { process.terminate() }
    }
}

/// A clock whose sleeps return at once (and are recorded), for backoff in tests.
final class LoginTestClock: Clock, @unchecked Sendable {
    typealias Instant = ContinuousClock.Instant
    private let lock = NSLock()
    private var recorded: [Duration] = []
    var now: Instant { ContinuousClock.now }
    var minimumResolution: Duration { .nanoseconds(1) }
    var sleeps: [Duration] { lock.withLock { recorded } }

    func sleep(until deadline: Instant, tolerance: Duration?) async throws {
        lock.withLock { recorded.append(ContinuousClock.now.duration(to: deadline)) }
        try Task.checkCancellation()
        await Task.yield()
    }
}

/// A temporary HOME for one test.
struct LoginTestHome {
    let path: String
    init() throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("credd-login-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

func loginFileBytes(_ path: String) -> Data? { FileManager.default.contents(atPath: path) }

@Suite("aws login: LoginSource against the strict fake Sign-In", .enabled(if: FakeSignInProcess.isAvailable, FakeSignInProcess.skipReason))
struct LoginSourceTests {
    let logger = Logger(label: "test.login")

    func source(
        _ fake: FakeSignInProcess, home: LoginTestHome, profile: String = "default", attempts: Int = 3,
        requestTimeout: Duration = .seconds(5), lockTimeout: Duration = .seconds(5),
        now: @escaping @Sendable () -> Date = { Date() }, clock: LoginTestClock = LoginTestClock()
    ) -> LoginSource {
        LoginSource(
            profile: profile, environment: ["AWS_ENDPOINT_URL_SIGNIN": fake.url], homeDirectory: home.path,
            httpClient: .shared, requestTimeout: requestTimeout, attempts: attempts, lockTimeout: lockTimeout,
            now: now, clock: clock)
    }

    @Test("fresh credentials in the cache are served as they are, without calling Sign-In")
    func freshIsRead() async throws {
        let fake = try FakeSignInProcess()
        defer { fake.stop() }
        let home = try LoginTestHome()
        defer { home.remove() }
        let login = try fake.writeLogin(home: home.path)  // 15 minutes left
        let credentials = try await source(fake, home: home).fetch(logger: logger)
        #expect(credentials.accessKeyId == login.accessKeyId)
        #expect(credentials.accountId == "123456789012")
        #expect(credentials.isRoleCredentials)
        #expect(try fake.int("token_requests") == 0)
    }

    @Test("credentials under 11 minutes are refreshed; the fake verifies the proof; the cache is rewritten as botocore would",
          arguments: [10 * 60.0, 60.0, -3600.0])
    func staleIsRefreshed(left: Double) async throws {
        let fake = try FakeSignInProcess()
        defer { fake.stop() }
        let home = try LoginTestHome()
        defer { home.remove() }
        let login = try fake.writeLogin(home: home.path, expiresIn: left, extra: ["futureField": ["nested": [1, 2]], "flag": true])
        let before = try #require(loginFileBytes(login.cacheFile))
        let started = Date()
        let credentials = try await source(fake, home: home).fetch(logger: logger)

        #expect(try fake.rejections() == [:])
        #expect(try fake.int("proofs_verified") == 1)
        #expect(try fake.int("refreshes") == 1)
        #expect(credentials.accessKeyId != login.accessKeyId)
        #expect(credentials.accountId == "123456789012")
        #expect(abs(credentials.expiration.timeIntervalSince(started) - 900) < 5)

        let cache = try fake.checkCache(login.cacheFile)
        #expect(cache["parses"] as? Bool == true)
        #expect(cache["one_line"] as? Bool == true)
        #expect(cache["mode"] as? String == "0o600")
        #expect(cache["credentials_issued"] as? Bool == true)
        #expect(cache["refresh_token_serial"] as? Int == cache["newest_serial"] as? Int)
        #expect(cache["account_id"] as? String == "123456789012")
        #expect(cache["expires_at"] as? String == RFC3339.format(credentials.expiration))
        #expect(
            cache["keys"] as? [String]
                == ["accessToken", "clientId", "dpopKey", "flag", "futureField", "idToken", "refreshToken", "tokenType"])
        let old = try JSONSerialization.jsonObject(with: before) as! [String: Any]
        let new = try JSONSerialization.jsonObject(with: #require(loginFileBytes(login.cacheFile))) as! [String: Any]
        for key in ["clientId", "dpopKey", "idToken", "tokenType"] {
            #expect(new[key] as? String == old[key] as? String, "\(key) kept")
        }
        #expect((new["futureField"] as? [String: Any])?["nested"] as? [Int] == [1, 2])
        #expect(new["flag"] as? Bool == true)
        #expect((new["accessToken"] as? [String: Any])?["accessKeyId"] as? String == credentials.accessKeyId)

        // The next fetch reads the rewritten file (15 minutes left) and does not call Sign-In again.
        let again = try await source(fake, home: home).fetch(logger: logger)
        #expect(again.accessKeyId == credentials.accessKeyId)
        #expect(try fake.int("token_requests") == 1)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: (login.cacheFile as NSString).deletingLastPathComponent)
        #expect(leftovers.filter { $0.hasSuffix(".tmp") }.isEmpty)
    }

    @Test("many rounds: every refresh uses the newest refresh token and a fresh proof")
    func rounds() async throws {
        let fake = try FakeSignInProcess(arguments: ["--reuse-window", "0"])
        defer { fake.stop() }
        let home = try LoginTestHome()
        defer { home.remove() }
        let login = try fake.writeLogin(home: home.path, expiresIn: 60)
        try fake.command(["cmd": "set_expires_in", "seconds": 300])  // under 11 minutes: every fetch refreshes
        var keys: Set<String> = []
        for _ in 0..<6 {
            keys.insert(try await source(fake, home: home).fetch(logger: logger).accessKeyId)
            let cache = try fake.checkCache(login.cacheFile)
            #expect(cache["refresh_token_serial"] as? Int == cache["newest_serial"] as? Int)
        }
        #expect(keys.count == 6)
        #expect(try fake.int("refreshes") == 6)
        #expect(try fake.rejections() == [:])
    }

    @Test(
        "Sign-In refusals that need a person: the set says what to run, Sign-In is asked once, the file is untouched",
        arguments: [
            ("TOKEN_EXPIRED", "LoginRequired"), ("USER_CREDENTIALS_CHANGED", "LoginRequired"),
            ("INSUFFICIENT_PERMISSIONS", "LoginInsufficientPermissions"),
        ])
    func needsAction(reason: String, code: String) async throws {
        let fake = try FakeSignInProcess()
        defer { fake.stop() }
        let home = try LoginTestHome()
        defer { home.remove() }
        let login = try fake.writeLogin(home: home.path, profile: "dev", expiresIn: 120)
        try fake.command(["cmd": "revoke", "login_session": login.loginSession, "reason": reason])
        let before = loginFileBytes(login.cacheFile)
        await #expect {
            try await source(fake, home: home, profile: "dev").fetch(logger: logger)
        } throws: { error in
            guard let e = error as? SourceError else { return false }
            return e.code == code && e.disposition == .needsAction && e.message.contains("aws login --profile dev")
                && e.message.contains(reason)
                && (code != "LoginRequired" || e.message.hasPrefix("login required: run `aws login --profile dev`"))
        }
        #expect(loginFileBytes(login.cacheFile) == before)
        #expect(try fake.int("token_requests") == 1)
    }

    @Test("429 and 5xx are retried with a new proof each time, with backoff")
    func transientThenSuccess() async throws {
        let fake = try FakeSignInProcess()
        defer { fake.stop() }
        let home = try LoginTestHome()
        defer { home.remove() }
        let login = try fake.writeLogin(home: home.path, expiresIn: 120)
        try fake.command(["cmd": "fail_next", "mode": "429"])
        try fake.command(["cmd": "fail_next", "mode": "500"])
        let clock = LoginTestClock()
        let credentials = try await source(fake, home: home, clock: clock).fetch(logger: logger)
        #expect(credentials.accessKeyId != login.accessKeyId)
        #expect(try fake.int("proofs_verified") == 3)
        #expect(try fake.rejections() == [:], "no proof was replayed")
        #expect(clock.sleeps.filter { $0 >= .milliseconds(900) }.count == 2, "backoff of 1 s, then 2 s")
    }

    @Test(
        "transient failures that last: a transient error after the attempts, the file untouched",
        arguments: [("429", "SignInThrottled"), ("500", "SignInUnavailable"), ("503", "SignInUnavailable"),
                    ("garbage", "SignInInvalidResponse"), ("incomplete", "SignInInvalidResponse"),
                    ("close", "SignInUnreachable"), ("hang", "SignInUnreachable")])
    func transientFailure(mode: String, code: String) async throws {
        let fake = try FakeSignInProcess()
        defer { fake.stop() }
        let home = try LoginTestHome()
        defer { home.remove() }
        let login = try fake.writeLogin(home: home.path, expiresIn: 120)
        try fake.command(["cmd": "fail_always", "mode": mode])
        let before = loginFileBytes(login.cacheFile)
        await #expect {
            try await source(fake, home: home, attempts: 2, requestTimeout: .milliseconds(500)).fetch(logger: logger)
        } throws: { error in
            guard let e = error as? SourceError else { return false }
            return e.code == code && e.disposition == .transient && e.message.contains(fake.url)
        }
        #expect(loginFileBytes(login.cacheFile) == before)
        #expect(try fake.int("token_requests") == 2)
    }

    @Test("the fake checks credd's iat against its clock: a skewed clock is refused, not retried")
    func skewedClock() async throws {
        let fake = try FakeSignInProcess()
        defer { fake.stop() }
        let home = try LoginTestHome()
        defer { home.remove() }
        let login = try fake.writeLogin(home: home.path, expiresIn: 120)
        try fake.command(["cmd": "advance", "seconds": 600])  // the service's clock runs 10 minutes ahead
        let before = loginFileBytes(login.cacheFile)
        await #expect {
            try await source(fake, home: home).fetch(logger: logger)
        } throws: { error in
            (error as? SourceError)?.code == "LoginRefreshRejected" && (error as? SourceError)?.message.contains("iat") == true
        }
        #expect(try fake.rejections().keys.contains { $0.hasPrefix("dpop: iat") })
        #expect(loginFileBytes(login.cacheFile) == before)
    }

    @Test("another process refreshed while credd waited for the lock: its credentials are adopted, Sign-In is not called")
    func adoptsUnderLock() async throws {
        let fake = try FakeSignInProcess()
        defer { fake.stop() }
        let home = try LoginTestHome()
        defer { home.remove() }
        let login = try fake.writeLogin(home: home.path, expiresIn: 120)
        let held = try await LoginFileIO.lock(login.cacheFile + ".lock", timeout: .seconds(1)).get()
        let source = source(fake, home: home, clock: LoginTestClock())
        let fetch = Task { try await source.fetch(logger: logger) }
        try await Task.sleep(for: .milliseconds(200))
        // The other process (as botocore would) writes fresh credentials, then lets go of the lock.
        var document = try JSONSerialization.jsonObject(with: #require(loginFileBytes(login.cacheFile))) as! [String: Any]
        var access = document["accessToken"] as! [String: Any]
        access["accessKeyId"] = "ASIAOTHERPROCESS0001"
        access["expiresAt"] = RFC3339.format(Date().addingTimeInterval(900))
        document["accessToken"] = access
        _ = LoginFileIO.replaceAtomically(login.cacheFile, with: try JSONSerialization.data(withJSONObject: document))
        held.release()
        let credentials = try await fetch.value
        #expect(credentials.accessKeyId == "ASIAOTHERPROCESS0001")
        #expect(try fake.int("token_requests") == 0)
    }

    @Test("a lock held too long: a transient LoginCacheBusy, no Sign-In call")
    func lockBusy() async throws {
        let fake = try FakeSignInProcess()
        defer { fake.stop() }
        let home = try LoginTestHome()
        defer { home.remove() }
        let login = try fake.writeLogin(home: home.path, expiresIn: 120)
        let held = try await LoginFileIO.lock(login.cacheFile + ".lock", timeout: .seconds(1)).get()
        defer { held.release() }
        await #expect {
            try await source(fake, home: home, lockTimeout: .milliseconds(200)).fetch(logger: logger)
        } throws: { error in
            (error as? SourceError)?.code == "LoginCacheBusy" && (error as? SourceError)?.disposition == .transient
        }
        #expect(try fake.int("token_requests") == 0)
    }

    @Test("a new `aws login` lands while Sign-In refuses the old session: the new file's token is used at once")
    func newLoginDuringRefresh() async throws {
        let fake = try FakeSignInProcess()
        defer { fake.stop() }
        let home = try LoginTestHome()
        defer { home.remove() }
        let old = try fake.writeLogin(home: home.path, expiresIn: 120)
        try fake.command(["cmd": "revoke", "login_session": old.loginSession, "reason": "TOKEN_EXPIRED"])
        try fake.command(["cmd": "set_slow_seconds", "seconds": 1.0])
        try fake.command(["cmd": "fail_next", "mode": "slow"])
        let other = try LoginTestHome()
        defer { other.remove() }
        let fresh = try fake.writeLogin(home: other.path, expiresIn: 120)
        let source = source(fake, home: home)
        let fetch = Task { try await source.fetch(logger: logger) }
        try await Task.sleep(for: .milliseconds(300))
        // `aws login` again (as the same identity): the file under the same name now holds a new session.
        _ = LoginFileIO.replaceAtomically(old.cacheFile, with: try #require(loginFileBytes(fresh.cacheFile)))
        let credentials = try await fetch.value
        #expect(credentials.accessKeyId != fresh.accessKeyId)
        #expect(try fake.int("token_requests") == 2)
        #expect(try fake.int("refreshes") == 1)
        let cache = try fake.checkCache(old.cacheFile)
        #expect(cache["credentials_issued"] as? Bool == true)
        #expect(cache["refresh_token_serial"] as? Int == cache["newest_serial"] as? Int)
    }
}

@Suite("aws login: cache watcher (inotify)")
struct LoginCacheWatcherTests {
    @Test("rename over the file, in-place rewrite, deletion, and a directory that appears later are all noticed")
    func notices() async throws {
        let home = try LoginTestHome()
        defer { home.remove() }
        let config = home.path + "/.aws/config"
        let cacheDir = home.path + "/.aws/login/cache"
        let events = LoginEventCounter()
        let stream = LoginCacheWatcher.changes(files: [config], directories: [cacheDir])
        let consumer = Task {
            for await _ in stream { events.increment() }
        }
        defer { consumer.cancel() }

        func expectEvent(_ what: String, _ change: () throws -> Void) async throws {
            let before = events.value
            try change()
            var waited = 0.0
            while events.value == before, waited < 3 {
                try await Task.sleep(for: .milliseconds(20))
                waited += 0.02
            }
            #expect(events.value > before, "no change noticed after: \(what)")
        }

        try await Task.sleep(for: .milliseconds(100))
        try await expectEvent("the directories appear and a cache file is written") {
            try FileManager.default.createDirectory(atPath: cacheDir, withIntermediateDirectories: true)
            try Data("{}".utf8).write(to: URL(fileURLWithPath: cacheDir + "/abc.json"))
        }
        try await Task.sleep(for: .milliseconds(100))
        try await expectEvent("atomic replace (botocore)") {
            _ = LoginFileIO.replaceAtomically(cacheDir + "/abc.json", with: Data("{\"a\":1}".utf8))
        }
        try await expectEvent("in-place rewrite (AWS CLI v2)") {
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: cacheDir + "/abc.json"))
            try handle.truncate(atOffset: 0)
            try handle.write(contentsOf: Data("{\"b\":2}".utf8))
            try handle.close()
        }
        try await expectEvent("the AWS config is written (aws login adds the profile)") {
            try "[default]\nlogin_session = s\n".write(toFile: config, atomically: false, encoding: .utf8)
        }
        try await expectEvent("deletion (aws logout)") {
            try FileManager.default.removeItem(atPath: cacheDir + "/abc.json")
        }
        // The lock file and temporary files are not changes of the cache.
        try await Task.sleep(for: .milliseconds(200))
        let quiet = events.value
        _ = try await LoginFileIO.lock(cacheDir + "/abc.json.lock", timeout: .seconds(1)).get()
        try Data().write(to: URL(fileURLWithPath: cacheDir + "/.abc.json.123.tmp"))
        try await Task.sleep(for: .milliseconds(300))
        #expect(events.value == quiet)
    }

    @Test("the watching thread ends when the consumer is cancelled")
    func endsOnCancel() async throws {
        let home = try LoginTestHome()
        defer { home.remove() }
        let stream = LoginCacheWatcher.changes(files: [home.path + "/config"], directories: [home.path])
        let consumer = Task { for await _ in stream {} }
        try await Task.sleep(for: .milliseconds(100))
        consumer.cancel()
        await consumer.value  // returns only if the stream finished
    }
}

final class LoginEventCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    func increment() { lock.withLock { count += 1 } }
    var value: Int { lock.withLock { count } }
}
