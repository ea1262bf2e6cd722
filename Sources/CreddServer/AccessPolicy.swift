// Who may read what: Unix-socket callers by uid/gid (SO_PEERCRED), TCP callers by token, decided before any handler.
import CreddCore
import CreddCrypto
import Foundation
import Logging
import NIOConcurrencyHelpers

/// The caller of one connection, as the kernel or the transport identifies it.
public enum Peer: Sendable, Equatable {
    /// A Unix-socket caller with its credentials from SO_PEERCRED and its supplementary groups.
    case unix(uid: UInt32, gid: UInt32, pid: Int32, groups: [UInt32])
    /// A loopback TCP caller.
    case tcp(remote: String)

    public var auditDescription: String {
        switch self {
        case .unix(let uid, _, let pid, _): return "uid=\(uid) pid=\(pid)"
        case .tcp(let remote): return "tcp=\(remote)"
        }
    }
}

/// Why a request was refused; maps to an HTTP status in one place (`HTTPError`).
public struct AccessDenied: Error, Sendable, Equatable {
    public enum Reason: Sendable, Equatable { case missingToken, wrongToken, tooManyWrongTokens, callerNotAllowed, badHost, origin }
    public var reason: Reason
    public var message: String
    /// Seconds until a peer refused for guessing may try again (`tooManyWrongTokens` only).
    public var retryAfter: Int?
    /// The first refusal of a guessing lockout (logged once, not once per guess).
    public var lockoutStarted = false

    public init(reason: Reason, message: String, retryAfter: Int? = nil, lockoutStarted: Bool = false) {
        self.reason = reason
        self.message = message
        self.retryAfter = retryAfter
        self.lockoutStarted = lockoutStarted
    }
}

/// Slows down token guessing over TCP: a token bucket of wrong tokens per peer address, consulted only
/// after a comparison failed, so a correct token is never delayed or refused (loopback peers cannot be told
/// apart by address, and refusing correct tokens would let any local user lock every client out). With
/// the connection closed after each wrong token (`HTTPError`), every guess costs a new connection, and
/// beyond the budget a peer only gets 429 answers and one log line per lockout instead of a 403 per guess.
public final class TokenGuessLimiter: Sendable {
    public struct Verdict: Sendable, Equatable {
        /// False once the peer's budget is spent: answer 429.
        public var allowed: Bool
        /// Whole seconds until the next wrong token would be allowed again.
        public var retryAfter: Int
        /// True for the first refusal of a lockout (log it once).
        public var lockoutStarted: Bool
    }

    private struct Bucket {
        var tokens: Double
        var updated: Double
        var lockedOut: Bool
    }

    public let burst: Double
    public let refillPerSecond: Double
    private let now: @Sendable () -> Double
    private let buckets = NIOLockedValueBox<[String: Bucket]>([:])
    /// Peers tracked at most; full buckets are forgotten first (a flood of addresses cannot grow memory).
    static let maximumPeers = 4096

    /// - Parameters:
    ///   - burst: wrong tokens a peer may send before it is limited.
    ///   - refillPerSecond: wrong tokens a peer regains per second.
    ///   - now: monotonic seconds (tests inject a manual clock).
    public init(burst: Int = 20, refillPerSecond: Double = 2, now: @escaping @Sendable () -> Double = { ProcessInfo.processInfo.systemUptime }) {
        self.burst = Double(max(1, burst))
        self.refillPerSecond = max(0.001, refillPerSecond)
        self.now = now
    }

    /// Records one wrong token from `peer` (an address, without the port) and says whether to answer it.
    public func recordWrongToken(peer: String) -> Verdict {
        let t = now()
        return buckets.withLockedValue { buckets in
            var b = buckets[peer] ?? Bucket(tokens: burst, updated: t, lockedOut: false)
            b.tokens = min(burst, b.tokens + max(0, t - b.updated) * refillPerSecond)
            b.updated = t
            let verdict: Verdict
            if b.tokens >= 1 {
                b.tokens -= 1
                b.lockedOut = false
                verdict = Verdict(allowed: true, retryAfter: 0, lockoutStarted: false)
            } else {
                let wait = Int(((1 - b.tokens) / refillPerSecond).rounded(.up))
                verdict = Verdict(allowed: false, retryAfter: max(1, wait), lockoutStarted: !b.lockedOut)
                b.lockedOut = true
            }
            if buckets[peer] == nil && buckets.count >= Self.maximumPeers {
                buckets = buckets.filter { $0.value.tokens + (t - $0.value.updated) * refillPerSecond < burst }
                if buckets.count >= Self.maximumPeers { buckets.removeAll() }
            }
            buckets[peer] = b
            return verdict
        }
    }

