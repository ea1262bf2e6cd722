// What `credd doctor` looks at: credd's sockets, the caller's environment and AWS config, IMDS, the login cache, STS.
import AsyncHTTPClient
import CreddCrypto
import Foundation
import NIOCore
import NIOHTTP1

#if canImport(Glibc)
import Glibc
#endif

/// Gathers the facts (`DoctorFacts`) and turns them into a report with `DoctorChecks`. Nothing it keeps or
/// reports holds a secret: tokens and credentials are read, compared or summarised, and dropped.
public struct DoctorProbe: Sendable {
    public var config: CreddConfig
    /// `--set`: the report covers this set and the sets it is made from; nil covers every set.
    public var set: String?
    /// The caller: doctor runs as the user whose programs should use credd.
    public var uid: UInt32
    public var environment: [String: String]
    public var home: String
    public var now: @Sendable () -> Date

    public init(
        config: CreddConfig, set: String?, uid: UInt32 = getuid(), environment: [String: String],
        home: String, now: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.config = config
        self.set = set
        self.uid = uid
        self.environment = environment
        self.home = home
        self.now = now
    }

    /// The config could not be loaded: report that, and what can be checked without it.
    public static func reportWithoutConfig(path: String, error: String, environment: [String: String], home: String) -> DoctorReport {
        let env = CallerEnvironment(environment: environment)
        let profile = readCallerProfile(env: env, environment: environment, home: home)
        return DoctorReport(config: path, set: nil, checks: [
            DoctorChecks.config(path: path, error: error, warnings: []),
            DoctorChecks.conflicts(env: env, profile: profile),
            DoctorChecks.stsRegional(env: env, profile: profile, configWarnings: []),
        ])
    }

    /// The sets in scope: `set` and its `from:` chain, or all.
    var setsInScope: [SetConfig] {
        guard let set else { return config.sets }
        var out: [SetConfig] = []
        var current = config.set(named: set)
        while let c = current, !out.contains(where: { $0.name == c.name }) {
            out.append(c)
            if case .assumeRole(let ar) = c.source { current = config.set(named: ar.from) } else { current = nil }
        }
        return out
    }

    /// The set whose access, token and URI the environment checks are about.
    var focusSet: String { self.set ?? (config.set(named: "default") != nil ? "default" : config.sets.first?.name ?? "default") }

    /// The token file credd expects for the focus set.
    var expectedTokenFile: String { config.set(named: focusSet)?.access?.tokenFile ?? config.listen.tokenFile }

    var exportHint: String { "eval \"$(credd env\(set.map { " \($0)" } ?? ""))\"" }

