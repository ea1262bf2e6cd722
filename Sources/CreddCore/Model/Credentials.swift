// The credential model. Every type that holds a secret redacts itself when printed or logged.
import Foundation

/// A secret string: prints as a redaction, never as its value.
public struct Secret: Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// The value itself; read it only to put it on the wire or into the cache file.
    public let exposed: String
    public init(_ value: String) { self.exposed = value }
    public var description: String { "<redacted>" }
    public var debugDescription: String { "<redacted>" }
    public var customMirror: Mirror { Mirror(self, children: [], displayStyle: .struct) }
    public var isEmpty: Bool { exposed.isEmpty }
}

/// One set of AWS credentials as a source produced them.
public struct Credentials: Sendable, Equatable, CustomStringConvertible, CustomReflectable {
    public var accessKeyId: String
    public var secretAccessKey: Secret
    public var sessionToken: Secret
    /// When the credentials stop working. Temporary credentials always have one.
    public var expiration: Date
    public var accountId: String?
    /// True for role credentials (AssumeRole, `aws login`): AssumeRole from them is role chaining (≤ 1 h).
    public var isRoleCredentials: Bool

    public init(
        accessKeyId: String, secretAccessKey: Secret, sessionToken: Secret, expiration: Date,
        accountId: String? = nil, isRoleCredentials: Bool = false
    ) {
        self.accessKeyId = accessKeyId
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
        self.expiration = expiration
        self.accountId = accountId
        self.isRoleCredentials = isRoleCredentials
    }

    /// The last four characters of the access key id, for audit lines.
    public var keySuffix: String { String(accessKeyId.suffix(4)) }

    public var description: String {
        "Credentials(key: …\(keySuffix), expires: \(RFC3339.format(expiration)), account: \(accountId ?? "unknown"))"
    }
    public var customMirror: Mirror { Mirror(self, children: ["description": description], displayStyle: .struct) }
}

/// RFC 3339 / ISO 8601 timestamps in the shapes AWS uses ("2026-11-22T18:04:05Z", with or without fractions or offsets).
public enum RFC3339 {
    public static func format(_ date: Date) -> String {
        var t = time_t(date.timeIntervalSince1970.rounded(.down))
        var tm = tm()
        gmtime_r(&t, &tm)
        return String(
            format: "%04d-%02d-%02dT%02d:%02d:%02dZ",
            Int(tm.tm_year) + 1900, Int(tm.tm_mon) + 1, Int(tm.tm_mday), Int(tm.tm_hour), Int(tm.tm_min), Int(tm.tm_sec))
    }

    public static func parse(_ string: String) -> Date? {
        let withFraction = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        let plain = Date.ISO8601FormatStyle()
        if let d = try? plain.parse(string) { return d }
        if let d = try? withFraction.parse(string) { return d }
        return nil
    }
}
