// What `credd doctor` reports: one result per check (✓ pass, ✗ fail with the fix, – skipped with why).
import Foundation

public enum DoctorStatus: String, Codable, Sendable {
    case pass, fail, skip

    /// The mark printed before the check's message.
    public var mark: String {
        switch self {
        case .pass: return "✓"
        case .fail: return "✗"
        case .skip: return "–"
        }
    }
}

/// The sections of the report, in the order they are printed.
public enum DoctorGroup: String, Codable, Sendable, CaseIterable {
    case credd, environment, sets, imds, login, sts

    public var title: String {
        switch self {
        case .credd: return "credd"
        case .environment: return "this shell's environment (what an SDK started here would use)"
        case .sets: return "credential sets"
        case .imds: return "EC2 instance metadata (IMDS)"
        case .login: return "aws login"
        case .sts: return "STS and the clock"
        }
    }
}

/// One check's outcome. `message` says what was found; `fix` (failures only) what to do about it.
public struct DoctorCheck: Codable, Sendable, Equatable {
    /// Stable identifier, e.g. "imds.token" (documented; scripts may match on it).
    public var id: String
    public var group: DoctorGroup
    public var status: DoctorStatus
    public var message: String
    public var fix: String?

    public init(id: String, group: DoctorGroup, status: DoctorStatus, message: String, fix: String? = nil) {
        self.id = id
        self.group = group
        self.status = status
        self.message = message
        self.fix = fix
    }

    static func pass(_ id: String, _ group: DoctorGroup, _ message: String) -> DoctorCheck {
        DoctorCheck(id: id, group: group, status: .pass, message: message)
    }

    static func fail(_ id: String, _ group: DoctorGroup, _ message: String, fix: String) -> DoctorCheck {
        DoctorCheck(id: id, group: group, status: .fail, message: message, fix: fix)
    }

    /// A check that does not apply here; the message names what was not checked, then why.
    static func skip(_ id: String, _ group: DoctorGroup, _ why: String) -> DoctorCheck {
        DoctorCheck(id: id, group: group, status: .skip, message: subjects[id].map { "\($0) not checked: \(why)" } ?? why)
    }

    static let subjects: [String: String] = [
        "credd.unix": "the Unix socket", "credd.tcp": "the TCP listener", "credd.access": "uid access",
        "env.fetch": "an SDK's fetch", "set": "the sets",
        "imds.reachable": "IMDS reachability", "imds.token": "the IMDSv2 token", "imds.role": "the instance's role",
        "imds.credentials": "the role's credentials", "login.session": "the aws login session",
        "login.refresh": "refreshing the session", "login.cache_writable": "writing the login cache",
        "login.clients": "what clients need for aws login", "clock.skew": "the clock",
    ]
}

/// The whole report: `credd doctor --json` prints it (schema version 1), the text form groups it.
public struct DoctorReport: Codable, Sendable {
    public var version = 1
    /// True when no check failed (skipped checks do not count): the exit status is 0 exactly then.
    public var ok: Bool
    /// The config file read, or "(built-in defaults)".
    public var config: String
    /// The set the report is about (`--set`), or nil for all sets.
    public var set: String?
    public var checks: [DoctorCheck]

    public init(config: String, set: String?, checks: [DoctorCheck]) {
        self.config = config
        self.set = set
        self.checks = checks
        self.ok = !checks.contains { $0.status == .fail }
    }

    public func jsonData() -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        return (try? encoder.encode(self)) ?? Data()
    }

    public func text() -> String {
        var lines = ["credd doctor: config \(config)" + (set.map { ", set \($0)" } ?? "")]
        for group in DoctorGroup.allCases {
            let checks = self.checks.filter { $0.group == group }
            guard !checks.isEmpty else { continue }
            lines.append("")
            lines.append(group.title)
            for check in checks {
                lines.append("  \(check.status.mark) \(check.message)")
                if let fix = check.fix { lines.append("      fix: \(fix)") }
            }
        }
        let failed = checks.filter { $0.status == .fail }.count
        lines.append("")
        lines.append(failed == 0 ? "All checks passed." : "\(failed) check\(failed == 1 ? "" : "s") failed.")
        return lines.joined(separator: "\n")
    }
}

/// "5h59m", "14m05s", "42s": how long until (or since) something, for messages.
func doctorDuration(_ seconds: TimeInterval) -> String {
    let s = Int(abs(seconds).rounded(.down))
    if s < 60 { return "\(s)s" }
    if s < 3600 { return "\(s / 60)m\(String(format: "%02d", s % 60))s" }
    return "\(s / 3600)h\(String(format: "%02d", (s % 3600) / 60))m"
}
