// credd's configuration: one typed, validated value built from one YAML file or the built-in defaults.
import Foundation
import Yams

/// A loopback TCP address credd listens on.
public struct TCPAddress: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }
    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// Parses "127.0.0.1:9702", "[::1]:9702", "localhost:9702"; refuses anything not loopback.
    public static func parse(_ text: String) -> Result<TCPAddress, AddressError> {
        var host: Substring
        var portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return .failure(AddressError("\"\(text)\" has no closing ]")) }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { return .failure(AddressError("\"\(text)\" needs a port, like [::1]:9702")) }
            portText = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":"), text.firstIndex(of: ":") == colon else {
                return .failure(AddressError("\"\(text)\" must be host:port, like 127.0.0.1:9702 (IPv6 in brackets)"))
            }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        }
        guard let port = Int(portText), (0...65535).contains(port) else {
            return .failure(AddressError("\"\(text)\" has no valid port (0–65535)"))
        }
        let h = String(host)
        guard isLoopback(h) else {
            return .failure(AddressError("\(h) is not a loopback address; credd serves credentials on loopback only (127.0.0.0/8, ::1 or localhost), never on a network interface"))
        }
        return .success(TCPAddress(host: h == "localhost" ? "127.0.0.1" : h, port: port))
    }

    public static func isLoopback(_ host: String) -> Bool {
        if host == "localhost" || host == "::1" { return true }
        let parts = host.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4, parts.allSatisfy({ UInt8($0) != nil }) else { return false }
        return parts[0] == "127"
    }
}

public struct AddressError: Error, Sendable {
    public let reason: String
    init(_ reason: String) { self.reason = reason }
}

public struct UnixListenConfig: Sendable, Equatable {
    public var path: String
    public var mode: UInt32
    public var group: String?
    public init(path: String, mode: UInt32, group: String? = nil) {
        self.path = path
        self.mode = mode
        self.group = group
    }
}

public struct ListenConfig: Sendable, Equatable {
    public var unix: UnixListenConfig?
    public var tcp: [TCPAddress]
    public var tokenFile: String
}

/// Who may read a set: Unix-socket callers by uid/gid, TCP callers by token.
public struct AccessConfig: Sendable, Equatable {
    public var allowUids: [UInt32]
    public var allowGids: [UInt32]
    public init(allowUids: [UInt32], allowGids: [UInt32]) {
        self.allowUids = allowUids
        self.allowGids = allowGids
    }
}

public struct SetAccessConfig: Sendable, Equatable {
    public var allowUids: [UInt32]?
    public var allowGids: [UInt32]?
    public var tokenFile: String?
    public init(allowUids: [UInt32]? = nil, allowGids: [UInt32]? = nil, tokenFile: String? = nil) {
        self.allowUids = allowUids
        self.allowGids = allowGids
        self.tokenFile = tokenFile
    }
}

public struct LoginSetConfig: Sendable, Equatable {
    public var profile: String
    public var endpoint: String?
}

public struct AssumeRoleSetConfig: Sendable, Equatable {
    public var from: String
    public var roleArn: String
    public var roleSessionName: String?
    public var duration: Duration
    public var externalId: String?
    public var policy: String?
    public var policyFile: String?
    public var sourceIdentity: String?
    public var region: String
    public var endpoint: String?
    public var allowGlobalEndpoint: Bool
}

public enum SourceConfig: Sendable, Equatable {
    case imds
    case login(LoginSetConfig)
    case assumeRole(AssumeRoleSetConfig)

    public var kind: String {
        switch self {
        case .imds: return "imds"
        case .login: return "login"
        case .assumeRole: return "assume-role"
        }
    }
}

public struct SetConfig: Sendable, Equatable {
    public var name: String
    public var source: SourceConfig
    public var access: SetAccessConfig?
    public init(name: String, source: SourceConfig, access: SetAccessConfig? = nil) {
        self.name = name
        self.source = source
        self.access = access
    }
}

