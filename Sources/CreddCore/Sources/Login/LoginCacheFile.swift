// The `aws login` token cache: where it is, what it holds, and how credd rewrites it safely beside the CLI and SDKs.
import CreddCrypto
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Where one profile's `aws login` session lives, found as botocore finds it.
public struct LoginCacheLocation: Sendable, Equatable, CustomStringConvertible {
    /// The AWS profile (`default` or a `[profile X]` name).
    public var profile: String
    /// The AWS config file that names the session (`AWS_CONFIG_FILE` or `~/.aws/config`).
    public var configFile: String
    /// The profile's `login_session` (an IAM identity ARN; not a secret).
    public var loginSession: String
    /// The profile's `region`, else `AWS_REGION` / `AWS_DEFAULT_REGION`; picks the Sign-In endpoint.
    public var region: String?
    /// `AWS_LOGIN_CACHE_DIRECTORY` or `~/.aws/login/cache`.
    public var cacheDirectory: String
    /// `cacheDirectory/<sha256 hex of loginSession>.json`.
    public var cacheFile: String

    /// The lock file beside the cache file that serializes credd's (and cooperating tools') refreshes.
    public var lockFile: String { cacheFile + ".lock" }

    public var description: String { "aws login cache \(cacheFile) (profile \(profile))" }

    public init(
        profile: String, configFile: String, loginSession: String, region: String?, cacheDirectory: String,
        cacheFile: String
    ) {
        self.profile = profile
        self.configFile = configFile
        self.loginSession = loginSession
        self.region = region
        self.cacheDirectory = cacheDirectory
        self.cacheFile = cacheFile
    }

    /// The config file to read: `AWS_CONFIG_FILE` (with `~` expanded) or `~/.aws/config`.
    public static func configFilePath(environment: [String: String], homeDirectory: String) -> String {
        if let path = environment["AWS_CONFIG_FILE"], !path.isEmpty {
            return expandTilde(path, homeDirectory: homeDirectory)
        }
        return homeDirectory + "/.aws/config"
    }

    /// The cache directory: `AWS_LOGIN_CACHE_DIRECTORY` (with `~` expanded) or `~/.aws/login/cache`.
    public static func cacheDirectoryPath(environment: [String: String], homeDirectory: String) -> String {
        if let path = environment["AWS_LOGIN_CACHE_DIRECTORY"], !path.isEmpty {
            return expandTilde(path, homeDirectory: homeDirectory)
        }
        return homeDirectory + "/.aws/login/cache"
    }

    /// The cache file's base name for a session: lowercase hex SHA-256 of `login_session` + `.json`.
    public static func cacheFileName(loginSession: String) -> String {
        Hex.encode(Digest.sha256(loginSession)) + ".json"
    }

    static func expandTilde(_ path: String, homeDirectory: String) -> String {
        if path == "~" { return homeDirectory }
        if path.hasPrefix("~/") { return homeDirectory + path.dropFirst() }
        return path
    }

    /// The profile a user instance serves by default: `AWS_PROFILE`, else `default` (as the SDKs choose).
    public static func defaultProfile(environment: [String: String]) -> String {
        if let profile = environment["AWS_PROFILE"], !profile.isEmpty { return profile }
        return "default"
    }

    /// Whether `profile` in the AWS config file names a `login_session` (for the built-in default set of a
    /// user instance: serve the `aws login` session when there is one). Any read or syntax error is `false`.
    public static func profileHasLoginSession(
        profile: String, environment: [String: String], homeDirectory: String
    ) -> Bool {
        (try? locate(profile: profile, environment: environment, homeDirectory: homeDirectory)) != nil
    }

