// Builds each set's source from its configuration.
import AsyncHTTPClient
import Foundation
import Logging

public enum SourceFactory {
    /// The source for `set`; an assume-role set reads its `from` set, which `sets` must already hold.
    public static func make(
        _ set: SetConfig, config: CreddConfig, environment: RuntimeEnvironment, http: UpstreamHTTP,
        sets: [String: CredentialSet], logger: Logger, now: @escaping @Sendable () -> Date
    ) throws -> any CredentialSource {
        switch set.source {
        case .imds:
            return IMDSSource(settings: config.imds, httpClient: http.imds, now: now)
        case .assumeRole(let ar):
            guard let from = sets[ar.from] else {
                throw ConfigError(file: config.file ?? "config", key: "credentials.\(set.name).from", message: "\"\(ar.from)\" is not a credential set.")
            }
            do {
                return try AssumeRoleSource.make(
                    setName: set.name, config: ar, environment: environment.environment, httpClient: http.general,
                    from: from, logger: logger, now: now)
            } catch let e as AssumeRoleConfigError {
                throw ConfigError(file: config.file ?? "config", key: "credentials.\(set.name)", message: e.description)
            }
        case .login(let login):
            return LoginSource(
                profile: login.profile, environment: environment.environment, homeDirectory: environment.home,
                endpointOverride: login.endpoint, httpClient: http.general, now: now)
        }
    }

    /// A digest of what a set's credentials depend on; adopted credentials must match it.
    public static func fingerprint(_ set: SetConfig, config: CreddConfig) -> String {
        var parts = ["\(set.source)"]
        if case .imds = set.source { parts.append(config.imds.endpoint + "|" + (config.imds.role ?? "")) }
        var current = set
        var hops = 0
        while case .assumeRole(let ar) = current.source, let next = config.set(named: ar.from), hops < config.sets.count {
            parts.append("\(next.source)")
            current = next
            hops += 1
        }
        return parts.joined(separator: "\n")
    }
}

/// All sets' current credentials, kept across restarts in systemd's fd store (a sealed memfd, never on disk).
public struct CredentialStateSnapshot: Sendable, Codable {
    public struct Entry: Sendable, Codable {
        public var name: String
        public var sourceFingerprint: String
        public var accessKeyId: String
        public var secretAccessKey: String
        public var sessionToken: String
        public var expiration: Date
        public var servedExpiration: Date
        public var accountId: String?
        public var isRoleCredentials: Bool

        public init(name: String, sourceFingerprint: String, served: ServedCredentials) {
            self.name = name
            self.sourceFingerprint = sourceFingerprint
            let c = served.credentials
            self.accessKeyId = c.accessKeyId
            self.secretAccessKey = c.secretAccessKey.exposed
            self.sessionToken = c.sessionToken.exposed
            self.expiration = c.expiration
            self.servedExpiration = served.servedExpiration
            self.accountId = c.accountId
            self.isRoleCredentials = c.isRoleCredentials
        }

        public var credentials: Credentials {
            Credentials(
                accessKeyId: accessKeyId, secretAccessKey: Secret(secretAccessKey), sessionToken: Secret(sessionToken),
                expiration: expiration, accountId: accountId, isRoleCredentials: isRoleCredentials)
        }
    }

    public var version = 1
    public var entries: [Entry]

    public init(entries: [Entry]) { self.entries = entries }

    public func encoded() -> [UInt8] {
        let e = JSONEncoder()
        e.dateEncodingStrategy = .secondsSince1970
        return Array((try? e.encode(self)) ?? Data())
    }

    /// Decodes a snapshot; a malformed one is an error the caller logs and ignores.
    public static func decode(_ bytes: [UInt8]) throws -> CredentialStateSnapshot {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .secondsSince1970
        let s = try d.decode(CredentialStateSnapshot.self, from: Data(bytes))
        guard s.version == 1 else { throw SourceError(code: "BadState", message: "unknown state version \(s.version)") }
        return s
    }
}