public struct ServerConfig: Sendable, Equatable {
    /// How long a request waits for a set's first credentials before a 503 (a cold start).
    public var coldStartWait: Duration = .milliseconds(90)
    /// A request's head must arrive within this time (slowloris).
    public var headerTimeout: Duration = .seconds(10)
    /// Idle keep-alive connections are closed after this.
    public var idleTimeout: Duration = .seconds(300)
    public var maxConnections: Int = 16384
}

public struct LogConfig: Sendable, Equatable {
    public var level: String = "info"
    /// One audit line per credential request.
    public var audit: Bool = true
}

public struct CreddConfig: Sendable, Equatable {
    /// The file it came from, or nil for built-in defaults.
    public var file: String?
    public var listen: ListenConfig
    public var access: AccessConfig
    public var imds: IMDSSettings
    public var sets: [SetConfig]
    public var server: ServerConfig
    public var log: LogConfig

    public func set(named name: String) -> SetConfig? { sets.first { $0.name == name } }
}

/// Where credd runs: decides default paths and ports.
public struct RuntimeEnvironment: Sendable {
    public var uid: UInt32
    public var environment: [String: String]
    public var home: String

    public init(uid: UInt32 = getuid(), environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.uid = uid
        self.environment = environment
        self.home = environment["HOME"] ?? (uid == 0 ? "/root" : "/")
    }

    public var isSystemInstance: Bool { uid == 0 }

    /// `--config`, else `$CREDD_CONFIG`, else `/etc/credd/credd.yaml` for root, else the XDG path.
    public func configPath(explicit: String?) -> (path: String, explicit: Bool) {
        if let explicit { return (explicit, true) }
        if let env = environment["CREDD_CONFIG"], !env.isEmpty { return (env, true) }
        if isSystemInstance { return ("/etc/credd/credd.yaml", false) }
        let base = environment["XDG_CONFIG_HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? "\(home)/.config"
        return ("\(base)/credd/credd.yaml", false)
    }

    /// `$RUNTIME_DIRECTORY`, `/run/credd` for root, `$XDG_RUNTIME_DIR/credd` otherwise.
    public var runtimeDirectory: String {
        if let dir = environment["RUNTIME_DIRECTORY"]?.split(separator: ":").first, !dir.isEmpty { return String(dir) }
        if isSystemInstance { return "/run/credd" }
        if let xdg = environment["XDG_RUNTIME_DIR"], !xdg.isEmpty { return "\(xdg)/credd" }
        return "/tmp/credd-\(uid)"
    }

    public var defaultTCPPort: Int { isSystemInstance ? 9702 : 9703 }

    public var imdsEndpoint: String {
        if let e = environment["AWS_EC2_METADATA_SERVICE_ENDPOINT"], !e.isEmpty { return trimSlash(e) }
        let mode = environment["AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE"]?.lowercased() == "ipv6"
        return IMDSSettings.defaultEndpoint(mode: mode ? .ipv6 : .ipv4)
    }
}

func trimSlash(_ s: String) -> String {
    var s = s
    while s.hasSuffix("/") { s.removeLast() }
    return s
}

extension CreddConfig {
    /// Built-in defaults: one `default` set from IMDS, socket and token in the runtime directory.
    public static func defaults(_ env: RuntimeEnvironment) -> CreddConfig {
        let dir = env.runtimeDirectory
        return CreddConfig(
            file: nil,
            listen: ListenConfig(
                unix: UnixListenConfig(path: "\(dir)/credd.sock", mode: 0o660, group: nil),
                tcp: [TCPAddress(host: "127.0.0.1", port: env.defaultTCPPort)],
                tokenFile: "\(dir)/token"),
            access: AccessConfig(allowUids: [env.uid, 0].uniqued(), allowGids: []),
            imds: IMDSSettings(
                endpoint: env.imdsEndpoint,
                disabled: env.environment["AWS_EC2_METADATA_DISABLED"]?.lowercased() == "true"),
            sets: [SetConfig(name: "default", source: defaultSource(env), access: nil)],
            server: ServerConfig(),
            log: LogConfig())
    }

