// The `assume-role` source: role credentials from STS, signed with another set's credentials.
import AsyncHTTPClient
import Foundation
import Logging

public struct AssumeRoleSource: CredentialSource {
    public var kind: String { "assume-role" }
    public let setName: String
    /// The set whose credentials sign the call (`from:`).
    public let sourceSetName: String
    public let parameters: AssumeRoleParameters
    public let client: STSClient
    /// The source set's current credentials.
    let currentSourceCredentials: @Sendable () async throws -> Credentials
    /// Forces the source set to fetch anew; used once when STS says the source token expired.
    let refreshSource: @Sendable () async throws -> Credentials
    let now: @Sendable () -> Date

    /// Renew at half the lifetime, and always with 20 minutes left (SDKs start refreshing at 15).
    public static let traits = RefreshTraits(refreshBefore: .seconds(20 * 60), renewAtLifetimeFraction: 0.5)

    public init(
        setName: String, sourceSetName: String, parameters: AssumeRoleParameters, client: STSClient,
        now: @escaping @Sendable () -> Date = { Date() },
        currentSourceCredentials: @escaping @Sendable () async throws -> Credentials,
        refreshSource: @escaping @Sendable () async throws -> Credentials
    ) {
        self.setName = setName
        self.sourceSetName = sourceSetName
        self.parameters = parameters
        self.client = client
        self.now = now
        self.currentSourceCredentials = currentSourceCredentials
        self.refreshSource = refreshSource
    }

    /// The usual wiring: an STS client over the shared `HTTPClient`.
    public init(
        setName: String, sourceSetName: String, parameters: AssumeRoleParameters, endpoint: STSEndpoint,
        httpClient: HTTPClient, timeout: Duration = .seconds(5), now: @escaping @Sendable () -> Date = { Date() },
        currentSourceCredentials: @escaping @Sendable () async throws -> Credentials,
        refreshSource: @escaping @Sendable () async throws -> Credentials
    ) {
        self.init(
            setName: setName, sourceSetName: sourceSetName, parameters: parameters,
            client: STSClient(httpClient: httpClient, endpoint: endpoint, timeout: timeout, now: now), now: now,
            currentSourceCredentials: currentSourceCredentials, refreshSource: refreshSource)
    }

    public var summary: String {
        "AssumeRole \(parameters.roleArn) as session \(parameters.roleSessionName) at \(client.endpoint) with the credentials of set \(sourceSetName)"
    }

    public var refreshTraits: RefreshTraits { Self.traits }

    /// The duration to ask for: role chaining (source credentials that are themselves role credentials)
    /// is limited to 1 hour by AWS, so a longer request would only fail.
    public static func effectiveDuration(requested: Duration, sourceIsRoleCredentials: Bool) -> (duration: Duration, capped: Bool) {
        if sourceIsRoleCredentials && requested > AssumeRoleParameters.roleChainingMaximum {
            return (AssumeRoleParameters.roleChainingMaximum, true)
        }
        return (requested, false)
    }

    public func fetch(logger: Logger) async throws -> Credentials {
        var logger = logger
        logger[metadataKey: "credd.set"] = "\(setName)"
        logger[metadataKey: "credd.source_set"] = "\(sourceSetName)"

        var source: Credentials
        do {
            source = try await currentSourceCredentials()
            // Already expired by our own clock: STS would only answer ExpiredToken.
            if source.expiration <= now() { source = try await refreshSource() }
        } catch {
            throw errorContext(source: nil).sourceUnavailable(error)
        }

        do {
            return try await assumeRole(with: source, logger: logger)
        } catch let error as SourceError where error.code == AssumeRoleErrorContext.sourceCredentialsExpiredCode {
            logger.info(
                "STS says the source credentials expired; refreshing the source set and retrying once",
                metadata: ["credd.source_key": "…\(source.keySuffix)"])
            let fresh: Credentials
            do {
                fresh = try await refreshSource()
            } catch {
                throw errorContext(source: source).sourceUnavailable(error)
            }
            return try await assumeRole(with: fresh, logger: logger)
        }
    }

    /// Throws only `SourceError`.
    private func assumeRole(with source: Credentials, logger: Logger) async throws -> Credentials {
        let (duration, capped) = Self.effectiveDuration(
            requested: parameters.duration, sourceIsRoleCredentials: source.isRoleCredentials)
        if capped {
            logger.warning(
                "AssumeRole duration capped at 1 hour: the source credentials are role credentials, and AWS limits role chaining to 1 hour",
                metadata: [
                    "sts.role_arn": "\(parameters.roleArn)",
                    "sts.requested_seconds": "\(parameters.durationSeconds)",
                ])
        }
        let signingTime = now()
        do {
            let result = try await client.assumeRole(
                parameters, durationSeconds: Int(duration.components.seconds), credentials: source, logger: logger)
            logger.info(
                "Assumed role",
                metadata: [
                    "sts.assumed_role_arn": "\(result.assumedRoleArn)",
                    "sts.expiration": "\(RFC3339.format(result.credentials.expiration))",
                    "credd.key": "…\(result.credentials.keySuffix)",
                ])
            var credentials = result.credentials
            credentials.isRoleCredentials = true
            return credentials
        } catch {
            var context = errorContext(source: source)
            context.signingTime = signingTime
            throw context.sourceError(for: error as? STSFailure ?? .unreachable(STSClient.describe(error)))
        }
    }

    private func errorContext(source: Credentials?) -> AssumeRoleErrorContext {
        AssumeRoleErrorContext(
            setName: setName, sourceSetName: sourceSetName, roleArn: parameters.roleArn, endpoint: client.endpoint,
            callerKeySuffix: source?.keySuffix ?? "????", signingTime: now())
    }
}
