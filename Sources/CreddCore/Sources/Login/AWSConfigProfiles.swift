// A minimal, strict reader for the AWS shared config file (`~/.aws/config`): profiles and their top-level keys.
import Foundation

/// The profiles of one AWS shared config file, read the way botocore's `configparser` reads it.
///
/// Only what the `aws login` source needs: sections `[default]` and `[profile NAME]`, `key = value`
/// (or `key: value`) lines, whole-line comments (`#`, `;`), blank lines, and indented continuation
/// lines (nested values such as `s3 =` blocks, kept out of the top-level keys). Other section kinds
/// (`[sso-session X]`, `[services X]`, `[plugins]`) are read and ignored. Anything else is an error that
/// names the file and the line, as botocore refuses such a file too. Keys are case-insensitive
/// (stored lowercased), values are trimmed; inline comments are part of the value, as in botocore.
public struct AWSConfigProfiles: Sendable, Equatable {
    /// Profile name → (lowercased key → value).
    public private(set) var profiles: [String: [String: String]]

    public init(profiles: [String: [String: String]] = [:]) {
        self.profiles = profiles
    }

    public subscript(profile: String) -> [String: String]? { profiles[profile] }

    /// Why a config file could not be read: the file, the 1-based line and what is wrong there.
    public struct ParseError: Error, Equatable, CustomStringConvertible, Sendable {
        public var file: String
        public var line: Int
        public var problem: String
        public var description: String { "\(file), line \(line): \(problem)" }
    }

    /// Reads `text`, the content of `file` (used only in error messages).
    public static func parse(_ text: String, file: String) throws(ParseError) -> AWSConfigProfiles {
        var result: [String: [String: String]] = [:]
        var currentProfile: String?    // nil: outside a profile section (or in one we ignore)
        var inSection = false
        var lastKeyInSection: String?  // a continuation line needs a key before it
        var keysInSection: Set<String> = []
        var seenSections: Set<String> = []
        var lineNumber = 0
        for rawLine in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            var line = Substring(rawLine)
            if line.hasSuffix("\r") { line = line.dropLast() }
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty || trimmed.hasPrefix("#") || trimmed.hasPrefix(";") {
                continue
            }
            let indented = line.first == " " || line.first == "\t"
            if indented {
                guard inSection, lastKeyInSection != nil else {
                    throw ParseError(file: file, line: lineNumber, problem: "an indented line continues no key")
                }
                continue  // part of a nested value (e.g. `s3 =` settings); not a top-level key
            }
            if trimmed.hasPrefix("[") {
                guard trimmed.hasSuffix("]") else {
                    throw ParseError(file: file, line: lineNumber, problem: "a section header must end with ']'")
                }
                let name = trimmed.dropFirst().dropLast().trimmingCharacters(in: .whitespaces)
                guard !name.isEmpty else {
                    throw ParseError(file: file, line: lineNumber, problem: "the section name is empty")
                }
                guard seenSections.insert(name).inserted else {
                    throw ParseError(file: file, line: lineNumber, problem: "section [\(name)] appears twice")
                }
                inSection = true
                lastKeyInSection = nil
                keysInSection = []
                if name == "profile" {
                    throw ParseError(file: file, line: lineNumber, problem: "[profile] needs a profile name")
                }
                if name == "default" {
                    currentProfile = "default"
                } else if name.hasPrefix("profile ") || name.hasPrefix("profile\t") {
                    let profile = name.dropFirst("profile".count).trimmingCharacters(in: .whitespaces)
                    guard !profile.isEmpty else {
                        throw ParseError(file: file, line: lineNumber, problem: "[profile] needs a profile name")
                    }
                    currentProfile = profile
                } else {
                    currentProfile = nil
                }
                if let currentProfile {
                    // `[default]` and `[profile default]` name the same profile; as in botocore, the
                    // section that comes later replaces the earlier one.
                    result[currentProfile] = [:]
                }
                continue
            }
            guard inSection else {
                throw ParseError(file: file, line: lineNumber, problem: "a setting appears before any [section] header")
            }
            guard let delimiter = trimmed.firstIndex(where: { $0 == "=" || $0 == ":" }) else {
                throw ParseError(file: file, line: lineNumber, problem: "expected `key = value`")
            }
            let key = trimmed[..<delimiter].trimmingCharacters(in: .whitespaces).lowercased()
            let value = trimmed[trimmed.index(after: delimiter)...].trimmingCharacters(in: .whitespaces)
            guard !key.isEmpty else {
                throw ParseError(file: file, line: lineNumber, problem: "the key before '\(trimmed[delimiter])' is empty")
            }
            lastKeyInSection = key
            guard keysInSection.insert(key).inserted else {
                throw ParseError(file: file, line: lineNumber, problem: "key \(key) appears twice in this section")
            }
            if let currentProfile {
                result[currentProfile, default: [:]][key] = value
            }
        }
        return AWSConfigProfiles(profiles: result)
    }
}