    /// Finds the profile's session: reads the AWS config for `login_session` and `region`.
    /// Throws `SourceError` naming the file (and line, for a syntax error) and what to do.
    public static func locate(
        profile: String, environment: [String: String], homeDirectory: String
    ) throws(SourceError) -> LoginCacheLocation {
        let configFile = configFilePath(environment: environment, homeDirectory: homeDirectory)
        let text: String
        switch LoginFileIO.read(configFile) {
        case .success(let data):
            guard let decoded = String(data: data, encoding: .utf8) else {
                throw SourceError(
                    code: "LoginConfigInvalid",
                    message: "The AWS config file \(configFile) is not UTF-8 text: fix or recreate it, then run "
                        + "`aws login --profile \(profile)`.",
                    disposition: .needsAction)
            }
            text = decoded
        case .failure(let error):
            if error.errno == ENOENT {
                throw SourceError(
                    code: "LoginRequired",
                    message: "login required: run `aws login --profile \(profile)` (there is no AWS config file at "
                        + "\(configFile), so profile \(profile) has no aws login session).",
                    disposition: .needsAction)
            }
            throw SourceError(
                code: "LoginConfigUnreadable",
                message: "The AWS config file \(configFile) cannot be read (\(error.reason)): give the user credd runs "
                    + "as read access to it.",
                disposition: .needsAction)
        }
        let profiles: AWSConfigProfiles
        do {
            profiles = try AWSConfigProfiles.parse(text, file: configFile)
        } catch {
            throw SourceError(
                code: "LoginConfigInvalid",
                message: "The AWS config file is not valid: \(error.description). Fix that line; the AWS CLI refuses "
                    + "the file too.",
                disposition: .needsAction)
        }
        guard let settings = profiles[profile] else {
            throw SourceError(
                code: "LoginRequired",
                message: "login required: run `aws login --profile \(profile)` (profile \(profile) is not in "
                    + "\(configFile)).",
                disposition: .needsAction)
        }
        guard let session = settings["login_session"], !session.isEmpty else {
            throw SourceError(
                code: "LoginRequired",
                message: "login required: run `aws login --profile \(profile)` (profile \(profile) in \(configFile) "
                    + "has no login_session).",
                disposition: .needsAction)
        }
        var region = settings["region"].flatMap { $0.isEmpty ? nil : $0 }
        if region == nil {
            region = [environment["AWS_REGION"], environment["AWS_DEFAULT_REGION"]].compactMap { $0 }
                .first { !$0.isEmpty }
        }
        let directory = cacheDirectoryPath(environment: environment, homeDirectory: homeDirectory)
        return LoginCacheLocation(
            profile: profile, configFile: configFile, loginSession: session, region: region,
            cacheDirectory: directory, cacheFile: directory + "/" + cacheFileName(loginSession: session))
    }
}

/// The new credentials a Sign-In refresh returned (`CreateOAuth2Token` with `grantType=refresh_token`).
public struct SignInGrant: Sendable, CustomStringConvertible {
    public var accessKeyId: String
    public var secretAccessKey: Secret
    public var sessionToken: Secret
    /// Seconds the credentials last (the service says at most 900).
    public var expiresIn: Int
    /// The rotated refresh token; the old one must be replaced in the cache.
    public var refreshToken: Secret

    public init(accessKeyId: String, secretAccessKey: Secret, sessionToken: Secret, expiresIn: Int, refreshToken: Secret) {
        self.accessKeyId = accessKeyId
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
        self.expiresIn = expiresIn
        self.refreshToken = refreshToken
    }

    public var description: String { "SignInGrant(key: …\(accessKeyId.suffix(4)), expiresIn: \(expiresIn))" }
}

/// One parsed, validated `aws login` cache file. Keeps the file's exact bytes so a rewrite changes only
/// what a refresh changes (unknown fields, `accountId`, `clientId`, `dpopKey` survive as they were).
public struct LoginCacheDocument: Sendable, CustomStringConvertible {
    /// The file it came from (for messages).
    public var path: String
    public var accessKeyId: String
    public var secretAccessKey: Secret
    public var sessionToken: Secret
    public var accountId: String?
    public var expiresAt: Date
    public var refreshToken: Secret
    public var clientId: String
    /// The session's P-256 key (SEC1 PEM in the file), loaded and checked.
    public var dpopKey: P256SigningKey
    /// The file's bytes as read.
    public var original: Data

    public var description: String {
        "LoginCacheDocument(\(path), key: …\(accessKeyId.suffix(4)), expires: \(RFC3339.format(expiresAt)))"
    }

    /// The credentials the file holds.
    public var credentials: Credentials {
        Credentials(
            accessKeyId: accessKeyId, secretAccessKey: secretAccessKey, sessionToken: sessionToken,
            expiration: expiresAt, accountId: accountId, isRoleCredentials: true)
    }