    /// The address part of a `Peer.tcp` remote ("127.0.0.1:5000" → "127.0.0.1", "::1:5000" → "::1").
    public static func address(ofRemote remote: String) -> String {
        guard let colon = remote.lastIndex(of: ":") else { return remote }
        return String(remote[..<colon])
    }
}

/// The tokens and uid/gid lists in force; replaced as a whole on reload.
public struct AccessPolicy: Sendable {
    struct SetRule: Sendable {
        var allowUids: Set<UInt32>?
        var allowGids: Set<UInt32>?
        var token: [UInt8]?
        var tokenFile: String?
    }

    let token: [UInt8]
    let tokenFile: String
    let allowUids: Set<UInt32>
    let allowGids: Set<UInt32>
    let rules: [String: SetRule]
    /// Shared by every copy of this policy (the serving state is a value); a reload starts a new one.
    let guesses: TokenGuessLimiter

    public init(
        token: [UInt8], tokenFile: String, access: AccessConfig, sets: [SetConfig], setTokens: [String: [UInt8]],
        guesses: TokenGuessLimiter = TokenGuessLimiter()
    ) {
        self.guesses = guesses
        self.token = token
        self.tokenFile = tokenFile
        self.allowUids = Set(access.allowUids)
        self.allowGids = Set(access.allowGids)
        var rules: [String: SetRule] = [:]
        for set in sets {
            guard let a = set.access else { continue }
            rules[set.name] = SetRule(
                allowUids: a.allowUids.map(Set.init), allowGids: a.allowGids.map(Set.init),
                token: setTokens[set.name], tokenFile: a.tokenFile)
        }
        self.rules = rules
    }

    /// Whether `peer` (presenting `authorization` over TCP) may read set `set` (nil: a non-credential route
    /// that still needs an authorised caller, such as status).
    public func check(set: String?, peer: Peer, authorization: String?) -> AccessDenied? {
        let rule = set.flatMap { rules[$0] }
        switch peer {
        case .unix(let uid, let gid, _, let groups):
            if uid == 0 { return nil }
            let uids = rule?.allowUids ?? (rule?.allowGids == nil ? allowUids : [])
            let gids = rule?.allowGids ?? (rule?.allowUids == nil ? allowGids : [])
            if uids.contains(uid) || gids.contains(gid) || groups.contains(where: gids.contains) { return nil }
            let what = set.map { "credential set \"\($0)\"" } ?? "credd"
            return AccessDenied(
                reason: .callerNotAllowed,
                message: "uid \(uid) may not read \(what) on this socket; add the uid or one of its groups to \(set.map { "credentials.\($0).access" } ?? "access").allow_uids/allow_gids in credd's config.")
        case .tcp(let remote):
            let (expected, file) = (rule?.token ?? token, rule?.tokenFile ?? tokenFile)
            guard let authorization, !authorization.isEmpty else {
                return AccessDenied(
                    reason: .missingToken,
                    message: "missing Authorization header; set AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=\(file).")
            }
            if !constantTimeEquals(Array(authorization.utf8), expected) {
                let address = TokenGuessLimiter.address(ofRemote: remote)
                let verdict = guesses.recordWrongToken(peer: address)
                if verdict.lockoutStarted {
                    Logger(label: "credd").warning(
                        "too many wrong Authorization tokens over TCP; answering 429 to wrong tokens from this address until it slows down (correct tokens still work)",
                        metadata: ["credd.peer": "\(address)", "credd.retry_after": "\(verdict.retryAfter)"])
                }
                if !verdict.allowed {
                    return AccessDenied(
                        reason: .tooManyWrongTokens,
                        message: "too many wrong Authorization tokens from this address; wait \(verdict.retryAfter) s. Clients with the token in \(file) are not affected.",
                        retryAfter: verdict.retryAfter, lockoutStarted: verdict.lockoutStarted)
                }
                return AccessDenied(
                    reason: .wrongToken,
                    message: "the Authorization token is not the one in \(file); point AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE at that file.")
            }
            return nil
        }
    }

