// The `login` credential source: the `aws login` cache, refreshed through Sign-In ahead of every SDK's windows.
import AsyncHTTPClient
import CreddCrypto
import Foundation
import NIOConcurrencyHelpers
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// Credentials from a profile's `aws login` session (PROTOCOLS §3).
///
/// `fetch` returns the cache file's credentials while they have more than `refreshBefore` (11 minutes)
/// left — the AWS CLI, an SDK or another credd may have refreshed them — and otherwise refreshes them
/// through Sign-In under an exclusive lock (`<cache file>.lock`): re-read the file, adopt what another
/// process wrote if it is now fresh, else call Sign-In with a DPoP proof and replace the file atomically
/// in botocore's format. A file that is missing, unreadable or invalid is never rewritten.
///
/// Errors are `SourceError`s: `LoginRequired` (run `aws login`), `LoginInsufficientPermissions`,
/// `LoginRefreshRejected`, `LoginCacheInvalid`, `LoginCacheUnreadable`, `LoginCacheUnwritable`,
/// `LoginConfigInvalid`, `LoginConfigUnreadable` need a person (`.needsAction`); `SignInThrottled`,
/// `SignInUnavailable`, `SignInUnreachable`, `SignInInvalidResponse`, `LoginCacheBusy` are `.transient`.
public struct LoginSource: CredentialSource {
    /// Refresh when less than this remains: 15-minute credentials then never reach any SDK's 10-minute
    /// blocking window, and botocore's own login refresh (5 minutes) never starts.
    public static let refreshBefore: Duration = .seconds(11 * 60)

    public let kind = "login"
    /// The AWS profile whose `login_session` is served.
    public let profile: String
    public let environment: [String: String]
    public let homeDirectory: String
    /// Sign-In endpoint from credd's config; wins over `AWS_ENDPOINT_URL_SIGNIN` and the region's endpoint.
    public let endpointOverride: String?
    /// Sign-In attempts per fetch for throttling, 5xx and network errors (a new DPoP proof each time).
    public let attempts: Int
    /// How long to wait for another refresher's lock before giving up this round.
    public let lockTimeout: Duration
    let client: SignInClient
    /// The inode of the cache file credd itself wrote last: its own writes must not trigger a refresh.
    let lastWrittenInode = NIOLockedValueBox<UInt64?>(nil)
    let now: @Sendable () -> Date
    let clock: any Clock<Duration>

    /// - Parameters:
    ///   - profile: the AWS profile (`[default]` or `[profile NAME]` in the AWS config file).
    ///   - environment: the variables to honour: `AWS_CONFIG_FILE`, `AWS_LOGIN_CACHE_DIRECTORY`,
    ///     `AWS_ENDPOINT_URL_SIGNIN`, `AWS_ENDPOINT_URL`, `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS`, `AWS_REGION`,
    ///     `AWS_DEFAULT_REGION` (the last two only when the profile has no `region`).
    ///   - homeDirectory: the home whose `~/.aws` holds the config and the cache.
    ///   - endpointOverride: `credentials.NAME.endpoint` from credd's config, if set.
    ///   - httpClient: the shared outbound client.
    ///   - requestTimeout: deadline of one Sign-In request.
    ///   - now: the wall clock (expiry decisions, `iat`, the written `expiresAt`).
    ///   - clock: what the retry backoff sleeps on (waiting for another process's lock uses real time).
    public init(
        profile: String = "default", environment: [String: String], homeDirectory: String,
        endpointOverride: String? = nil, httpClient: HTTPClient, requestTimeout: Duration = .seconds(10),
        attempts: Int = 3, lockTimeout: Duration = .seconds(30),
        now: @escaping @Sendable () -> Date = { Date() }, clock: any Clock<Duration> = ContinuousClock()
    ) {
        self.profile = profile
        self.environment = environment
        self.homeDirectory = homeDirectory
        self.endpointOverride = endpointOverride
        self.client = SignInClient(httpClient: httpClient, timeout: requestTimeout)
        self.attempts = max(1, attempts)
        self.lockTimeout = lockTimeout
        self.now = now
        self.clock = clock
    }

    public var summary: String {
        "aws login session of profile \(profile) (cache \(LoginCacheLocation.cacheDirectoryPath(environment: environment, homeDirectory: homeDirectory)))"
    }

    public var refreshTraits: RefreshTraits { RefreshTraits(refreshBefore: Self.refreshBefore) }

