// A strict walker over Yams' node tree: every error names the file, the line and the key.
import Foundation
import Yams

/// A configuration error: what is wrong, where (file, line, key) and what to do.
public struct ConfigError: Error, CustomStringConvertible, Sendable, Equatable {
    public var file: String
    public var line: Int?
    public var column: Int?
    public var key: String
    public var message: String

    public init(file: String, line: Int? = nil, column: Int? = nil, key: String, message: String) {
        self.file = file
        self.line = line
        self.column = column
        self.key = key
        self.message = message
    }

    public var description: String {
        var location = file
        if let line { location += ":\(line)" }
        if let column { location += ":\(column)" }
        return key.isEmpty ? "\(location): \(message)" : "\(location): \(key): \(message)"
    }
}

/// A YAML node with its key path and position.
struct ConfigNode {
    let node: Node
    let path: String
    let file: String

    var line: Int? { node.mark.map { $0.line } }
    var column: Int? { node.mark.map { $0.column } }

    func error(_ message: String) -> ConfigError {
        ConfigError(file: file, line: line, column: column, key: path, message: message)
    }

    func child(_ key: String, _ node: Node) -> ConfigNode {
        ConfigNode(node: node, path: path.isEmpty ? key : "\(path).\(key)", file: file)
    }

    /// The entries of a mapping, refusing keys outside `allowed` and duplicate keys.
    func mapping(allowed: Set<String>) throws -> [String: ConfigNode] {
        guard case .mapping(let mapping) = node else {
            throw error("expected a mapping of keys (\(allowed.sorted().joined(separator: ", "))), found \(kind).")
        }
        var out: [String: ConfigNode] = [:]
        for (k, v) in mapping {
            guard case .scalar(let scalar) = k else {
                throw ConfigNode(node: k, path: path, file: file).error("keys must be plain names.")
            }
            let keyNode = ConfigNode(node: k, path: path.isEmpty ? scalar.string : "\(path).\(scalar.string)", file: file)
            if !allowed.contains(scalar.string) {
                let known = allowed.sorted().joined(separator: ", ")
                throw keyNode.error("unknown key \"\(scalar.string)\"; known keys here: \(known).")
            }
            if out[scalar.string] != nil { throw keyNode.error("this key appears twice; keep one.") }
            out[scalar.string] = child(scalar.string, v)
        }
        return out
    }

    /// The entries of a mapping with free keys (credential set names).
    func namedEntries() throws -> [(String, ConfigNode)] {
        guard case .mapping(let mapping) = node else { throw error("expected a mapping of names, found \(kind).") }
        var seen = Set<String>()
        var out: [(String, ConfigNode)] = []
        for (k, v) in mapping {
            guard case .scalar(let scalar) = k else { throw error("names must be plain strings.") }
            let keyNode = child(scalar.string, k)
            if !seen.insert(scalar.string).inserted { throw keyNode.error("this name appears twice; keep one.") }
            out.append((scalar.string, child(scalar.string, v)))
        }
        return out
    }

    var kind: String {
        switch node {
        case .scalar: return "a single value"
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        }
    }

    var isNull: Bool {
        if case .scalar(let s) = node { return s.style == .plain && (s.string == "null" || s.string == "~" || s.string.isEmpty) }
        return false
    }

    func string() throws -> String {
        guard case .scalar(let s) = node else { throw error("expected a single value, found \(kind).") }
        return s.string
    }

    func nonEmptyString() throws -> String {
        let s = try string()
        if s.trimmingCharacters(in: .whitespaces).isEmpty { throw error("must not be empty.") }
        return s
    }

    func bool() throws -> Bool {
        switch try string().lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default: throw error("expected true or false.")
        }
    }

    func int(in range: ClosedRange<Int>? = nil) throws -> Int {
        guard let v = Int(try string()) else { throw error("expected a whole number.") }
        if let range, !range.contains(v) { throw error("\(v) is out of range; use \(range.lowerBound)…\(range.upperBound).") }
        return v
    }

    /// "300ms", "5s", "5m", "1h", or whole seconds.
    func duration(minimum: Duration = .zero, maximum: Duration? = nil) throws -> Duration {
        let text = try string().trimmingCharacters(in: .whitespaces)
        guard let d = ConfigNode.parseDuration(text) else {
            throw error("\"\(text)\" is not a duration; write it like 300ms, 30s, 5m or 1h.")
        }
        if d < minimum { throw error("\(text) is too short; the minimum is \(minimum).") }
        if let maximum, d > maximum { throw error("\(text) is too long; the maximum is \(maximum).") }
        return d
    }

    static func parseDuration(_ text: String) -> Duration? {
        let units: [(String, Int64)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)]
        if let n = Int64(text), n >= 0 { return .seconds(n) }
        for (suffix, millis) in units where text.hasSuffix(suffix) {
            let number = text.dropLast(suffix.count)
            if let n = Int64(number), n >= 0, n < Int64.max / millis { return .milliseconds(n * millis) }
            if let x = Double(number), x >= 0, x.isFinite, x * Double(millis) < 1e15 {
                return .milliseconds(Int64((x * Double(millis)).rounded()))
            }
            return nil
        }
        return nil
    }

    func list() throws -> [ConfigNode] {
        guard case .sequence(let seq) = node else { throw error("expected a list, found \(kind).") }
        return seq.enumerated().map { i, n in ConfigNode(node: n, path: "\(path)[\(i)]", file: file) }
    }
}
