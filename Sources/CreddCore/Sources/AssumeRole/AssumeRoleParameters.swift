// What one AssumeRole call asks for, with the checks `credd config check` runs on it.
import Foundation

public struct AssumeRoleParameters: Sendable, Equatable {
    public var roleArn: String
    public var roleSessionName: String
    /// Requested lifetime (900 s to 12 h); capped at 1 h for role chaining.
    public var duration: Duration
    public var externalId: String?
    /// Session policy JSON text (already read when it came from a file).
    public var policy: String?
    public var sourceIdentity: String?

    public static let defaultDuration: Duration = .seconds(3600)
    /// AWS's limit on an AssumeRole from role credentials.
    public static let roleChainingMaximum: Duration = .seconds(3600)

    public init(
        roleArn: String, roleSessionName: String? = nil, duration: Duration = AssumeRoleParameters.defaultDuration,
        externalId: String? = nil, policy: String? = nil, sourceIdentity: String? = nil
    ) {
        self.roleArn = roleArn
        self.roleSessionName = roleSessionName ?? Self.defaultSessionName()
        self.duration = duration
        self.externalId = externalId
        self.policy = policy
        self.sourceIdentity = sourceIdentity
    }

    public var durationSeconds: Int { Int(duration.components.seconds) }

    // MARK: - Session name

    /// "credd-USER@HOST", cut to 64 characters, with every character STS does not allow
    /// (it allows `[\w+=,.@-]`) replaced by "-". CloudTrail shows it, so it says who and where.
    public static func defaultSessionName(user: String, host: String) -> String {
        let raw = "credd-\(user.isEmpty ? "unknown" : user)@\(host.isEmpty ? "localhost" : host)"
        let cleaned = String(raw.map { isSessionNameCharacter($0) ? $0 : "-" })
        return String(cleaned.prefix(64))
    }

    /// The default session name for the user credd runs as on this host.
    public static func defaultSessionName() -> String {
        defaultSessionName(user: currentUserName(), host: currentHostName())
    }

    static func currentUserName() -> String {
        let uid = geteuid()
        guard let entry = getpwuid(uid), let name = entry.pointee.pw_name else { return "uid\(uid)" }
        return String(cString: name)
    }

    static func currentHostName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "localhost" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// `[\w+=,.@-]` as STS means it: ASCII letters, digits, underscore and those six marks.
    static func isSessionNameCharacter(_ c: Character) -> Bool {
        guard c.isASCII else { return false }
        return c.isLetter || c.isNumber || "_+=,.@-".contains(c)
    }

    // MARK: - Validation

    /// Every problem with these parameters, each a full sentence naming the config key; empty when valid.
    public func validationProblems(setName: String) -> [String] {
        let place = "credentials.\(setName)"
        var problems: [String] = []
        if let why = Self.roleArnProblem(roleArn) {
            problems.append("\(place).role_arn is \"\(roleArn)\", \(why); give the role's ARN, e.g. arn:aws:iam::123456789012:role/deploy.")
        }
        if !Self.isValidName(roleSessionName) {
            problems.append("\(place).role_session_name is \"\(roleSessionName)\", but STS needs 2 to 64 characters from letters, digits and _+=,.@-; remove it to use the default (\(Self.defaultSessionName())).")
        }
        let seconds = duration.components.seconds
        if duration.components.attoseconds != 0 || seconds < 900 || seconds > 43_200 {
            problems.append("\(place).duration is \(duration), but STS accepts whole seconds from 15 minutes (900 s) to 12 hours (43200 s), and at most the role's maximum session duration; use e.g. duration: 1h.")
        }
        if let externalId {
            let allowed = externalId.allSatisfy { Self.isSessionNameCharacter($0) || $0 == ":" || $0 == "/" }
            if externalId.count < 2 || externalId.count > 1224 || !allowed {
                problems.append("\(place).external_id must be 2 to 1224 characters from letters, digits and _+=,.@:/-; use the exact value the role's trust policy expects in sts:ExternalId.")
            }
        }
        if let policy, let why = Self.policyProblem(policy) {
            problems.append("\(place).policy \(why)")
        }
        if let sourceIdentity {
            if !Self.isValidName(sourceIdentity) || sourceIdentity.lowercased().hasPrefix("aws:") {
                problems.append("\(place).source_identity is \"\(sourceIdentity)\", but STS needs 2 to 64 characters from letters, digits and _+=,.@- that do not start with \"aws:\".")
            }
        }
        return problems
    }

