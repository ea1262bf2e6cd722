// `credd status` as a table with countdowns.
import CreddCore
import Foundation

public enum StatusTable {
    public static func render(_ doc: StatusDocument, now: Date) -> String {
        var rows: [[String]] = [["SET", "SOURCE", "STATE", "EXPIRES IN", "KEY", "LAST REFRESH", "NEXT REFRESH"]]
        for s in doc.sets {
            rows.append([
                s.name, s.source, s.state.rawValue,
                s.servedExpiration.map { formatRemaining($0.timeIntervalSince(now)) } ?? "-",
                s.accessKeySuffix.map { "…\($0)" } ?? "-",
                s.lastRefresh.map { formatAge(now.timeIntervalSince($0)) + " ago" } ?? "-",
                s.nextRefresh.map { $0 > now ? "in " + formatAge($0.timeIntervalSince(now)) : "now" } ?? "-",
            ])
        }
        let widths = (0..<rows[0].count).map { c in rows.map { $0[c].count }.max() ?? 0 }
        var out = rows.map { r in r.enumerated().map { $1.padding(toLength: widths[$0], withPad: " ", startingAt: 0) }.joined(separator: "  ") }
        for s in doc.sets {
            if s.chain.count > 1 { out.append("\(s.name): chain \(s.chain.joined(separator: " ← "))") }
            if s.state == .staticStability, let e = s.expiration, let served = s.servedExpiration {
                out.append("\(s.name): static stability: the source cannot refresh; serving credentials that expire \(RFC3339.format(e)) with expiry extended to \(RFC3339.format(served)) (as the AWS SDKs do for IMDS)")
            }
            if let err = s.lastError { out.append("\(s.name): \(err)") }
        }
        return out.map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: "\n")
    }
}

/// A duration without the "expired" remark, for ages and countdowns to events.
func formatAge(_ seconds: TimeInterval) -> String {
    seconds < 1 ? "0s" : formatRemaining(seconds)
}