    /// Without a config file a user instance serves the `aws login` profile (`AWS_PROFILE`, else `default`)
    /// when it has a `login_session`, so `aws login` then `credd serve` just works; otherwise IMDS.
    static func defaultSource(_ env: RuntimeEnvironment) -> SourceConfig {
        guard !env.isSystemInstance else { return .imds }
        let profile = LoginCacheLocation.defaultProfile(environment: env.environment)
        if LoginCacheLocation.profileHasLoginSession(profile: profile, environment: env.environment, homeDirectory: env.home) {
            return .login(LoginSetConfig(profile: profile, endpoint: nil))
        }
        return .imds
    }

    /// Loads the config file (or the defaults when no file exists and none was named explicitly).
    public static func load(explicitPath: String?, environment env: RuntimeEnvironment) throws -> CreddConfig {
        let (path, explicit) = env.configPath(explicit: explicitPath)
        guard FileManager.default.fileExists(atPath: path) else {
            if explicit {
                throw ConfigError(
                    file: path, key: "",
                    message: "the config file does not exist. Create it (see config/credd.yaml for an annotated example) or leave --config and CREDD_CONFIG unset to use the built-in defaults.")
            }
            return defaults(env)
        }
        let text: String
        do {
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            guard let s = String(data: data, encoding: .utf8) else {
                throw ConfigError(file: path, key: "", message: "the file is not valid UTF-8 text.")
            }
            text = s
        } catch let e as ConfigError {
            throw e
        } catch {
            throw ConfigError(file: path, key: "", message: "cannot read the file (\(error.localizedDescription)); check its permissions.")
        }
        return try parse(text, file: path, environment: env)
    }

