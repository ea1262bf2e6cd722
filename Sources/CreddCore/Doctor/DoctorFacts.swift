// What `credd doctor` observed, as plain values without secrets: the checks are pure functions of these.
import Foundation

/// How a connection attempt ended (credd's sockets, the IMDS endpoint).
public enum ConnectProbe: Sendable, Equatable {
    case connected
    /// A Unix socket path that does not exist (ENOENT).
    case noSuchSocket
    /// EACCES: the socket's mode or group keeps the caller out.
    case permissionDenied
    /// ECONNREFUSED: nothing listens there.
    case refused
    /// No answer to the connection attempt in time.
    case timedOut
    /// Anything else, described.
    case failed(String)
}

/// A credentials answer, summarised without its secrets.
public struct CredentialsSummary: Sendable, Equatable {
    /// The access key's last four characters.
    public var keySuffix: String
    public var expiration: Date?
    /// Fields an SDK needs that the answer lacks (`Token`, `Expiration`…).
    public var missingFields: [String]

    public init(keySuffix: String, expiration: Date?, missingFields: [String] = []) {
        self.keySuffix = keySuffix
        self.expiration = expiration
        self.missingFields = missingFields
    }
}

/// One HTTP answer, reduced to what the checks need.
public struct HTTPAnswer: Sendable, Equatable {
    public var status: Int
    /// `code` and `message` of a credd error answer.
    public var errorCode: String?
    public var errorMessage: String?
    /// The `Date` header, and the local time halfway through the request (for the clock check).
    public var date: Date?
    public var localMidpoint: Date?
    public var credentials: CredentialsSummary?

    public init(
        status: Int, errorCode: String? = nil, errorMessage: String? = nil, date: Date? = nil, localMidpoint: Date? = nil,
        credentials: CredentialsSummary? = nil
    ) {
        self.status = status
        self.errorCode = errorCode
        self.errorMessage = errorMessage
        self.date = date
        self.localMidpoint = localMidpoint
        self.credentials = credentials
    }
}

/// How an HTTP request ended.
public enum HTTPProbe: Sendable, Equatable {
    case answered(HTTPAnswer)
    /// The connection was made but no answer came in time.
    case timedOut
    case failed(String)

    public var answer: HTTPAnswer? {
        if case .answered(let a) = self { return a }
        return nil
    }
}

/// What reading a token file gave. The token itself never leaves the probe.
public enum TokenFileFact: Sendable, Equatable {
    case missing
    case unreadable(reason: String)
    case empty
    case trailingNewline
    /// Bytes that cannot go in an HTTP header (control characters, spaces, non-ASCII).
    case illegalCharacters
    case valid
}

/// The caller's `AWS_*` variables. Values of secret variables are replaced by "<secret>" at once.
public struct CallerEnvironment: Sendable, Equatable {
    public static let secretVariables: Set<String> = [
        "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    ]
    public private(set) var variables: [String: String]

    public init(environment: [String: String]) {
        var v: [String: String] = [:]
        for (name, value) in environment where name.hasPrefix("AWS_") {
            v[name] = Self.secretVariables.contains(name) ? "<secret>" : value
        }
        variables = v
    }

    public subscript(_ name: String) -> String? {
        guard let value = variables[name], !value.isEmpty else { return nil }
        return value
    }

    /// The profile the SDKs use: `AWS_PROFILE`, else `AWS_DEFAULT_PROFILE`, else `default`.
    public var activeProfile: String { self["AWS_PROFILE"] ?? self["AWS_DEFAULT_PROFILE"] ?? "default" }
    public var profileSelected: Bool { self["AWS_PROFILE"] != nil || self["AWS_DEFAULT_PROFILE"] != nil }
}

/// The caller's active AWS profile as the SDKs would read it from `~/.aws/config` and `~/.aws/credentials`.
public struct CallerProfileFacts: Sendable, Equatable {
    /// Keys whose values the checks read; every other key is kept as present only (values may be secrets).
    public static let readableKeys: Set<String> = [
        "credential_process", "sts_regional_endpoints", "role_arn", "source_profile", "credential_source",
        "login_session", "sso_session", "sso_start_url", "web_identity_token_file", "region",
    ]

    public var name: String
    public var configFile: String
    public var credentialsFile: String
    /// The profile's keys in the config file (nil: no such profile there); unreadable values are "".
    public var config: [String: String]?
    /// The profile's key names in the credentials file (nil: no such profile there).
    public var credentialKeys: Set<String>?
    /// Files that exist but cannot be read or parsed (the SDKs fail on them too).
    public var problems: [String]

    public init(
        name: String, configFile: String, credentialsFile: String, config: [String: String]?, credentialKeys: Set<String>?,
        problems: [String] = []
    ) {
        self.name = name
        self.configFile = configFile
        self.credentialsFile = credentialsFile
        self.config = config.map { Self.keepReadable($0) }
        self.credentialKeys = credentialKeys
        self.problems = problems
    }

