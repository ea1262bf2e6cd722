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

    /// Parses "YYYY-MM-DDTHH:MM:SS", then optional fractional seconds (".123"), then "Z" or an offset
    /// ("+01:00", "-0530"). A fixed-format read rather than `Date.ISO8601FormatStyle`, which loads ICU's
    /// calendar and time zone data into memory on first use; nil for anything else (dates checked: month
    /// 1–12, the day within its month, hour 0–23, minute and second 0–59).
    public static func parse(_ string: String) -> Date? {
        var utf8 = Array(string.utf8)[...]
        func digits(_ n: Int) -> Int? {
            guard utf8.count >= n else { return nil }
            var v = 0
            for b in utf8.prefix(n) {
                guard b >= 0x30, b <= 0x39 else { return nil }
                v = v * 10 + Int(b - 0x30)
            }
            utf8 = utf8.dropFirst(n)
            return v
        }
        func take(_ c: UInt8) -> Bool {
            guard utf8.first == c else { return false }
            utf8 = utf8.dropFirst()
            return true
        }
        guard let year = digits(4), take(0x2D), let month = digits(2), take(0x2D), let day = digits(2),
            take(0x54) || take(0x74),  // "T" or "t"
            let hour = digits(2), take(0x3A), let minute = digits(2), take(0x3A), let second = digits(2)
        else { return nil }
        var fraction = 0.0
        if take(0x2E) {
            var scale = 0.1
            var any = false
            while let b = utf8.first, b >= 0x30, b <= 0x39 {
                fraction += Double(b - 0x30) * scale
                scale /= 10
                any = true
                utf8 = utf8.dropFirst()
            }
            guard any else { return nil }
        }
        var offset = 0
        if take(0x5A) || take(0x7A) {  // "Z" or "z"
        } else if let sign = utf8.first, sign == 0x2B || sign == 0x2D {
            utf8 = utf8.dropFirst()
            guard let oh = digits(2) else { return nil }
            _ = take(0x3A)
            guard let om = digits(2), oh <= 23, om <= 59 else { return nil }
            offset = (oh * 60 + om) * 60 * (sign == 0x2D ? -1 : 1)
        } else {
            return nil
        }
        guard utf8.isEmpty else { return nil }
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
        let monthDays = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
        guard (1...12).contains(month), (1...monthDays[month - 1]).contains(day), hour <= 23, minute <= 59, second <= 59
        else { return nil }
        // Days from 1970-01-01 to the civil date (Howard Hinnant's days_from_civil).
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        let days = era * 146_097 + doe - 719_468
        let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset
        return Date(timeIntervalSince1970: Double(seconds) + fraction)
    }
}