    /// The AWS config file and the cache directory: what `LoginCacheWatcher` should watch for this source.
    public var watchedConfigFile: String {
        LoginCacheLocation.configFilePath(environment: environment, homeDirectory: homeDirectory)
    }
    public var watchedCacheDirectory: String {
        LoginCacheLocation.cacheDirectoryPath(environment: environment, homeDirectory: homeDirectory)
    }

    /// Whether the cache file (or the config) now differs from what credd itself last wrote: a new `aws login`,
    /// a refresh by the CLI or an SDK. credd's own atomic writes leave a file whose inode it recorded.
    public func changedByAnotherWriter() -> Bool {
        guard let location = try? location() else { return true }
        var st = stat()
        guard stat(location.cacheFile, &st) == 0 else { return true }
        return lastWrittenInode.withLockedValue { $0 } != UInt64(st.st_ino)
    }

    /// Where the profile's session is (reads the AWS config file).
    public func location() throws(SourceError) -> LoginCacheLocation {
        try LoginCacheLocation.locate(profile: profile, environment: environment, homeDirectory: homeDirectory)
    }

    /// The credentials in the cache file as they are, without refreshing (may be close to expiry or expired).
    public func cachedCredentials() async throws -> Credentials {
        try await readDocument(location()).credentials
    }

    public func fetch(logger: Logger) async throws -> Credentials {
        let location = try location()
        var logger = logger
        logger[metadataKey: "login.profile"] = "\(profile)"
        let document = try await readDocument(location)
        if isFresh(document) { return document.credentials }
        do {
            return try await refresh(document, location: location, logger: logger)
        } catch var error as SourceError {
            // The cached credentials may still have minutes left: the set can serve them meanwhile.
            if error.stillValid == nil {
                let newest = (try? await readDocument(location)) ?? document
                if newest.expiresAt > now() { error.stillValid = newest.credentials }
            }
            throw error
        }
    }

    private func refresh(_ document: LoginCacheDocument, location: LoginCacheLocation, logger: Logger) async throws -> Credentials {
        let lock = try await takeLock(location)
        defer { lock.release() }
        // Re-read under the lock: another credd, the CLI or an SDK may have refreshed meanwhile.
        var current = try await readDocument(location)
        if isFresh(current) {
            logger.info(
                "adopted aws login credentials another process refreshed",
                metadata: ["login.key_suffix": "\(current.accessKeyId.suffix(4))"])
            return current.credentials
        }
        let endpoint = try SignInEndpoint.resolve(
            region: location.region, override: endpointOverride, environment: environment, profile: profile)

        var attempt = 0
        var retriedWithNewerFile = false
        while true {
            attempt += 1
            let requestStart = now()
            do {
                let grant = try await client.refresh(
                    endpoint: endpoint, clientId: current.clientId, refreshToken: current.refreshToken,
                    key: current.dpopKey, profile: profile, now: requestStart, logger: logger)
                return try write(grant, requestStart: requestStart, over: current, location: location, logger: logger)
            } catch let error as SourceError {
                // An `aws login` (or an unlocked refresher) may have replaced the session while we asked:
                // a file with another refresh token is worth one more try, or is fresh enough to adopt.
                if let newer = try? await readDocument(location), newer.refreshToken != current.refreshToken {
                    if isFresh(newer) { return newer.credentials }
                    if !retriedWithNewerFile {
                        retriedWithNewerFile = true
                        current = newer
                        continue
                    }
                }
                guard error.disposition == .transient, attempt < attempts else { throw error }
                logger.warning(
                    "aws login refresh failed; retrying",
                    metadata: ["login.error": "\(error.code)", "login.attempt": "\(attempt)"])
                try await clock.sleep(for: .seconds(1 << (attempt - 1)))
            }
        }
    }

    func isFresh(_ document: LoginCacheDocument) -> Bool {
        document.expiresAt.timeIntervalSince(now()) > Double(Self.refreshBefore.components.seconds)
    }

    /// Reads and validates the cache file. A file that does not parse is read once more after 100 ms:
    /// the AWS CLI v2 rewrites it in place, so a reader can catch it half-written.
    func readDocument(_ location: LoginCacheLocation) async throws -> LoginCacheDocument {
        do {
            return try readDocumentOnce(location)
        } catch let error where error.code == "LoginCacheInvalid" {
            try await clock.sleep(for: .milliseconds(100))
            return try readDocumentOnce(location)
        }
    }