    /// Parses and validates YAML text.
    public static func parse(_ text: String, file: String, environment env: RuntimeEnvironment) throws -> CreddConfig {
        let root: Node?
        do {
            // The basic resolver: credd reads every scalar as text itself, and the default resolver's tag patterns are
            // NSRegularExpressions, which load ICU's regex engine and data (resident memory) for nothing.
            root = try Yams.compose(yaml: text, .basic)
        } catch let e as YamlError {
            throw ConfigError(file: file, key: "", message: "not valid YAML: \(describeYAML(e))")
        } catch {
            throw ConfigError(file: file, key: "", message: "not valid YAML: \(error)")
        }
        var config = defaults(env)
        config.file = file
        guard let root else { return config }  // an empty file means the defaults
        let top = try ConfigNode(node: root, path: "", file: file)
            .mapping(allowed: ["listen", "access", "imds", "credentials", "server", "log"])

        if let listen = top["listen"] {
            let m = try listen.mapping(allowed: ["unix", "tcp", "token_file"])
            if let unix = m["unix"] {
                if unix.isNull {
                    config.listen.unix = nil
                } else {
                    let u = try unix.mapping(allowed: ["path", "mode", "group"])
                    var cfg = config.listen.unix ?? UnixListenConfig(path: "\(env.runtimeDirectory)/credd.sock", mode: 0o660)
                    if let p = u["path"] { cfg.path = try absolutePath(p) }
                    if let mode = u["mode"] { cfg.mode = try fileMode(mode) }
                    if let g = u["group"] { cfg.group = try g.nonEmptyString() }
                    config.listen.unix = cfg
                }
            }
            if let tcp = m["tcp"] {
                config.listen.tcp = try tcp.isNull ? [] : tcp.list().map { item in
                    switch TCPAddress.parse(try item.string()) {
                    case .success(let a): return a
                    case .failure(let why): throw item.error(why.reason + ".")
                    }
                }
            }
            if let t = m["token_file"] { config.listen.tokenFile = try absolutePath(t) }
        }

        if let access = top["access"] {
            let m = try access.mapping(allowed: ["allow_uids", "allow_gids"])
            if let u = m["allow_uids"] { config.access.allowUids = try uids(u) }
            if let g = m["allow_gids"] { config.access.allowGids = try gids(g) }
        }

        if let imds = top["imds"] {
            let m = try imds.mapping(allowed: ["endpoint", "endpoint_mode", "allow_v1", "role", "poll_interval", "timeout", "attempts", "token_ttl"])
            if let mode = m["endpoint_mode"] {
                switch try mode.string().lowercased() {
                case "ipv4": config.imds.endpoint = IMDSSettings.defaultEndpoint(mode: .ipv4)
                case "ipv6": config.imds.endpoint = IMDSSettings.defaultEndpoint(mode: .ipv6)
                default: throw mode.error("expected ipv4 or ipv6.")
                }
            }
            if let e = m["endpoint"] {
                let s = try e.nonEmptyString()
                guard s.hasPrefix("http://") || s.hasPrefix("https://") else {
                    throw e.error("\"\(s)\" must be an http:// URL, like http://169.254.169.254.")
                }
                config.imds.endpoint = trimSlash(s)
            }
            if let v = m["allow_v1"] { config.imds.allowV1 = try v.bool() }
            if let r = m["role"] {
                let role = try r.nonEmptyString()
                guard !role.contains("/") else { throw r.error("a role name cannot contain /.") }
                config.imds.role = role
            }
            if let p = m["poll_interval"] { config.imds.pollInterval = try p.duration(minimum: .seconds(1), maximum: .seconds(3600)) }
            if let t = m["timeout"] { config.imds.timeout = try t.duration(minimum: .milliseconds(10), maximum: .seconds(30)) }
            if let a = m["attempts"] { config.imds.attempts = try a.int(in: 1...10) }
            if let t = m["token_ttl"] { config.imds.tokenTTL = try t.int(in: 60...21600) }
        }

        if let server = top["server"] {
            let m = try server.mapping(allowed: ["cold_start_wait", "header_timeout", "idle_timeout", "max_connections"])
            if let w = m["cold_start_wait"] { config.server.coldStartWait = try w.duration(maximum: .seconds(1)) }
            if let t = m["header_timeout"] { config.server.headerTimeout = try t.duration(minimum: .milliseconds(100), maximum: .seconds(120)) }
            if let t = m["idle_timeout"] { config.server.idleTimeout = try t.duration(minimum: .seconds(1)) }
            if let c = m["max_connections"] { config.server.maxConnections = try c.int(in: 1...1_000_000) }
        }

        if let log = top["log"] {
            let m = try log.mapping(allowed: ["level", "audit"])
            if let l = m["level"] {
                let level = try l.string().lowercased()
                guard ["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(level) else {
                    throw l.error("expected one of trace, debug, info, notice, warning, error, critical.")
                }
                config.log.level = level
            }
            if let a = m["audit"] { config.log.audit = try a.bool() }
        }

        if let creds = top["credentials"] {
            var sets: [SetConfig] = []
            for (name, node) in try creds.namedEntries() {
                guard isValidSetName(name) else {
                    throw node.error("\"\(name)\" is not a valid set name; use letters, digits, '-', '_' and '.', up to 64 characters.")
                }
                sets.append(try setConfig(name: name, node: node))
            }
            guard !sets.isEmpty else { throw creds.error("define at least one credential set, e.g. default: {source: imds}.") }
            config.sets = sets
            try validateChains(config.sets, node: creds)
            for (set, (_, node)) in zip(sets, try creds.namedEntries()) {
                guard case .assumeRole(let ar) = set.source else { continue }
                let problems = AssumeRoleSource.validationProblems(setName: set.name, config: ar, environment: env.environment)
                if let first = problems.first { throw node.error(first) }
            }
        }
        return config
    }

    public static func isValidSetName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 64 && name != "." && name != ".."
            && name.utf8.allSatisfy { c in
                (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x2D || c == 0x5F || c == 0x2E
            }
    }