    /// Parses and validates `data`, the content of `path`. Every failure names the file and the field.
    public init(data: Data, path: String, profile: String) throws(SourceError) {
        func invalid(_ what: String) -> SourceError {
            SourceError(
                code: "LoginCacheInvalid",
                message: "The aws login cache file \(path) is not usable: \(what). Run `aws login --profile \(profile)` "
                    + "to write a new one.",
                disposition: .needsAction)
        }
        if data.isEmpty || data.allSatisfy({ [0x20, 0x09, 0x0A, 0x0D].contains($0) }) {
            throw invalid("it is empty (a write may have been interrupted)")
        }
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: data, options: [])
        } catch {
            throw invalid("it is not valid JSON (it may be cut short by an interrupted write)")
        }
        guard let top = object as? [String: Any] else { throw invalid("its JSON is not an object") }
        guard let access = top["accessToken"] else { throw invalid("the field accessToken is missing") }
        guard let accessToken = access as? [String: Any] else { throw invalid("the field accessToken is not an object") }

        func string(_ value: Any?, _ field: String) throws(SourceError) -> String {
            guard let value else { throw invalid("the field \(field) is missing") }
            guard let text = value as? String else { throw invalid("the field \(field) is not a string") }
            guard !text.isEmpty else { throw invalid("the field \(field) is empty") }
            return text
        }
        self.path = path
        self.accessKeyId = try string(accessToken["accessKeyId"], "accessToken.accessKeyId")
        self.secretAccessKey = Secret(try string(accessToken["secretAccessKey"], "accessToken.secretAccessKey"))
        self.sessionToken = Secret(try string(accessToken["sessionToken"], "accessToken.sessionToken"))
        if let account = accessToken["accountId"] {
            guard let text = account as? String, !text.isEmpty else {
                throw invalid("the field accessToken.accountId is not a non-empty string")
            }
            self.accountId = text
        } else {
            self.accountId = nil
        }
        let expires = try string(accessToken["expiresAt"], "accessToken.expiresAt")
        guard let expiresAt = RFC3339.parse(expires) else {
            throw invalid("the field accessToken.expiresAt is not an RFC 3339 time (\"\(expires.prefix(40))\")")
        }
        self.expiresAt = expiresAt
        self.refreshToken = Secret(try string(top["refreshToken"], "refreshToken"))
        self.clientId = try string(top["clientId"], "clientId")
        let pem = try string(top["dpopKey"], "dpopKey")
        do {
            self.dpopKey = try P256SigningKey(pem: pem)
        } catch {
            throw invalid("the field dpopKey is not a usable P-256 private key (\(error))")
        }
        self.original = data
    }

    /// The file's content after a refresh, as botocore writes it: the three access-token fields from
    /// `grant`, `accountId` kept, `expiresAt` = now + expiresIn (whole seconds, `Z`), the new refresh token,
    /// every other field untouched; one line of JSON. `base` is the document whose other fields to keep
    /// (the newest parsable content of the file).
    public static func refreshed(base: Data, grant: SignInGrant, now: Date) throws -> Data {
        guard var top = try JSONSerialization.jsonObject(with: base, options: []) as? [String: Any] else {
            throw CocoaError(.propertyListReadCorrupt)
        }
        var accessToken = (top["accessToken"] as? [String: Any]) ?? [:]
        accessToken["accessKeyId"] = grant.accessKeyId
        accessToken["secretAccessKey"] = grant.secretAccessKey.exposed
        accessToken["sessionToken"] = grant.sessionToken.exposed
        let expiry = Date(timeIntervalSince1970: now.timeIntervalSince1970.rounded(.down) + Double(grant.expiresIn))
        accessToken["expiresAt"] = RFC3339.format(expiry)
        top["accessToken"] = accessToken
        top["refreshToken"] = grant.refreshToken.exposed
        // JSONSerialization writes no newlines without .prettyPrinted: one line, as botocore's json.dumps.
        return try JSONSerialization.data(withJSONObject: top, options: [.sortedKeys, .withoutEscapingSlashes])
    }
}

