// The checks of `credd doctor` as pure functions of what was observed: each returns ✓, ✗ with its fix, or – with why.
import Foundation

public enum DoctorChecks {
    static let startCredd =
        "start credd: `systemctl start credd.socket` (system instance), `systemctl --user start credd.socket` (user instance), or `credd serve` in a terminal"

    // ---- credd itself ----------------------------------------------------------------------------------

    public static func config(path: String, error: String?, warnings: [String]) -> DoctorCheck {
        if let error {
            return .fail("config", .credd, "the config cannot be used: \(error)", fix: "correct it; `credd config check` shows every error")
        }
        if warnings.isEmpty { return .pass("config", .credd, "config \(path) is valid") }
        return .fail(
            "config", .credd, "config \(path) is valid but: \(warnings.joined(separator: "; "))",
            fix: "follow the warning; `credd config check` repeats it")
    }

    public static func unixSocket(path: String?, probe: ConnectProbe?, uid: UInt32, group: String?) -> DoctorCheck {
        guard let path else { return .skip("credd.unix", .credd, "no Unix socket is configured (listen.unix)") }
        switch probe ?? .failed("not tried") {
        case .connected:
            return .pass("credd.unix", .credd, "credd accepts connections on unix:\(path)")
        case .noSuchSocket:
            return .fail("credd.unix", .credd, "there is no socket at \(path): credd is not running, or runs with another config", fix: startCredd)
        case .refused:
            return .fail(
                "credd.unix", .credd, "\(path) exists but nothing accepts on it (credd stopped and left its socket behind)",
                fix: startCredd)
        case .permissionDenied:
            let how = group.map { "add your user to group \($0) (`usermod -aG \($0) $USER`, then log in again)" }
                ?? "set listen.unix.group to a group of yours and listen.unix.mode to \"0660\""
            return .fail("credd.unix", .credd, "uid \(uid) may not connect to \(path) (the socket's mode or group keeps it out)", fix: how)
        case .timedOut:
            return .fail(
                "credd.unix", .credd, "credd did not accept a connection on \(path) in time (stuck or overloaded)",
                fix: "look at its log: `journalctl -u credd` (or `journalctl --user -u credd`)")
        case .failed(let why):
            return .fail("credd.unix", .credd, "cannot connect to \(path): \(why)", fix: startCredd)
        }
    }

    public static func tcpListener(_ address: TCPAddress, probe: ConnectProbe) -> DoctorCheck {
        let id = "credd.tcp"
        switch probe {
        case .connected:
            return .pass(id, .credd, "credd accepts connections on tcp \(address)")
        case .refused:
            return .fail(id, .credd, "nothing listens on tcp \(address) (connection refused)", fix: startCredd + "; check listen.tcp")
        case .timedOut:
            return .fail(id, .credd, "tcp \(address) did not accept a connection in time", fix: "look at credd's log (`journalctl -u credd`)")
        case .noSuchSocket, .permissionDenied:
            return .fail(id, .credd, "cannot connect to tcp \(address)", fix: startCredd)
        case .failed(let why):
            return .fail(id, .credd, "cannot connect to tcp \(address): \(why)", fix: startCredd + "; check listen.tcp")
        }
    }

    public static func noTCPListener() -> DoctorCheck {
        .skip("credd.tcp", .credd, "no TCP listener is configured (listen.tcp): SDKs cannot use credd's endpoint, only `credential_process = credd get --format process`")
    }

    /// `probe`: `GET /v1/credentials/SET` over the Unix socket.
    public static func callerAccess(uid: UInt32, set: String, probe: HTTPProbe?) -> DoctorCheck {
        let id = "credd.access"
        guard let probe else { return .skip(id, .credd, "credd's Unix socket cannot be reached, so uid \(uid)'s access cannot be tried") }
        switch probe {
        case .answered(let a) where a.status == 403 || a.status == 401:
            return .fail(
                id, .credd, "uid \(uid) may not read set \"\(set)\" on the Unix socket: \(a.errorMessage ?? "HTTP \(a.status)")",
                fix: "add uid \(uid) (or one of its groups) to access.allow_uids / allow_gids, or to credentials.\(set).access, in credd's config, then `systemctl reload credd`")
        case .answered(let a) where a.status == 404:
            return .fail(id, .credd, "credd serves no set named \"\(set)\"", fix: "use one of the sets in credd's config (`credd status` lists them)")
        case .answered:
            return .pass(id, .credd, "uid \(uid) may read set \"\(set)\" on the Unix socket")
        case .timedOut:
            return .fail(id, .credd, "credd did not answer on its Unix socket in time", fix: "look at its log (`journalctl -u credd`)")
        case .failed(let why):
            return .fail(id, .credd, "credd's Unix socket failed: \(why)", fix: startCredd)
        }
    }