    static func setConfig(name: String, node: ConfigNode) throws -> SetConfig {
        guard case .mapping = node.node else { throw node.error("expected a mapping with a source, e.g. {source: imds}.") }
        let sourceKeys: [String: Set<String>] = [
            "imds": [],
            "login": ["profile", "endpoint"],
            "assume-role": ["from", "role_arn", "role_session_name", "duration", "external_id", "policy", "policy_file",
                            "source_identity", "region", "endpoint", "allow_global_endpoint"],
        ]
        // Read `source` first so the allowed keys follow from it.
        guard case .mapping(let raw) = node.node, let sourceNode = raw["source"] else {
            throw node.error("missing \"source\"; one of imds, login, assume-role.")
        }
        let kind = try node.child("source", sourceNode).string()
        guard let extra = sourceKeys[kind] else {
            throw node.child("source", sourceNode).error("unknown source \"\(kind)\"; use imds, login or assume-role.")
        }
        let m = try node.mapping(allowed: extra.union(["source", "access"]))
        var access: SetAccessConfig?
        if let a = m["access"] {
            let am = try a.mapping(allowed: ["allow_uids", "allow_gids", "token_file"])
            access = SetAccessConfig(
                allowUids: try am["allow_uids"].map(uids), allowGids: try am["allow_gids"].map(gids),
                tokenFile: try am["token_file"].map(absolutePath))
        }
        let source: SourceConfig
        switch kind {
        case "login":
            source = .login(LoginSetConfig(
                profile: try m["profile"]?.nonEmptyString() ?? "default",
                endpoint: try m["endpoint"].map { e in
                    let s = try e.nonEmptyString()
                    guard s.hasPrefix("https://") || s.hasPrefix("http://") else { throw e.error("must be a URL.") }
                    return trimSlash(s)
                }))
        case "assume-role":
            guard let from = m["from"] else { throw node.error("missing \"from\": the set whose credentials assume the role.") }
            guard let arn = m["role_arn"] else { throw node.error("missing \"role_arn\", e.g. arn:aws:iam::123456789012:role/deploy.") }
            guard let region = m["region"] else {
                throw node.error("missing \"region\": credd calls the regional STS endpoint (sts.REGION.amazonaws.com), whose version 2 session tokens work in every region.")
            }
            let arnText = try arn.nonEmptyString()
            guard arnText.hasPrefix("arn:aws"), arnText.contains(":role/") else {
                throw arn.error("\"\(arnText)\" is not a role ARN like arn:aws:iam::123456789012:role/NAME.")
            }
            let regionText = try region.nonEmptyString()
            guard regionText.range(of: #"^[a-z]{2}(-[a-z]+)+-\d+$"#, options: .regularExpression) != nil else {
                throw region.error("\"\(regionText)\" is not an AWS region like eu-west-1.")
            }
            var cfg = AssumeRoleSetConfig(
                from: try from.nonEmptyString(), roleArn: arnText, roleSessionName: nil, duration: .seconds(3600),
                externalId: nil, policy: nil, policyFile: nil, sourceIdentity: nil, region: regionText, endpoint: nil,
                allowGlobalEndpoint: false)
            if let n = m["role_session_name"] {
                let s = try n.string()
                guard s.range(of: #"^[\w+=,.@-]{2,64}$"#, options: .regularExpression) != nil else {
                    throw n.error("must be 2–64 characters of letters, digits and +=,.@_-.")
                }
                cfg.roleSessionName = s
            }
            if let d = m["duration"] { cfg.duration = try d.duration(minimum: .seconds(900), maximum: .seconds(43200)) }
            if let e = m["external_id"] { cfg.externalId = try e.nonEmptyString() }
            if let p = m["policy"] {
                let text = try p.nonEmptyString()
                guard (try? JSONSerialization.jsonObject(with: Data(text.utf8))) is [String: Any] else {
                    throw p.error("is not a JSON policy document object.")
                }
                cfg.policy = text
            }
            if let p = m["policy_file"] { cfg.policyFile = try absolutePath(p) }
            if cfg.policy != nil && cfg.policyFile != nil { throw node.error("give either policy or policy_file, not both.") }
            if let s = m["source_identity"] { cfg.sourceIdentity = try s.nonEmptyString() }
            if let g = m["allow_global_endpoint"] { cfg.allowGlobalEndpoint = try g.bool() }
            if let e = m["endpoint"] {
                let s = trimSlash(try e.nonEmptyString())
                guard s.hasPrefix("https://") || s.hasPrefix("http://") else { throw e.error("must be a URL.") }
                if isGlobalSTSEndpoint(s) && !cfg.allowGlobalEndpoint {
                    throw e.error("\(s) is the global STS endpoint: it issues version 1 session tokens that fail with AuthFailure in opt-in regions. Use the regional endpoint (leave endpoint unset), or set allow_global_endpoint: true if you really need it.")
                }
                cfg.endpoint = s
            }
            source = .assumeRole(cfg)
        default:
            source = .imds
        }
        return SetConfig(name: name, source: source, access: access)
    }