    static func isValidName(_ s: String) -> Bool {
        (2...64).contains(s.count) && s.allSatisfy(isSessionNameCharacter)
    }

    static func roleArnProblem(_ arn: String) -> String? {
        let fields = arn.split(separator: ":", maxSplits: 5, omittingEmptySubsequences: false)
        guard fields.count == 6, fields[0] == "arn", fields[1].hasPrefix("aws") else { return "which is not an ARN" }
        guard fields[2] == "iam" else { return "which is not an IAM ARN" }
        guard fields[4].count == 12, fields[4].allSatisfy({ $0.isASCII && $0.isNumber }) else {
            return "which has no 12-digit account id"
        }
        guard fields[5].hasPrefix("role/"), fields[5].count > 5 else { return "which is not a role ARN" }
        return nil
    }

    /// Session policies must be JSON objects of at most 2048 characters.
    static func policyProblem(_ policy: String) -> String? {
        guard let object = try? JSONSerialization.jsonObject(with: Data(policy.utf8)), object is [String: Any] else {
            return "is not a JSON object; give the session policy JSON inline or the path of a file holding it."
        }
        if policy.count > 2048 {
            return "is \(policy.count) characters long, but STS accepts at most 2048 for a session policy; shorten it (whitespace counts)."
        }
        return nil
    }

    // MARK: - Policy from the config

    /// The `policy` setting: inline JSON when it starts with "{", else the path of a file holding the JSON
    /// (relative paths are relative to `configDirectory`). Returns the JSON text or a message for the config
    /// check; `key` is the setting's name in those messages (`policy`, or `policy_file`).
    public static func loadPolicy(
        _ value: String, setName: String, configDirectory: URL?, key: String = "policy"
    ) -> Result<String, PolicyLoadError> {
        let place = "credentials.\(setName).\(key)"
        let trimmed = value.trimmingCharacters(in: .whitespacesAndNewlines)
        if trimmed.hasPrefix("{") {
            if let why = policyProblem(trimmed) {
                return .failure(PolicyLoadError(message: "\(place) \(why)"))
            }
            return .success(trimmed)
        }
        let url: URL
        if trimmed.hasPrefix("/") || configDirectory == nil {
            url = URL(fileURLWithPath: trimmed)
        } else {
            url = configDirectory!.appendingPathComponent(trimmed)
        }
        let text: String
        do {
            text = try String(contentsOf: url, encoding: .utf8)
        } catch {
            return .failure(PolicyLoadError(message:
                "\(place) names the file \(url.path), which cannot be read (\(Self.reason(error))); give inline JSON starting with \"{\" or a readable file."))
        }
        let json = text.trimmingCharacters(in: .whitespacesAndNewlines)
        if let why = policyProblem(json) {
            return .failure(PolicyLoadError(message: "\(place): the file \(url.path) \(why)"))
        }
        return .success(json)
    }

    private static func reason(_ error: any Error) -> String {
        if let posix = (error as NSError).userInfo[NSUnderlyingErrorKey] as? NSError, posix.domain == NSPOSIXErrorDomain,
            let message = strerror(Int32(posix.code))
        {
            return String(cString: message)
        }
        return (error as NSError).localizedDescription
    }
}

/// Why a `policy` setting cannot be used.
public struct PolicyLoadError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}