    public static func tokenFile(path: String, fact: TokenFileFact, uid: UInt32, group: String?) -> DoctorCheck {
        let id = "credd.token_file"
        switch fact {
        case .valid:
            return .pass(id, .credd, "token file \(path) is readable by uid \(uid) and ends without a newline")
        case .missing:
            return .fail(id, .credd, "token file \(path) does not exist", fix: "credd creates it at start: \(startCredd), or `credd token ensure`")
        case .unreadable(let reason):
            let how = group.map { "credd makes the token file 0640 with group \($0): add your user to that group" }
                ?? "set listen.unix.group in credd's config to a group of yours (the token file becomes 0640 with that group), or run as credd's user"
            return .fail(id, .credd, "uid \(uid) cannot read token file \(path) (\(reason))", fix: how)
        case .empty:
            return .fail(id, .credd, "token file \(path) is empty", fix: "delete it and restart credd, which writes a new one")
        case .trailingNewline:
            return .fail(
                id, .credd,
                "token file \(path) ends in a newline, which breaks every SDK (botocore: \"Auth token value is not a legal header value\"; awscrt sends nothing)",
                fix: "rewrite it without the newline (`truncate -s -1 \(path)`), or delete it and restart credd")
        case .illegalCharacters:
            return .fail(
                id, .credd, "token file \(path) holds characters that cannot go in an HTTP header",
                fix: "delete it and restart credd, which writes a new one")
        }
    }

    // ---- the caller's environment ------------------------------------------------------------------

    /// `AWS_CONTAINER_CREDENTIALS_FULL_URI` parsed into where it points.
    public struct FullURI: Sendable, Equatable {
        public var host: String
        public var port: Int
        public var set: String?
        public var problem: String?

        public init(host: String, port: Int, set: String?, problem: String? = nil) {
            self.host = host
            self.port = port
            self.set = set
            self.problem = problem
        }
    }

    /// Reads a FULL_URI value the way the SDKs accept it (http to loopback) and credd serves it.
    public static func parseFullURI(_ text: String) -> FullURI {
        guard let url = URL(string: text), let scheme = url.scheme?.lowercased(), let rawHost = url.host, !rawHost.isEmpty else {
            return FullURI(host: "", port: 0, set: nil, problem: "is not a URL")
        }
        let host = rawHost.hasPrefix("[") ? String(rawHost.dropFirst().dropLast()) : rawHost
        let port = url.port ?? (scheme == "https" ? 443 : 80)
        if scheme != "http" {
            return FullURI(host: host, port: port, set: nil, problem: "uses \(scheme), but credd serves plain http on loopback")
        }
        guard TCPAddress.isLoopback(host.lowercased()) else {
            return FullURI(host: host, port: port, set: nil, problem: "points at \(host), which is not loopback: credd listens on loopback only")
        }
        let path = url.path
        if path == "/v1/credentials" || path == "/v1/credentials/" { return FullURI(host: host, port: port, set: "default") }
        if path.hasPrefix("/v1/credentials/") {
            return FullURI(host: host, port: port, set: String(path.dropFirst("/v1/credentials/".count)))
        }
        return FullURI(host: host, port: port, set: nil, problem: "has the path \(path.isEmpty ? "/" : path), but credd serves /v1/credentials and /v1/credentials/NAME")
    }