    static func keepReadable(_ settings: [String: String]) -> [String: String] {
        var out: [String: String] = [:]
        for (k, v) in settings { out[k] = readableKeys.contains(k) ? v : "" }
        return out
    }

    /// Reads the profile from the texts of both files (nil text: the file does not exist). The credentials
    /// file names profiles `[NAME]`; it is read with the config reader after rewriting its headers to
    /// `[profile NAME]`, so both files follow the same syntax rules.
    public static func read(
        profile: String, configFile: String, configText: String?, credentialsFile: String, credentialsText: String?
    ) -> CallerProfileFacts {
        var problems: [String] = []
        var config: [String: String]?
        var credentialKeys: Set<String>?
        if let configText {
            do {
                config = try AWSConfigProfiles.parse(configText, file: configFile)[profile]
            } catch {
                problems.append("\(error.description)")
            }
        }
        if let credentialsText {
            do {
                let rewritten = credentialsText.split(separator: "\n", omittingEmptySubsequences: false).map { line -> String in
                    let trimmed = line.trimmingCharacters(in: .whitespaces)
                    guard line.first == "[", trimmed.hasSuffix("]") else { return String(line) }
                    let name = trimmed.dropFirst().dropLast().trimmingCharacters(in: .whitespaces)
                    return name == "default" ? "[default]" : "[profile \(name)]"
                }.joined(separator: "\n")
                credentialKeys = (try AWSConfigProfiles.parse(rewritten, file: credentialsFile)[profile]).map { Set($0.keys) }
            } catch {
                problems.append("\(error.description)")
            }
        }
        return CallerProfileFacts(
            name: profile, configFile: configFile, credentialsFile: credentialsFile, config: config,
            credentialKeys: credentialKeys, problems: problems)
    }
}

/// IMDS as the doctor found it, step by step (each step only when the one before worked).
public struct IMDSFacts: Sendable, Equatable {
    public var endpoint: String
    public var allowV1: Bool
    public var configuredRole: String?
    public var disabled: Bool
    public var connect: ConnectProbe?
    public var tokenPut: HTTPProbe?
    public var roleList: HTTPProbe?
    /// The first line of the role listing.
    public var roleName: String?
    public var credentials: HTTPProbe?
    /// The parsed credentials document: its summary, or why it is unusable.
    public var document: Result<CredentialsSummary, SourceError>?

    public init(
        endpoint: String, allowV1: Bool = false, configuredRole: String? = nil, disabled: Bool = false,
        connect: ConnectProbe? = nil, tokenPut: HTTPProbe? = nil, roleList: HTTPProbe? = nil, roleName: String? = nil,
        credentials: HTTPProbe? = nil, document: Result<CredentialsSummary, SourceError>? = nil
    ) {
        self.endpoint = endpoint
        self.allowV1 = allowV1
        self.configuredRole = configuredRole
        self.disabled = disabled
        self.connect = connect
        self.tokenPut = tokenPut
        self.roleList = roleList
        self.roleName = roleName
        self.credentials = credentials
        self.document = document
    }
}

/// What reading a login set's cache file gave.
public enum LoginCacheFact: Sendable, Equatable {
    case notRead
    case missing
    case unreadable(reason: String)
    case invalid(SourceError)
    /// Parsed: refresh token, client id and DPoP key all present and usable.
    case valid(expiresAt: Date)
}

/// One `login` set's session, cache and what credd says of it.
public struct LoginFacts: Sendable, Equatable {
    public var setName: String
    public var profile: String
    public var location: LoginCacheLocation?
    public var locateError: SourceError?
    public var cache: LoginCacheFact
    public var directoryWritable: Bool
    public var fileWritable: Bool
    /// credd's status of the set, when credd answered.
    public var status: SetStatus?

    public init(
        setName: String, profile: String, location: LoginCacheLocation? = nil, locateError: SourceError? = nil,
        cache: LoginCacheFact = .notRead, directoryWritable: Bool = false, fileWritable: Bool = false, status: SetStatus? = nil
    ) {
        self.setName = setName
        self.profile = profile
        self.location = location
        self.locateError = locateError
        self.cache = cache
        self.directoryWritable = directoryWritable
        self.fileWritable = fileWritable
        self.status = status
    }
}

/// An upstream's `Date` header against the local clock.
public struct ClockSample: Sendable, Equatable {
    /// What answered, e.g. "IMDS at http://169.254.169.254".
    public var upstream: String
    public var upstreamDate: Date
    public var localDate: Date

    public init(upstream: String, upstreamDate: Date, localDate: Date) {
        self.upstream = upstream
        self.upstreamDate = upstreamDate
        self.localDate = localDate
    }
}