    public func run() async -> DoctorReport {
        let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: Self.clientConfiguration)
        let report = await run(http: http)
        try? await http.shutdown()
        return report
    }

    static var clientConfiguration: HTTPClient.Configuration {
        var c = HTTPClient.Configuration()
        c.timeout = .init(connect: .seconds(2), read: .seconds(3))
        c.connectionPool = .init(idleTimeout: .seconds(1))
        c.connectionPool.retryConnectionEstablishment = false
        c.redirectConfiguration = .disallow
        return c
    }

    func run(http: HTTPClient) async -> DoctorReport {
        let env = CallerEnvironment(environment: environment)
        let now = self.now
        var checks: [DoctorCheck] = []
        let configName = config.file ?? "(built-in defaults)"
        if let set, config.set(named: set) == nil {
            checks.append(.fail(
                "config", .credd, "config \(configName) has no credential set named \"\(set)\" (sets: \(config.sets.map(\.name).joined(separator: ", ")))",
                fix: "use one of those names with --set"))
            return DoctorReport(config: configName, set: set, checks: checks)
        }
        checks.append(DoctorChecks.config(path: configName, error: nil, warnings: []))
        let socketGroup = config.listen.unix?.group

        // credd's listeners.
        let unixPath = config.listen.unix?.path
        let unixProbe = unixPath.map { Self.connect(unixPath: $0) }
        checks.append(DoctorChecks.unixSocket(path: unixPath, probe: unixProbe, uid: uid, group: socketGroup))
        if config.listen.tcp.isEmpty { checks.append(DoctorChecks.noTCPListener()) }
        for address in config.listen.tcp {
            checks.append(DoctorChecks.tcpListener(address, probe: Self.connect(host: address.host, port: address.port, timeout: 2)))
        }
        var statuses: [SetStatus]?
        var access: HTTPProbe?
        if let unixPath, unixProbe == .connected {
            // GET, not HEAD: credd's error answers to HEAD carry a body, which would spoil the next answer on
            // the kept-alive connection. The credentials in a 200 body are dropped unread.
            access = await Self.perform(http, unixSocket: unixPath, path: "/v1/credentials/\(focusSet)", method: .GET).0
            let (status, body) = await Self.perform(http, unixSocket: unixPath, path: "/v1/status", method: .GET)
            if status.answer?.status == 200, let body { statuses = Self.decodeStatuses(body) }
        }
        checks.append(DoctorChecks.callerAccess(uid: uid, set: focusSet, probe: access))
        let token = Self.readToken(expectedTokenFile)
        checks.append(DoctorChecks.tokenFile(path: expectedTokenFile, fact: token.fact, uid: uid, group: socketGroup))

        // The caller's environment.
        let profile = Self.readCallerProfile(env: env, environment: environment, home: home)
        checks.append(DoctorChecks.fullURI(
            env: env, listeners: config.listen.tcp, sets: config.sets.map(\.name), expectedSet: set, exportHint: exportHint))
        var fileMatches: Bool?
        var callerToken: [UInt8]?
        if let path = environment["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"], !path.isEmpty {
            let theirs = Self.readToken(path)
            callerToken = theirs.bytes
            if let mine = token.bytes, let bytes = theirs.bytes { fileMatches = constantTimeEquals(bytes, mine) }
            else if theirs.fact != .valid { fileMatches = false }
        } else if let inline = environment["AWS_CONTAINER_AUTHORIZATION_TOKEN"], !inline.isEmpty {
            callerToken = Array(inline.utf8)
        }
        var inlineMatches: Bool?
        if let inline = environment["AWS_CONTAINER_AUTHORIZATION_TOKEN"], !inline.isEmpty, let mine = token.bytes {
            inlineMatches = constantTimeEquals(Array(inline.utf8), mine)
        }
        checks.append(DoctorChecks.tokenVariables(
            env: env, expectedFile: expectedTokenFile, fileMatches: fileMatches, inlineMatches: inlineMatches, exportHint: exportHint))
        checks.append(DoctorChecks.conflicts(env: env, profile: profile))
        var fetchURL: String?
        var fetch: HTTPProbe?
        if let uri = environment["AWS_CONTAINER_CREDENTIALS_FULL_URI"], !uri.isEmpty, DoctorChecks.parseFullURI(uri).problem == nil {
            fetchURL = uri
            fetch = await Self.fetchCredentials(http, url: uri, token: callerToken)
        }
        checks.append(DoctorChecks.sdkFetch(url: fetchURL, probe: fetch, now: now()))

        // credd's sets.
        checks += DoctorChecks.sets(statuses, only: set, now: now())

        // The sources in scope.
        let inScope = setsInScope
        var samples: [ClockSample] = []
        var imdsFacts: IMDSFacts?
        if inScope.contains(where: { if case .imds = $0.source { return true } else { return false } }) {
            imdsFacts = await probeIMDS(http)
            for probe in [imdsFacts?.tokenPut, imdsFacts?.roleList, imdsFacts?.credentials] {
                if let a = probe?.answer, let d = a.date, let local = a.localMidpoint {
                    samples.append(ClockSample(upstream: "IMDS at \(config.imds.endpoint)", upstreamDate: d, localDate: local))
                    break
                }
            }
        }
        checks += DoctorChecks.imds(imdsFacts, now: now())
        let logins: [LoginFacts] = inScope.compactMap { s in
            guard case .login(let l) = s.source else { return nil }
            return probeLogin(set: s.name, profile: l.profile, status: statuses?.first { $0.name == s.name })
        }
        checks += DoctorChecks.login(logins, callerProfile: profile, now: now())
        checks.append(DoctorChecks.stsRegional(env: env, profile: profile, configWarnings: config.warnings(environment: RuntimeEnvironment(uid: uid, environment: environment))))
        for s in inScope {
            guard case .assumeRole(let ar) = s.source,
                case .success(let endpoint) = STSEndpoint.resolve(
                    setName: s.name, region: ar.region, endpoint: ar.endpoint, allowGlobalEndpoint: ar.allowGlobalEndpoint,
                    environment: environment)
            else { continue }
            if let a = await Self.perform(http, url: endpoint.url.absoluteString, method: .GET, timeout: .seconds(3)).0.answer,
                let d = a.date, let local = a.localMidpoint
            {
                samples.append(ClockSample(upstream: "STS at \(endpoint.url.absoluteString)", upstreamDate: d, localDate: local))
            }
        }
        checks.append(DoctorChecks.clock(samples))
        return DoctorReport(config: configName, set: set, checks: checks)
    }

    // ---- IMDS ----------------------------------------------------------------------------------------

    func probeIMDS(_ http: HTTPClient) async -> IMDSFacts {
        let s = config.imds
        var f = IMDSFacts(endpoint: s.endpoint, allowV1: s.allowV1, configuredRole: s.role, disabled: s.disabled)
        guard !s.disabled else { return f }
        let timeout = s.timeout
        guard let url = URL(string: s.endpoint), let host = url.host else {
            f.connect = .failed("\(s.endpoint) is not a URL")
            return f
        }
        let bareHost = host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host
        f.connect = Self.connect(host: bareHost, port: url.port ?? 80, timeout: max(1, timeInterval(timeout)))
        guard f.connect == .connected else { return f }
        var headers = HTTPHeaders([("X-aws-ec2-metadata-token-ttl-seconds", "60")])
        let (put, tokenBody) = await Self.perform(http, url: s.endpoint + "/latest/api/token", method: .PUT, headers: headers, timeout: timeout)
        f.tokenPut = put
        var token: String?
        if put.answer?.status == 200, let tokenBody {
            token = String(decoding: tokenBody, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        } else if !(s.allowV1 && [403, 404, 405].contains(put.answer?.status ?? 0)) {
            return f
        }
        headers = HTTPHeaders()
        if let token { headers.add(name: "X-aws-ec2-metadata-token", value: token) }
        var role = s.role
        let (list, listBody) = await Self.perform(
            http, url: s.endpoint + "/latest/meta-data/iam/security-credentials/", method: .GET, headers: headers, timeout: timeout)
        f.roleList = list
        if list.answer?.status == 200, let listBody {
            f.roleName = IMDSParsing.roleName(listBody)
            role = role ?? f.roleName
        }
        guard let role else { return f }
        let path = "/latest/meta-data/iam/security-credentials/\(role)"
        let (creds, body) = await Self.perform(http, url: s.endpoint + path, method: .GET, headers: headers, timeout: timeout)
        f.credentials = creds
        if creds.answer?.status == 200, let body {
            do {
                let c = try IMDSParsing.credentials(body, where: s.endpoint + path)
                f.document = .success(CredentialsSummary(keySuffix: c.keySuffix, expiration: c.expiration))
            } catch let e as SourceError {
                f.document = .failure(e)
            } catch {
                f.document = .failure(SourceError(code: "IMDSBadResponse", message: "IMDS answered with an unusable credentials document."))
            }
        }
        return f
    }

    // ---- aws login -----------------------------------------------------------------------------------

    func probeLogin(set: String, profile: String, status: SetStatus?) -> LoginFacts {
        var f = LoginFacts(setName: set, profile: profile, status: status)
        do {
            let location = try LoginCacheLocation.locate(profile: profile, environment: environment, homeDirectory: home)
            f.location = location
            switch LoginFileIO.read(location.cacheFile) {
            case .success(let data):
                do {
                    let doc = try LoginCacheDocument(data: data, path: location.cacheFile, profile: profile)
                    f.cache = .valid(expiresAt: doc.expiresAt)
                } catch {
                    f.cache = .invalid(error)
                }
            case .failure(let e):
                f.cache = e.errno == ENOENT ? .missing : .unreadable(reason: e.reason)
            }
            f.directoryWritable = access(location.cacheDirectory, W_OK) == 0
            f.fileWritable = access(location.cacheFile, W_OK) == 0 || (errno == ENOENT && f.directoryWritable)
        } catch {
            f.locateError = error
        }
        return f
    }

    // ---- the caller's AWS config ---------------------------------------------------------------------

    static func readCallerProfile(env: CallerEnvironment, environment: [String: String], home: String) -> CallerProfileFacts {
        let configFile = LoginCacheLocation.configFilePath(environment: environment, homeDirectory: home)
        var credentialsFile = environment["AWS_SHARED_CREDENTIALS_FILE"].flatMap { $0.isEmpty ? nil : $0 } ?? home + "/.aws/credentials"
        if credentialsFile.hasPrefix("~/") { credentialsFile = home + credentialsFile.dropFirst() }
        var problems: [String] = []
        func text(_ path: String) -> String? {
            switch LoginFileIO.read(path) {
            case .success(let data): return String(decoding: data, as: UTF8.self)
            case .failure(let e):
                if e.errno != ENOENT { problems.append("\(path) cannot be read (\(e.reason))") }
                return nil
            }
        }
        var facts = CallerProfileFacts.read(
            profile: env.activeProfile, configFile: configFile, configText: text(configFile), credentialsFile: credentialsFile,
            credentialsText: text(credentialsFile))
        facts.problems += problems
        return facts
    }

    // ---- tokens --------------------------------------------------------------------------------------

    struct TokenRead {
        var fact: TokenFileFact
        /// The token, when valid; compared and dropped, never reported.
        var bytes: [UInt8]?
    }

    static func readToken(_ path: String) -> TokenRead {
        switch LoginFileIO.read(path) {
        case .failure(let e):
            return TokenRead(fact: e.errno == ENOENT ? .missing : .unreadable(reason: e.reason))
        case .success(let data):
            let bytes = Array(data)
            if bytes.isEmpty { return TokenRead(fact: .empty) }
            if bytes.last == 0x0A || bytes.last == 0x0D { return TokenRead(fact: .trailingNewline) }
            guard bytes.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { return TokenRead(fact: .illegalCharacters) }
            return TokenRead(fact: .valid, bytes: bytes)
        }
    }

    // ---- HTTP ------------------------------------------------------------------------------------------

    static func decodeStatuses(_ body: [UInt8]) -> [SetStatus]? {
        struct Document: Decodable { var sets: [SetStatus] }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try? decoder.decode(Document.self, from: Data(body)).sets
    }

    /// A request over credd's Unix socket.
    static func perform(_ http: HTTPClient, unixSocket: String, path: String, method: HTTPMethod) async -> (HTTPProbe, [UInt8]?) {
        guard let url = URL(httpURLWithSocketPath: unixSocket, uri: path) else { return (.failed("\(unixSocket) is not a usable socket path"), nil) }
        return await perform(http, url: url.absoluteString, method: method, timeout: .seconds(3))
    }

    /// GET the container-credentials URL as an SDK does (2-second timeout, the token verbatim).
    static func fetchCredentials(_ http: HTTPClient, url: String, token: [UInt8]?) async -> HTTPProbe {
        var headers = HTTPHeaders()
        if let token { headers.add(name: "Authorization", value: String(decoding: token, as: UTF8.self)) }
        let (probe, body) = await perform(http, url: url, method: .GET, headers: headers, timeout: .seconds(2))
        guard case .answered(var a) = probe, a.status == 200 else { return probe }
        a.credentials = summarizeCredentials(body ?? [])
        return .answered(a)
    }

    /// Keeps the key's last four characters and the expiry; says which fields an SDK would miss.
    static func summarizeCredentials(_ body: [UInt8]) -> CredentialsSummary? {
        guard let json = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else { return nil }
        let missing = ["AccessKeyId", "SecretAccessKey", "Token", "Expiration"].filter { ((json[$0] as? String) ?? "").isEmpty }
        let key = (json["AccessKeyId"] as? String) ?? ""
        return CredentialsSummary(
            keySuffix: String(key.suffix(4)), expiration: (json["Expiration"] as? String).flatMap(RFC3339.parse), missingFields: missing)
    }

    /// One request; the body is returned for the caller to read and drop (it may hold a secret).
    static func perform(
        _ http: HTTPClient, url: String, method: HTTPMethod, headers: HTTPHeaders = HTTPHeaders(), timeout: Duration
    ) async -> (HTTPProbe, [UInt8]?) {
        var request = HTTPClientRequest(url: url)
        request.method = method
        request.headers = headers
        let started = Date()
        do {
            let response = try await http.execute(request, timeout: .nanoseconds(Int64(timeInterval(timeout) * 1e9)))
            let body = Array(buffer: try await response.body.collect(upTo: 1 << 20))
            let ended = Date()
            var answer = HTTPAnswer(
                status: Int(response.status.code), date: response.headers.first(name: "Date").flatMap(parseHTTPDate),
                localMidpoint: started.addingTimeInterval(ended.timeIntervalSince(started) / 2))
            if answer.status >= 400, let json = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] {
                answer.errorCode = json["code"] as? String
                answer.errorMessage = json["message"] as? String
            }
            return (.answered(answer), body)
        } catch let e as HTTPClientError where e == .deadlineExceeded || e == .readTimeout {
            return (.timedOut, nil)
        } catch {
            return (.failed(describe(error)), nil)
        }
    }

    /// An HTTP-date (RFC 9110 IMF-fixdate, "Sun, 06 Nov 1994 08:49:37 GMT").
    static func parseHTTPDate(_ text: String) -> Date? {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "GMT")
        f.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        return f.date(from: text)
    }

    // ---- raw connections: exactly why a connection fails (errno), before any HTTP --------------------

    /// Connects to a Unix socket and says exactly how that went (used by `credd status --watch` too).
    public static func connect(unixPath: String) -> ConnectProbe {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return .failed(String(cString: strerror(errno))) }
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(unixPath.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { return .failed("the socket path is too long") }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let result = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        return result == 0 ? .connected : classify(errno)
    }

    static func connect(host: String, port: Int, timeout: TimeInterval) -> ConnectProbe {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_NUMERICSERV
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &list)
        guard rc == 0, let first = list else { return .failed("cannot resolve \(host): \(String(cString: gai_strerror(rc)))") }
        defer { freeaddrinfo(list) }
        let fd = socket(first.pointee.ai_family, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return .failed(String(cString: strerror(errno))) }
        defer { close(fd) }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        if Glibc.connect(fd, first.pointee.ai_addr, first.pointee.ai_addrlen) == 0 { return .connected }
        guard errno == EINPROGRESS else { return classify(errno) }
        var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        let ready = poll(&pfd, 1, Int32(timeout * 1000))
        if ready == 0 { return .timedOut }
        if ready < 0 { return .failed(String(cString: strerror(errno))) }
        var error: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        _ = getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length)
        return error == 0 ? .connected : classify(error)
    }

    static func classify(_ code: Int32) -> ConnectProbe {
        switch code {
        case ENOENT: return .noSuchSocket
        case EACCES, EPERM: return .permissionDenied
        case ECONNREFUSED: return .refused
        case ETIMEDOUT: return .timedOut
        default: return .failed(String(cString: strerror(code)))
        }
    }
}