    /// `expectedSet`: `--set`, if given. `exportHint`: the command that prints the right lines.
    public static func fullURI(env: CallerEnvironment, listeners: [TCPAddress], sets: [String], expectedSet: String?, exportHint: String) -> DoctorCheck {
        let id = "env.full_uri"
        if env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] == nil, env["AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"] != nil {
            return .fail(
                id, .environment,
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI is set and FULL_URI is not: SDKs ask 169.254.170.2 (ECS), never credd",
                fix: "unset AWS_CONTAINER_CREDENTIALS_RELATIVE_URI; \(exportHint)")
        }
        guard let text = env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] else {
            return .fail(
                id, .environment, "AWS_CONTAINER_CREDENTIALS_FULL_URI is not set: SDKs started from this shell do not ask credd",
                fix: "\(exportHint), or run programs with `credd exec -- COMMAND`")
        }
        let uri = parseFullURI(text)
        if let problem = uri.problem {
            return .fail(id, .environment, "AWS_CONTAINER_CREDENTIALS_FULL_URI=\(text) \(problem)", fix: exportHint)
        }
        let matches = listeners.contains { l in
            l.port == uri.port && (l.host == uri.host || (["127.0.0.1", "localhost"].contains(uri.host.lowercased()) && l.host == "127.0.0.1"))
        }
        if !matches {
            let where_ = listeners.isEmpty ? "credd has no TCP listener" : "credd listens on \(listeners.map(\.description).joined(separator: ", "))"
            return .fail(id, .environment, "AWS_CONTAINER_CREDENTIALS_FULL_URI=\(text) points at port \(uri.port), but \(where_)", fix: exportHint)
        }
        guard let set = uri.set, sets.contains(set) else {
            return .fail(
                id, .environment,
                "AWS_CONTAINER_CREDENTIALS_FULL_URI=\(text) names set \"\(uri.set ?? "")\", which credd does not serve (sets: \(sets.joined(separator: ", ")))",
                fix: exportHint)
        }
        if let expectedSet, expectedSet != set {
            return .fail(id, .environment, "AWS_CONTAINER_CREDENTIALS_FULL_URI names set \"\(set)\", not \"\(expectedSet)\"", fix: exportHint)
        }
        return .pass(id, .environment, "AWS_CONTAINER_CREDENTIALS_FULL_URI points at credd's set \"\(set)\" (\(text))")
    }

    /// Both token variables, neither, or one that does not match credd's token.
    /// `fileMatches` / `inlineMatches`: whether the variable's token is the one credd expects (nil: unknown).
    public static func tokenVariables(
        env: CallerEnvironment, expectedFile: String, fileMatches: Bool?, inlineMatches: Bool?, exportHint: String
    ) -> DoctorCheck {
        let id = "env.token"
        let file = env["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"]
        let inline = env["AWS_CONTAINER_AUTHORIZATION_TOKEN"] != nil
        switch (file, inline) {
        case (.some, true):
            return .fail(
                id, .environment,
                "both AWS_CONTAINER_AUTHORIZATION_TOKEN and AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE are set: SDKs disagree which wins (botocore and Go read the file, the JavaScript SDK v3 the inline token)",
                fix: "unset AWS_CONTAINER_AUTHORIZATION_TOKEN and keep the file (botocore re-reads it, so credd can rotate it)")
        case (nil, false):
            return .fail(
                id, .environment, "neither AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE nor AWS_CONTAINER_AUTHORIZATION_TOKEN is set: credd answers 401 over TCP",
                fix: "export AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=\(expectedFile) (\(exportHint) prints it)")
        case (.some(let path), false):
            if fileMatches == false {
                return .fail(
                    id, .environment, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=\(path) does not hold credd's token (credd reads \(expectedFile))",
                    fix: "export AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=\(expectedFile)")
            }
            return .pass(id, .environment, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=\(path) is set and AWS_CONTAINER_AUTHORIZATION_TOKEN is not")
        case (nil, true):
            if inlineMatches == false {
                return .fail(
                    id, .environment, "AWS_CONTAINER_AUTHORIZATION_TOKEN is not credd's token (credd's is in \(expectedFile))",
                    fix: "unset it and export AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=\(expectedFile)")
            }
            return .pass(
                id, .environment,
                "AWS_CONTAINER_AUTHORIZATION_TOKEN is set (inline); the file variable is better where the SDK supports it, since credd can rotate the file")
        }
    }

    /// What would win over credd in the SDKs' credential chain (botocore order: environment keys, the
    /// profile's assume-role, web identity, SSO, the shared credentials file, `aws login`, `credential_process`,
    /// the config file's keys; only then the container endpoint).
    public static func conflicts(env: CallerEnvironment, profile: CallerProfileFacts) -> DoctorCheck {
        let id = "env.conflicts"
        var found: [String] = []
        var fixes: [String] = []
        if env["AWS_ACCESS_KEY_ID"] != nil || env["AWS_SECRET_ACCESS_KEY"] != nil {
            found.append("AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY are set (the environment provider comes first)")
            fixes.append("unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN")
        }
        if env["AWS_WEB_IDENTITY_TOKEN_FILE"] != nil && env["AWS_ROLE_ARN"] != nil {
            found.append("AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN (web identity comes before the container endpoint)")
            fixes.append("unset AWS_WEB_IDENTITY_TOKEN_FILE AWS_ROLE_ARN")
        }
        if env["AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"] != nil {
            found.append("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI is set (it wins over FULL_URI and always goes to 169.254.170.2)")
            fixes.append("unset AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        }
        let p = profile.name
        var usesCreddProcess = false
        if env.profileSelected && profile.config == nil && profile.credentialKeys == nil && profile.problems.isEmpty {
            found.append("AWS_PROFILE=\(p) names a profile that exists in neither \(profile.configFile) nor \(profile.credentialsFile) (botocore raises ProfileNotFound before trying credd)")
            fixes.append("unset AWS_PROFILE or create the profile")
        }
        if let keys = profile.credentialKeys, keys.contains("aws_access_key_id") {
            found.append("profile \(p) has static keys in \(profile.credentialsFile)")
            fixes.append("remove aws_access_key_id/aws_secret_access_key from [\(p)] in \(profile.credentialsFile), or use a profile without keys")
        }
        if let config = profile.config {
            if config["aws_access_key_id"] != nil {
                found.append("profile \(p) has static keys in \(profile.configFile)")
                fixes.append("remove the keys from the profile in \(profile.configFile)")
            }
            if let process = config["credential_process"] {
                if process.contains("credd") {
                    usesCreddProcess = true
                } else {
                    found.append("profile \(p) has credential_process = \(process)")
                    fixes.append("remove credential_process from the profile (or make it `credd get --format process`)")
                }
            }
            if config["role_arn"] != nil && config["credential_source"] != "EcsContainer" {
                found.append("profile \(p) assumes role \(config["role_arn"] ?? "") itself (role_arn)")
                fixes.append("give the profile `credential_source = EcsContainer` so the role is assumed with credd's credentials, or let credd assume it (an assume-role set)")
            }
            if config["sso_session"] != nil || config["sso_start_url"] != nil {
                found.append("profile \(p) uses IAM Identity Center (sso_session/sso_start_url)")
                fixes.append("use a profile without SSO settings for programs that should use credd")
            }
            if config["login_session"] != nil {
                found.append("profile \(p) has login_session (the SDK's own aws login provider comes first)")
                fixes.append("remove login_session from the profile the programs use and let credd serve the session (a login set)")
            }
            if config["web_identity_token_file"] != nil {
                found.append("profile \(p) uses web identity (web_identity_token_file)")
                fixes.append("remove web_identity_token_file from the profile")
            }
        }
        for problem in profile.problems {
            found.append("an AWS config file cannot be read: \(problem) (the SDKs fail on it too)")
            fixes.append("fix that line")
        }
        if !found.isEmpty {
            return .fail(
                id, .environment, "these win over credd in the SDKs' credential chain: " + found.joined(separator: "; "),
                fix: fixes.joined(separator: "; ") + ". `credd exec -- COMMAND` removes the variables (not the files' settings)")
        }
        if usesCreddProcess {
            return .pass(id, .environment, "profile \(p) gets credentials from credd through credential_process; nothing else wins over credd")
        }
        return .pass(id, .environment, "nothing in the environment or in profile \(p) wins over credd in the SDKs' credential chain")
    }

    /// An SDK's fetch, done as the SDK does it: GET FULL_URI with the token from the environment.
    public static func sdkFetch(url: String?, probe: HTTPProbe?, now: Date) -> DoctorCheck {
        let id = "env.fetch"
        guard let url, let probe else {
            return .skip(id, .environment, "no usable AWS_CONTAINER_CREDENTIALS_FULL_URI and token to fetch with")
        }
        switch probe {
        case .answered(let a) where a.status == 200:
            guard let c = a.credentials, c.missingFields.isEmpty, let exp = c.expiration else {
                let missing = a.credentials?.missingFields.joined(separator: ", ") ?? "a JSON body"
                return .fail(id, .environment, "\(url) answered 200 without \(missing)", fix: "report this: credd must never answer so")
            }
            guard exp > now else {
                return .fail(id, .environment, "\(url) answered with credentials that expired at \(RFC3339.format(exp))", fix: "look at `credd status`")
            }
            return .pass(id, .environment, "an SDK here gets credentials from \(url): key …\(c.keySuffix), expiring in \(doctorDuration(exp.timeIntervalSince(now)))")
        case .answered(let a):
            let what = [a.errorCode, a.errorMessage].compactMap { $0 }.joined(separator: ": ")
            let fix: String
            switch a.status {
            case 401, 403: fix = "point AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE at credd's token file (`credd env` prints it)"
            case 404: fix = "use a set credd serves (`credd status` lists them)"
            case 503: fix = "see the set's error below and `credd status`"
            default: fix = "look at credd's log (`journalctl -u credd`)"
            }
            return .fail(id, .environment, "an SDK here gets HTTP \(a.status) from \(url)" + (what.isEmpty ? "" : ": \(what)"), fix: fix)
        case .timedOut:
            return .fail(id, .environment, "\(url) did not answer within the SDKs' 2-second timeout", fix: "look at credd's log (`journalctl -u credd`)")
        case .failed(let why):
            return .fail(id, .environment, "an SDK here cannot reach \(url): \(why)", fix: startCredd)
        }
    }

    // ---- credd's sets --------------------------------------------------------------------------------

    public static func sets(_ statuses: [SetStatus]?, only: String?, now: Date) -> [DoctorCheck] {
        guard let statuses else {
            return [.skip("set", .sets, "credd's status cannot be read, so the sets' states are unknown")]
        }
        return statuses.filter { only == nil || $0.name == only }.map { s in
            let id = "set.\(s.name)"
            let left = s.servedExpiration.map { ", expires in \(doctorDuration($0.timeIntervalSince(now)))" } ?? ""
            switch s.state {
            case .fresh:
                return .pass(id, .sets, "set \(s.name) (\(s.source)) is fresh\(left)")
            case .starting, .refreshing:
                return .pass(id, .sets, "set \(s.name) (\(s.source)) is \(s.state.rawValue)\(left)")
            case .staticStability:
                return .fail(
                    id, .sets,
                    "set \(s.name) (\(s.source)) cannot refresh and serves its last credentials with the expiry extended (static stability): \(s.lastError ?? "the source fails")",
                    fix: s.lastError ?? "see the IMDS checks below")
            case .failing, .actionRequired:
                return .fail(
                    id, .sets, "set \(s.name) (\(s.source)) is \(s.state.rawValue)\(left): \(s.lastErrorCode ?? "error")",
                    fix: s.lastError ?? "look at credd's log")
            }
        }
    }

    // ---- IMDS ----------------------------------------------------------------------------------------

    public static func imds(_ f: IMDSFacts?, now: Date) -> [DoctorCheck] {
        let ids = ["imds.reachable", "imds.token", "imds.role", "imds.credentials"]
        guard let f else { return ids.map { .skip($0, .imds, "no credential set uses IMDS") } }
        if f.disabled {
            return ids.map {
                .skip($0, .imds, "IMDS is disabled by AWS_EC2_METADATA_DISABLED=true (credd's IMDS sets fail while it is set)")
            }
        }
        var out: [DoctorCheck] = []
        // Reachable.
        switch f.connect ?? .failed("not tried") {
        case .connected:
            out.append(.pass("imds.reachable", .imds, "IMDS at \(f.endpoint) accepts connections"))
        case .refused:
            out.append(.fail(
                "imds.reachable", .imds, "IMDS at \(f.endpoint) refused the connection: this is not EC2, or the endpoint is wrong",
                fix: "on EC2, check imds.endpoint / AWS_EC2_METADATA_SERVICE_ENDPOINT; elsewhere use another source (login, assume-role)"))
        case .timedOut:
            out.append(.fail(
                "imds.reachable", .imds,
                "IMDS at \(f.endpoint) did not accept a connection in time: not on EC2, the metadata endpoint is disabled, or a firewall drops link-local traffic",
                fix: "enable it: `aws ec2 modify-instance-metadata-options --instance-id ID --http-endpoint enabled`; or use another source"))
        case .noSuchSocket, .permissionDenied, .failed:
            let why: String
            if case .failed(let w) = f.connect { why = w } else { why = "connection failed" }
            out.append(.fail(
                "imds.reachable", .imds, "IMDS at \(f.endpoint) is unreachable (\(why))",
                fix: "check imds.endpoint in credd's config; off EC2 use another source"))
        }
        guard f.connect == .connected else {
            return out + ids.dropFirst().map { .skip($0, .imds, "IMDS is unreachable") }
        }
        // The IMDSv2 token.
        var tokenOK = false
        switch f.tokenPut {
        case .answered(let a)? where a.status == 200:
            tokenOK = true
            out.append(.pass("imds.token", .imds, "the IMDSv2 session token PUT works"))
        case .answered(let a)? where [403, 404, 405].contains(a.status) && f.allowV1:
            tokenOK = true
            out.append(.pass("imds.token", .imds, "IMDS refused the IMDSv2 token PUT (HTTP \(a.status)); imds.allow_v1 is set, so credd falls back to IMDSv1"))
        case .answered(let a)? where a.status == 403:
            out.append(.fail(
                "imds.token", .imds,
                "IMDS refused the IMDSv2 token PUT (403): instance metadata access is disabled, or a proxy added X-Forwarded-For",
                fix: "`aws ec2 modify-instance-metadata-options --instance-id ID --http-endpoint enabled`; make sure no proxy sits between credd and IMDS (NO_PROXY=169.254.169.254)"))
        case .answered(let a)?:
            out.append(.fail(
                "imds.token", .imds, "IMDS answered the IMDSv2 token PUT with HTTP \(a.status)",
                fix: a.status == 404 || a.status == 405
                    ? "this metadata service does not offer IMDSv2; set imds.allow_v1: true only if you trust IMDSv1 here"
                    : "retry later; if it persists, check the instance's metadata options"))
        case .timedOut?:
            out.append(.fail(
                "imds.token", .imds,
                "the IMDSv2 token PUT timed out although the TCP connection was made: the answer is dropped by the instance's response hop limit (1 by default), as happens when credd runs in a container or another network namespace",
                fix: "raise the hop limit: `aws ec2 modify-instance-metadata-options --instance-id ID --http-put-response-hop-limit 2`, or run credd on the host"))
        case .failed(let why)?:
            out.append(.fail("imds.token", .imds, "the IMDSv2 token PUT failed: \(why)", fix: "retry; check imds.endpoint"))
        case nil:
            out.append(.skip("imds.token", .imds, "not tried"))
        }
        guard tokenOK else { return out + [.skip("imds.role", .imds, "no IMDS session token"), .skip("imds.credentials", .imds, "no IMDS session token")] }
        // The role.
        var role: String?
        switch f.roleList {
        case .answered(let a)? where a.status == 200:
            if let name = f.roleName {
                if let configured = f.configuredRole, configured != name {
                    out.append(.fail(
                        "imds.role", .imds, "imds.role is \(configured), but the instance's role is \(name)",
                        fix: "set imds.role: \(name), or remove imds.role to discover it"))
                    role = configured
                } else {
                    out.append(.pass("imds.role", .imds, "IAM role \(name) is attached to the instance"))
                    role = name
                }
            } else {
                out.append(.fail("imds.role", .imds, "IMDS listed no role name", fix: "attach an instance profile to the instance"))
            }
        case .answered(let a)? where a.status == 404:
            out.append(.fail(
                "imds.role", .imds, "no IAM role is attached to the instance (IMDS answered 404)",
                fix: "attach an instance profile: `aws ec2 associate-iam-instance-profile --instance-id ID --iam-instance-profile Name=PROFILE`"))
        case .answered(let a)?:
            out.append(.fail("imds.role", .imds, "IMDS answered the role listing with HTTP \(a.status)", fix: "retry; if it persists, check the instance's metadata options"))
        case .timedOut?:
            out.append(.fail("imds.role", .imds, "IMDS did not answer the role listing in time", fix: "retry later"))
        case .failed(let why)?:
            out.append(.fail("imds.role", .imds, "the role listing failed: \(why)", fix: "retry later"))
        case nil:
            out.append(.skip("imds.role", .imds, "not tried"))
        }
        guard let role else { return out + [.skip("imds.credentials", .imds, "no role to fetch credentials for")] }
        // The credentials.
        switch (f.credentials, f.document) {
        case (.answered(let a)?, _) where a.status == 404:
            out.append(.fail(
                "imds.credentials", .imds, "IMDS has no credentials for role \(role) (404)",
                fix: "check the instance profile's role name; remove imds.role to discover it"))
        case (.answered(let a)?, _) where a.status != 200:
            out.append(.fail("imds.credentials", .imds, "IMDS answered the credentials request with HTTP \(a.status)", fix: "retry later"))
        case (_, .success(let c)?):
            guard let exp = c.expiration, exp.timeIntervalSince(now) > 60 else {
                out.append(.fail(
                    "imds.credentials", .imds, "IMDS returned credentials for role \(role) that are expired or about to expire",
                    fix: "EC2 renews them; if it persists, detach and attach the instance profile"))
                break
            }
            out.append(.pass(
                "imds.credentials", .imds,
                "IMDS returns valid credentials for role \(role): key …\(c.keySuffix), expiring in \(doctorDuration(exp.timeIntervalSince(now)))"))
        case (_, .failure(let e)?):
            out.append(.fail("imds.credentials", .imds, "IMDS credentials for role \(role) are unusable: \(e.message)", fix: e.message))
        case (.timedOut?, _):
            out.append(.fail("imds.credentials", .imds, "IMDS did not answer the credentials request in time", fix: "retry later"))
        case (.failed(let why)?, _):
            out.append(.fail("imds.credentials", .imds, "the credentials request failed: \(why)", fix: "retry later"))
        default:
            out.append(.skip("imds.credentials", .imds, "not tried"))
        }
        return out
    }

    // ---- aws login -----------------------------------------------------------------------------------

    public static func login(_ sets: [LoginFacts], callerProfile: CallerProfileFacts, now: Date) -> [DoctorCheck] {
        var out: [DoctorCheck] = []
        if sets.isEmpty {
            out += ["login.session", "login.refresh", "login.cache_writable"].map { .skip($0, .login, "no credential set uses aws login") }
        }
        for f in sets {
            let suffix = sets.count > 1 ? " (set \(f.setName))" : ""
            let session = loginSession(f, now: now)
            out.append(session)
            guard session.status == .pass, let location = f.location else {
                out.append(.skip("login.refresh", .login, "no usable aws login session\(suffix)"))
                out.append(.skip("login.cache_writable", .login, "no usable aws login session\(suffix)"))
                continue
            }
            if let s = f.status, s.state == .actionRequired || s.state == .failing, let code = s.lastErrorCode, code.hasPrefix("Login") || code.hasPrefix("SignIn") {
                out.append(.fail(
                    "login.refresh", .login, "credd cannot refresh the session of profile \(f.profile): \(code)",
                    fix: s.lastError ?? "run `aws login --profile \(f.profile)`"))
            } else {
                out.append(.pass(
                    "login.refresh", .login,
                    "the cache holds a refresh token and a usable DPoP key: credd refreshes profile \(f.profile)'s session (about 12 hours after each `aws login`)"))
            }
            if f.directoryWritable && f.fileWritable {
                out.append(.pass("login.cache_writable", .login, "the cache \(location.cacheFile) is writable (credd rewrites it after each refresh)"))
            } else {
                out.append(.fail(
                    "login.cache_writable", .login,
                    "\(f.directoryWritable ? location.cacheFile : location.cacheDirectory) is not writable: credd must write the rotated refresh token back after each refresh",
                    fix: "give the user credd runs as write access to \(location.cacheDirectory) and its files (`chmod u+w`), or run credd as the user who ran `aws login`"))
            }
        }
        // Seed 001: botocore's own refresh of an aws login session needs awscrt >= 0.30.
        if callerProfile.config?["login_session"] != nil {
            out.append(.fail(
                "login.clients", .login,
                "profile \(callerProfile.name) has login_session, so SDKs here refresh the aws login session themselves: botocore needs awscrt ≥ 0.30 for the DPoP proof and otherwise fails after 15 minutes (ExpiredToken)",
                fix: "let credd serve the session (a login set) and remove login_session from the profile programs use, or `pip install 'awscrt>=0.30'`"))
        } else if !sets.isEmpty {
            out.append(.pass(
                "login.clients", .login,
                "clients that use credd need no awscrt: credd makes the DPoP proof and refreshes the session itself (botocore alone needs awscrt ≥ 0.30 and fails after 15 minutes without it)"))
        } else {
            out.append(.skip("login.clients", .login, "no credential set uses aws login and profile \(callerProfile.name) has no login_session"))
        }
        return out
    }

    static func loginSession(_ f: LoginFacts, now: Date) -> DoctorCheck {
        let id = "login.session"
        if let e = f.locateError {
            return .fail(id, .login, e.message, fix: "run `aws login --profile \(f.profile)` as the user credd runs as")
        }
        guard let location = f.location else {
            return .fail(id, .login, "profile \(f.profile) has no aws login session", fix: "run `aws login --profile \(f.profile)`")
        }
        switch f.cache {
        case .valid(let expiresAt):
            let when = expiresAt > now
                ? "its credentials expire in \(doctorDuration(expiresAt.timeIntervalSince(now)))"
                : "its credentials expired \(doctorDuration(now.timeIntervalSince(expiresAt))) ago (credd refreshes them)"
            return .pass(id, .login, "profile \(f.profile) has an aws login session in \(location.cacheFile); \(when)")
        case .missing:
            return .fail(
                id, .login, "profile \(f.profile) names a login session, but its cache file \(location.cacheFile) does not exist",
                fix: "run `aws login --profile \(f.profile)` as the user credd runs as")
        case .unreadable(let reason):
            return .fail(
                id, .login, "the cache file \(location.cacheFile) cannot be read (\(reason))",
                fix: "run credd doctor as the user credd runs as, or give that user read access")
        case .invalid(let e):
            return .fail(id, .login, e.message, fix: "run `aws login --profile \(f.profile)`")
        case .notRead:
            return .skip(id, .login, "the cache file was not read")
        }
    }

    // ---- STS and the clock -----------------------------------------------------------------------------

    /// Seed 002: `sts_regional_endpoints = legacy` sends SDKs to the global endpoint, whose version 1 tokens
    /// fail in opt-in regions.
    public static func stsRegional(env: CallerEnvironment, profile: CallerProfileFacts, configWarnings: [String]) -> DoctorCheck {
        let id = "sts.regional"
        var sources: [String] = []
        if env["AWS_STS_REGIONAL_ENDPOINTS"]?.lowercased() == "legacy" { sources.append("AWS_STS_REGIONAL_ENDPOINTS=legacy") }
        if profile.config?["sts_regional_endpoints"]?.lowercased() == "legacy" {
            sources.append("sts_regional_endpoints = legacy in profile \(profile.name) of \(profile.configFile)")
        }
        let why =
            "SDKs then call the global endpoint sts.amazonaws.com, whose version 1 session tokens are valid only in regions enabled by default: in an opt-in region (me-south-1, af-south-1, ap-east-1…) every call fails with \"AuthFailure: AWS was not able to validate the provided access credentials\""
        if !sources.isEmpty {
            return .fail(
                id, .sts, "\(sources.joined(separator: " and ")): \(why)",
                fix: "remove it (regional is the default), or set sts_regional_endpoints = regional; credd itself always uses a regional endpoint")
        }
        if !configWarnings.isEmpty {
            return .fail(id, .sts, configWarnings.joined(separator: "; "), fix: "remove allow_global_endpoint and the endpoint from the set: \(why)")
        }
        return .pass(id, .sts, "no legacy (global) STS endpoint setting here: SDKs and credd get version 2 session tokens, valid in every region")
    }

    /// The local clock against upstreams' `Date` headers (1-second resolution).
    public static func clock(_ samples: [ClockSample], tolerance: TimeInterval = 30) -> DoctorCheck {
        let id = "clock.skew"
        guard let worst = samples.max(by: { abs($0.localDate.timeIntervalSince($0.upstreamDate)) < abs($1.localDate.timeIntervalSince($1.upstreamDate)) })
        else {
            return .skip(id, .sts, "no upstream (IMDS, STS) answered with a Date header to compare the clock with")
        }
        let skew = worst.localDate.timeIntervalSince(worst.upstreamDate)
        let side = skew > 0 ? "ahead of" : "behind"
        if abs(skew) > tolerance {
            return .fail(
                id, .sts,
                "this machine's clock is \(doctorDuration(skew)) \(side) \(worst.upstream)'s Date header: AWS refuses SigV4 requests more than 5 minutes off (SignatureDoesNotMatch, RequestTimeTooSkewed), Sign-In refuses DPoP proofs with a bad time, and credd misjudges when credentials expire",
                fix: "synchronise the clock: `timedatectl set-ntp true` (check with `timedatectl` or `chronyc tracking`)")
        }
        return .pass(id, .sts, "the clock agrees with \(worst.upstream)'s Date header (within \(Int(tolerance)) s)")
    }
}