/// `read(2)`, named apart from `LoginFileIO.read`.
private func posixRead(_ fd: Int32, _ buffer: UnsafeMutableRawPointer?, _ count: Int) -> Int {
    read(fd, buffer, count)
}

/// Small POSIX file operations for the cache: reads that report errno, the atomic replace, the lock.
public enum LoginFileIO {
    public struct Failure: Error, Sendable, Equatable {
        public var errno: Int32
        public var reason: String { String(cString: strerror(errno)) }
    }

    /// Reads a whole file (at most 1 MiB: a cache file is a few KiB).
    public static func read(_ path: String) -> Result<Data, Failure> {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return .failure(Failure(errno: errno)) }
        defer { close(fd) }
        var data = Data()
        var buffer = [UInt8](repeating: 0, count: 16384)
        while true {
            let n = buffer.withUnsafeMutableBytes { posixRead(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                return .failure(Failure(errno: errno))
            }
            if n == 0 { break }
            data.append(contentsOf: buffer[0..<n])
            if data.count > 1 << 20 { return .failure(Failure(errno: EFBIG)) }
        }
        return .success(data)
    }

    /// Replaces `path` with `data` atomically: a temporary file in the same directory (mode 0600),
    /// written and fsynced, renamed over `path`, then the directory fsynced. A crash at any instant
    /// leaves either the old file or the new one. The temporary file is removed on failure.
    public static func replaceAtomically(_ path: String, with data: Data) -> Result<Void, Failure> {
        let directory = (path as NSString).deletingLastPathComponent
        let base = (path as NSString).lastPathComponent
        let temporary = directory + "/." + base + "." + Hex.encode(SecureRandom.bytes(6)) + ".tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { return .failure(Failure(errno: errno)) }
        func fail(_ code: Int32) -> Result<Void, Failure> {
            close(fd)
            unlink(temporary)
            return .failure(Failure(errno: code))
        }
        // The umask could only narrow 0600; set it exactly anyway.
        if fchmod(fd, 0o600) != 0 { return fail(errno) }
        let bytes = [UInt8](data)
        var written = 0
        while written < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + written, $0.count - written) }
            if n < 0 {
                if errno == EINTR { continue }
                return fail(errno)
            }
            written += n
        }
        if fsync(fd) != 0 { return fail(errno) }
        if close(fd) != 0 {
            let code = errno
            unlink(temporary)
            return .failure(Failure(errno: code))
        }
        if rename(temporary, path) != 0 {
            let code = errno
            unlink(temporary)
            return .failure(Failure(errno: code))
        }
        let dirfd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dirfd >= 0 {
            // The rename is durable only once the directory is; a failure here is reported but the file is in place.
            let synced = fsync(dirfd)
            let code = errno
            close(dirfd)
            if synced != 0 { return .failure(Failure(errno: code)) }
        }
        return .success(())
    }

    /// An exclusive `flock` on a lock file; released by `release()` or when the holder is dropped.
    public final class ExclusiveLock: @unchecked Sendable {
        private var fd: Int32

        init(fd: Int32) { self.fd = fd }

        public func release() {
            guard fd >= 0 else { return }
            flock(fd, LOCK_UN)
            close(fd)
            fd = -1
        }

        deinit { release() }
    }

    /// Takes the exclusive lock on `path` (created 0600 if absent), polling every 20 ms without blocking a
    /// thread, for at most `timeout` of real time (the holder is another process, so no test clock applies).
    /// Fails with EWOULDBLOCK when another holder keeps it that long; throws only on cancellation.
    public static func lock(_ path: String, timeout: Duration) async throws -> Result<ExclusiveLock, Failure> {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { return .failure(Failure(errno: errno)) }
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: timeout)
        while true {
            if flock(fd, LOCK_EX | LOCK_NB) == 0 { return .success(ExclusiveLock(fd: fd)) }
            let code = errno
            guard code == EWOULDBLOCK || code == EINTR else {
                close(fd)
                return .failure(Failure(errno: code))
            }
            guard clock.now < deadline else {
                close(fd)
                return .failure(Failure(errno: EWOULDBLOCK))
            }
            do {
                try await clock.sleep(for: .milliseconds(20))
            } catch {
                close(fd)
                throw error
            }
        }
    }
}