    public static func isGlobalSTSEndpoint(_ url: String) -> Bool {
        guard let host = URL(string: url)?.host?.lowercased() else { return false }
        return host == "sts.amazonaws.com"
    }

    static func validateChains(_ sets: [SetConfig], node: ConfigNode) throws {
        let byName = Dictionary(sets.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        for set in sets {
            var seen: [String] = [set.name]
            var current = set
            while case .assumeRole(let ar) = current.source {
                guard let next = byName[ar.from] else {
                    throw ConfigError(
                        file: node.file, line: node.line, key: "credentials.\(current.name).from",
                        message: "\"\(ar.from)\" is not a credential set; define it under credentials: or fix the name.")
                }
                if seen.contains(next.name) {
                    throw ConfigError(
                        file: node.file, line: node.line, key: "credentials.\(set.name).from",
                        message: "the sets form a cycle: \((seen + [next.name]).joined(separator: " → ")); a chain must end in an imds or login set.")
                }
                seen.append(next.name)
                current = next
            }
        }
    }

    /// Warnings a valid config still deserves (the global STS endpoint's version 1 tokens).
    public func warnings(environment env: RuntimeEnvironment) -> [String] {
        sets.flatMap { set -> [String] in
            guard case .assumeRole(let ar) = set.source else { return [] }
            return AssumeRoleSource.warnings(setName: set.name, config: ar, environment: env.environment)
        }
    }

    /// The chain of a set, e.g. ["deploy (assume-role)", "default (imds)"].
    public func chain(of name: String) -> [String] {
        var out: [String] = []
        var current = set(named: name)
        while let c = current, out.count < sets.count + 1 {
            out.append("\(c.name) (\(c.source.kind))")
            if case .assumeRole(let ar) = c.source { current = set(named: ar.from) } else { current = nil }
        }
        return out
    }
}

private func absolutePath(_ node: ConfigNode) throws -> String {
    let s = try node.nonEmptyString()
    guard s.hasPrefix("/") else { throw node.error("\"\(s)\" must be an absolute path.") }
    return s
}

private func fileMode(_ node: ConfigNode) throws -> UInt32 {
    let s = try node.string()
    guard let v = UInt32(s, radix: 8), v <= 0o777 else { throw node.error("\"\(s)\" is not an octal file mode like \"0660\" (quote it).") }
    return v
}

private func uids(_ node: ConfigNode) throws -> [UInt32] {
    try node.list().map { item in
        let s = try item.string()
        if let v = UInt32(s) { return v }
        guard let pw = getpwnam(s) else { throw item.error("no user named \"\(s)\" on this system; give a uid or an existing user name.") }
        return pw.pointee.pw_uid
    }
}

private func gids(_ node: ConfigNode) throws -> [UInt32] {
    try node.list().map { item in
        let s = try item.string()
        if let v = UInt32(s) { return v }
        guard let gr = getgrnam(s) else { throw item.error("no group named \"\(s)\" on this system; give a gid or an existing group name.") }
        return gr.pointee.gr_gid
    }
}

private func describeYAML(_ e: YamlError) -> String {
    switch e {
    case .scanner(let context, let problem, let mark, _):
        return "\(problem)\(context.map { " \($0.text)" } ?? "") at line \(mark.line), column \(mark.column)"
    case .parser(let context, let problem, let mark, _):
        return "\(problem)\(context.map { " \($0.text)" } ?? "") at line \(mark.line), column \(mark.column)"
    case .composer(let context, let problem, let mark, _):
        return "\(problem)\(context.map { " \($0.text)" } ?? "") at line \(mark.line), column \(mark.column)"
    default:
        return "\(e)"
    }
}

extension Array where Element: Hashable {
    func uniqued() -> [Element] {
        var seen = Set<Element>()
        return filter { seen.insert($0).inserted }
    }
}