    func readDocumentOnce(_ location: LoginCacheLocation) throws(SourceError) -> LoginCacheDocument {
        switch LoginFileIO.read(location.cacheFile) {
        case .success(let data):
            return try LoginCacheDocument(data: data, path: location.cacheFile, profile: profile)
        case .failure(let failure) where failure.errno == ENOENT || failure.errno == ENOTDIR:
            throw SourceError(
                code: "LoginRequired",
                message: "login required: run `aws login --profile \(profile)` (there is no aws login cache file at "
                    + "\(location.cacheFile) for session \(location.loginSession)).",
                disposition: .needsAction)
        case .failure(let failure):
            throw SourceError(
                code: "LoginCacheUnreadable",
                message: "The aws login cache file \(location.cacheFile) cannot be read (\(failure.reason)): give "
                    + "\(Self.currentUser()) read and write access to \(location.cacheDirectory) and the files in it.",
                disposition: .needsAction)
        }
    }

    func takeLock(_ location: LoginCacheLocation) async throws -> LoginFileIO.ExclusiveLock {
        switch try await LoginFileIO.lock(location.lockFile, timeout: lockTimeout) {
        case .success(let lock):
            return lock
        case .failure(let failure) where failure.errno == EWOULDBLOCK:
            throw SourceError(
                code: "LoginCacheBusy",
                message: "Another process has held the lock \(location.lockFile) for more than "
                    + "\(lockTimeout.components.seconds) s, so credd did not refresh profile \(profile) this round; "
                    + "it tries again shortly.",
                disposition: .transient)
        case .failure(let failure):
            throw SourceError(
                code: "LoginCacheUnwritable",
                message: "credd cannot create its lock file \(location.lockFile) (\(failure.reason)), so it cannot "
                    + "refresh the aws login cache safely: give \(Self.currentUser()) write access to "
                    + "\(location.cacheDirectory).",
                disposition: .needsAction)
        }
    }

    func write(
        _ grant: SignInGrant, requestStart: Date, over document: LoginCacheDocument, location: LoginCacheLocation,
        logger: Logger
    ) throws -> Credentials {
        // Keep the fields of the newest parsable content (another writer may have added some); ours wins for
        // the credentials and refresh token, which Sign-In just issued.
        var base = document.original
        let expiration = Date(timeIntervalSince1970: requestStart.timeIntervalSince1970.rounded(.down) + Double(grant.expiresIn))
        if case .success(let latest) = LoginFileIO.read(location.cacheFile),
            (try? JSONSerialization.jsonObject(with: latest)) is [String: Any]
        {
            // botocore and the AWS CLI refresh without a lock: if one of them wrote a session issued after ours
            // while we asked Sign-In, theirs is the newest refresh token; keep it and serve its credentials.
            if let theirs = try? LoginCacheDocument(data: latest, path: location.cacheFile, profile: profile),
                theirs.refreshToken != document.refreshToken, theirs.refreshToken != grant.refreshToken,
                theirs.expiresAt >= expiration
            {
                logger.info(
                    "another process refreshed the aws login session meanwhile; keeping its newer session",
                    metadata: ["login.key_suffix": "\(theirs.accessKeyId.suffix(4))"])
                return theirs.credentials
            }
            base = latest
        }
        let data = try LoginCacheDocument.refreshed(base: base, grant: grant, now: requestStart)
        let credentials = Credentials(
            accessKeyId: grant.accessKeyId, secretAccessKey: grant.secretAccessKey, sessionToken: grant.sessionToken,
            expiration: expiration, accountId: document.accountId, isRoleCredentials: true)
        if case .failure(let failure) = LoginFileIO.replaceAtomically(location.cacheFile, with: data) {
            // The new credentials are good; serve them. The file keeps the previous refresh token, which the
            // service still accepts for a while, so the next refresh can still succeed once the disk is fixed.
            logger.error(
                "could not write the refreshed aws login cache",
                metadata: ["login.cache_file": "\(location.cacheFile)", "login.error": "\(failure.reason)"])
            return credentials
        }
        var st = stat()
        if stat(location.cacheFile, &st) == 0 { lastWrittenInode.withLockedValue { $0 = UInt64(st.st_ino) } }
        logger.info(
            "refreshed aws login credentials",
            metadata: [
                "login.key_suffix": "\(grant.accessKeyId.suffix(4))",
                "login.expires": "\(RFC3339.format(expiration))",
            ])
        return credentials
    }

    static func currentUser() -> String {
        let uid = getuid()
        if let entry = getpwuid(uid), let name = entry.pointee.pw_name {
            return "user \(String(cString: name)) (uid \(uid))"
        }
        return "uid \(uid)"
    }
}