    /// `Host` must name loopback (a DNS-rebinding page sends its own host name). The port is optional: awscrt omits it.
    public static func isLoopbackHost(_ host: String) -> Bool {
        var h = Substring(host)
        if h.hasPrefix("[") {
            guard let close = h.firstIndex(of: "]") else { return false }
            let inner = h[h.index(after: h.startIndex)..<close]
            let rest = h[h.index(after: close)...]
            guard rest.isEmpty || (rest.hasPrefix(":") && UInt16(rest.dropFirst()) != nil) else { return false }
            return inner == "::1"
        }
        if let colon = h.firstIndex(of: ":") {
            guard UInt16(h[h.index(after: colon)...]) != nil else { return false }
            h = h[..<colon]
        }
        let name = h.lowercased()
        return name == "localhost" || TCPAddress.isLoopback(name)
    }
}

/// Token files: 32 random bytes, base64url, no trailing newline, mode 0600 (0640 with a group).
public enum TokenFile {
    /// Reads a token, refusing an empty file or one that ends in a newline (it breaks every SDK).
    public static func read(_ path: String) throws -> [UInt8] {
        // A token any local user can read protects nothing (issue 7): refuse it rather than serve behind it.
        var info = stat()
        if stat(path, &info) == 0, info.st_mode & 0o007 != 0 {
            throw TokenFileError(
                path: path,
                message: "the token file is open to every user (mode \(String(info.st_mode & 0o777, radix: 8))); run chmod 0600 on it (0640 with credd's group), or delete it and credd creates a new one.")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw TokenFileError(path: path, message: "cannot read the token file; check that it exists and that credd may read it.")
        }
        let bytes = Array(data)
        if bytes.isEmpty { throw TokenFileError(path: path, message: "the token file is empty; delete it and credd creates a new one.") }
        if bytes.last == 0x0A || bytes.last == 0x0D {
            throw TokenFileError(path: path, message: "the token file ends in a newline, which breaks every SDK (botocore: 'Auth token value is not a legal header value'); rewrite it without the newline (printf '%s' TOKEN > FILE).")
        }
        guard bytes.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            throw TokenFileError(path: path, message: "the token file holds characters that cannot go in an HTTP header; delete it and credd creates a new one.")
        }
        return bytes
    }

    /// Creates the token file when absent (atomically, never overwriting one that exists) and returns its token.
    public static func ensure(_ path: String, group: gid_t?) throws -> [UInt8] {
        if FileManager.default.fileExists(atPath: path) { return try read(path) }
        let dir = (path as NSString).deletingLastPathComponent
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: group == nil ? 0o700 : 0o750])
        let token = Array(Base64URL.encode(SecureRandom.bytes(32)).utf8)
        let tmp = "\(dir)/.\((path as NSString).lastPathComponent).\(getpid()).tmp"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw TokenFileError(path: path, message: "cannot create the token file (\(String(cString: strerror(errno)))); check that \(dir) exists and is writable by credd.")
        }
        defer { unlink(tmp) }
        let written = token.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        if let group {
            _ = fchown(fd, getuid(), group)
            _ = fchmod(fd, 0o640)
        }
        let synced = fsync(fd)
        close(fd)
        guard written == token.count, synced == 0 else {
            throw TokenFileError(path: path, message: "cannot write the token file (\(String(cString: strerror(errno)))); the disk may be full.")
        }
        // link() fails if another process created the file meanwhile: then use theirs.
        if link(tmp, path) != 0 {
            if errno == EEXIST { return try read(path) }
            throw TokenFileError(path: path, message: "cannot create the token file (\(String(cString: strerror(errno)))).")
        }
        return token
    }
}

public struct TokenFileError: Error, CustomStringConvertible, Sendable {
    public var path: String
    public var message: String
    public var description: String { "\(path): \(message)" }
}
