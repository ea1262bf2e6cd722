// From an `assume-role` set's config to its source: the checks `credd config check` runs, and the wiring.
import AsyncHTTPClient
import Foundation
import Logging

/// Why an `assume-role` set cannot be built; each problem is a full sentence naming its config key.
public struct AssumeRoleConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    public var problems: [String]
    public var description: String { problems.joined(separator: "\n") }
}

extension AssumeRoleSource {
    /// The parameters of a set's AssumeRole calls, with `policy_file` read; or every problem found.
    public static func parameters(setName: String, config: AssumeRoleSetConfig) -> Result<AssumeRoleParameters, AssumeRoleConfigError> {
        var problems: [String] = []
        var policy = config.policy
        if policy == nil, let file = config.policyFile {
            switch AssumeRoleParameters.loadPolicy(file, setName: setName, configDirectory: nil, key: "policy_file") {
            case .success(let text): policy = text
            case .failure(let error): problems.append(error.message)
            }
        }
        let parameters = AssumeRoleParameters(
            roleArn: config.roleArn, roleSessionName: config.roleSessionName, duration: config.duration,
            externalId: config.externalId, policy: policy, sourceIdentity: config.sourceIdentity)
        problems += parameters.validationProblems(setName: setName)
        return problems.isEmpty ? .success(parameters) : .failure(AssumeRoleConfigError(problems: problems))
    }

    /// Every problem `credd config check` should report for this set (no network); empty when it is fine.
    public static func validationProblems(
        setName: String, config: AssumeRoleSetConfig, environment: [String: String]
    ) -> [String] {
        var problems: [String] = []
        if case .failure(let error) = parameters(setName: setName, config: config) { problems += error.problems }
        if let message = STSEndpoint.validationMessage(
            setName: setName, region: config.region, endpoint: config.endpoint,
            allowGlobalEndpoint: config.allowGlobalEndpoint, environment: environment)
        {
            problems.append(message)
        }
        return problems
    }

    /// What `credd config check` and start-up should print as warnings (the global endpoint's version 1 tokens).
    public static func warnings(setName: String, config: AssumeRoleSetConfig, environment: [String: String]) -> [String] {
        let endpoint = STSEndpoint.resolve(
            setName: setName, region: config.region, endpoint: config.endpoint,
            allowGlobalEndpoint: config.allowGlobalEndpoint, environment: environment)
        if case .success(let resolved) = endpoint { return resolved.warnings }
        return []
    }

    /// The source for an `assume-role` set whose `from` set is `source`. Logs the endpoint's warnings once.
    /// Throws `AssumeRoleConfigError` when the config has a problem.
    public static func make(
        setName: String, config: AssumeRoleSetConfig, environment: [String: String], httpClient: HTTPClient,
        from source: CredentialSet, logger: Logger, now: @escaping @Sendable () -> Date = { Date() }
    ) throws -> AssumeRoleSource {
        let problems = validationProblems(setName: setName, config: config, environment: environment)
        guard problems.isEmpty else { throw AssumeRoleConfigError(problems: problems) }
        let parameters = try parameters(setName: setName, config: config).get()
        let endpoint = try STSEndpoint.resolve(
            setName: setName, region: config.region, endpoint: config.endpoint,
            allowGlobalEndpoint: config.allowGlobalEndpoint, environment: environment
        ).mapError { AssumeRoleConfigError(problems: [$0.message]) }.get()
        for warning in endpoint.warnings {
            logger.warning("\(warning)", metadata: ["credd.set": "\(setName)", "sts.endpoint": "\(endpoint)"])
        }
        return AssumeRoleSource(
            setName: setName, sourceSetName: config.from, parameters: parameters, endpoint: endpoint,
            httpClient: httpClient, timeout: .seconds(5), now: now,
            currentSourceCredentials: { try await source.currentCredentials() },
            refreshSource: { try await source.refreshOnce() })
    }
}
