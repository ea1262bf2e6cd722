// STS failures phrased for the person who has to act on them, as `SourceError`s.
import Foundation

/// What an error message needs to know about the call that failed. Holds no secret.
public struct AssumeRoleErrorContext: Sendable {
    public var setName: String
    public var sourceSetName: String
    public var roleArn: String
    public var endpoint: STSEndpoint
    /// The caller's ARN when known (from the STS message or the source); else the key suffix names it.
    public var callerArn: String?
    /// Last four characters of the source access key id.
    public var callerKeySuffix: String
    /// When credd signed the request (shown when the signature is refused: clock skew).
    public var signingTime: Date

    public init(
        setName: String, sourceSetName: String, roleArn: String, endpoint: STSEndpoint, callerArn: String? = nil,
        callerKeySuffix: String, signingTime: Date
    ) {
        self.setName = setName
        self.sourceSetName = sourceSetName
        self.roleArn = roleArn
        self.endpoint = endpoint
        self.callerArn = callerArn
        self.callerKeySuffix = callerKeySuffix
        self.signingTime = signingTime
    }

    /// The code for an expired source token, which the source answers by refreshing its source and retrying once.
    public static let sourceCredentialsExpiredCode = "SourceCredentialsExpired"

    static let throttlingCodes: Set<String> = [
        "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled", "RequestThrottledException",
        "TooManyRequestsException", "RequestLimitExceeded", "PriorRequestNotComplete", "SlowDown",
        "BandwidthLimitExceeded", "ProvisionedThroughputExceededException", "EC2ThrottledException",
    ]
    static let serverCodes: Set<String> = [
        "InternalFailure", "InternalError", "ServiceUnavailable", "ServiceUnavailableException",
        "IDPCommunicationError", "RequestTimeout", "RequestTimeoutException",
    ]

    /// Who made the call, as precisely as known: an ARN from STS's own message ("User: arn:… is not
    /// authorized"), else the source's ARN, else the source set and its key suffix.
    func caller(stsMessage: String) -> String {
        if let arn = Self.arnInMessage(stsMessage) { return arn }
        if let callerArn { return callerArn }
        return "the credentials of set \(sourceSetName) (access key …\(callerKeySuffix))"
    }

    static func arnInMessage(_ message: String) -> String? {
        guard let range = message.range(of: "User: arn:") else { return nil }
        let start = message.index(range.lowerBound, offsetBy: "User: ".count)
        let arn = message[start...].prefix { !$0.isWhitespace }
        return arn.isEmpty ? nil : String(arn)
    }

    /// The `SourceError` for `failure`.
    public func sourceError(for failure: STSFailure) -> SourceError {
        let set = "credential set \(setName)"
        let host = endpoint.url.host ?? endpoint.description
        switch failure {
        case .unreachable(let why):
            return SourceError(
                code: "STSUnreachable",
                message: "credd could not reach STS at \(endpoint) for \(set) (\(why)); it keeps retrying with backoff. Check the network, proxy and DNS for \(host), or credentials.\(setName).endpoint.",
                disposition: .transient)

        case .unreadableAnswer(let status, let reason):
            let transient = status == 200 || status == 429 || status >= 500
            return SourceError(
                code: status >= 500 ? "STSUnavailable" : "STSUnreadableAnswer",
                message: "STS at \(endpoint) gave \(set) an answer credd cannot read (HTTP \(status): \(reason)). "
                    + (transient
                        ? "credd retries with backoff; if it persists, check for a proxy between credd and \(host)."
                        : "Check that credentials.\(setName).endpoint is an STS endpoint and that no proxy answers in its place."),
                disposition: transient ? .transient : .needsAction)

        case .service(let error):
            return serviceError(error)
        }
    }

    private func serviceError(_ error: STSServiceError) -> SourceError {
        let set = "credential set \(setName)"
        let said = error.message.isEmpty ? error.code : error.message
        let region = endpoint.signingRegion
        let requestId = error.requestId.map { " (request id \($0))" } ?? ""
        switch error.code {
        case "AccessDenied":
            let caller = caller(stsMessage: error.message)
            return SourceError(
                code: "AccessDenied",
                message: "STS at \(endpoint) denied \(caller) AssumeRole of \(roleArn) for \(set): \"\(said)\"\(requestId). Let \(caller) assume the role: the role's trust policy must name it as principal (with the sts:ExternalId condition matching credentials.\(setName).external_id if one is set), and the caller's own policies must allow sts:AssumeRole on \(roleArn).",
                disposition: .needsAction)

        case "ExpiredToken", "ExpiredTokenException", "RequestExpired":
            return SourceError(
                code: Self.sourceCredentialsExpiredCode,
                message: "STS at \(endpoint) says the source credentials of \(set), from set \(sourceSetName) (access key …\(callerKeySuffix)), have expired: \"\(said)\"\(requestId). credd refreshes set \(sourceSetName) and retries once; if this persists, check set \(sourceSetName) in `credd status` and the system clock.",
                disposition: .transient)

        case "RegionDisabledException", "RegionDisabled":
            return SourceError(
                code: "RegionDisabled",
                message: "STS is not activated in region \(region) for the account \(set) calls from: \"\(said)\"\(requestId). Activate it: IAM console → Account settings → Security Token Service (STS) → Endpoints → \(region) → Activate; for an opt-in region enable the region first (AWS console → Account → AWS Regions, or `aws account enable-region --region-name \(region)`). Or set credentials.\(setName).region to a region where STS is active.",
                disposition: .needsAction)

        case "InvalidClientTokenId", "UnrecognizedClientException":
            return SourceError(
                code: "InvalidClientTokenId",
                message: "STS at \(endpoint) does not recognise the access key …\(callerKeySuffix) of set \(sourceSetName), the source of \(set): \"\(said)\"\(requestId). The key was deleted or deactivated, or its session token is a version 1 token (from the global endpoint) used against opt-in region \(region). Check set \(sourceSetName) with `credd status`; chained sets get version 2 tokens from regional endpoints.",
                disposition: .needsAction)

        case "SignatureDoesNotMatch", "IncompleteSignature", "InvalidSignatureException":
            return SourceError(
                code: "SignatureDoesNotMatch",
                message: "STS at \(endpoint) rejected credd's signature for \(set): \"\(said)\"\(requestId). Most often the system clock is off: credd signed at \(RFC3339.format(signingTime)) and AWS refuses requests more than 5 minutes from its time; synchronise the clock (timedatectl status, chronyc tracking). Otherwise the secret key of set \(sourceSetName) does not belong to its access key …\(callerKeySuffix).",
                disposition: .needsAction)

        case "AuthFailure":
            return SourceError(
                code: "AuthFailure",
                message: "STS at \(endpoint) could not validate the credentials of set \(sourceSetName) for \(set): \"\(said)\"\(requestId). Version 1 session tokens (from the global endpoint sts.amazonaws.com) fail in opt-in regions such as \(region): have set \(sourceSetName) use a regional STS endpoint.",
                disposition: .needsAction)

        case "MalformedPolicyDocument", "MalformedPolicyDocumentException":
            return SourceError(
                code: "MalformedPolicyDocument",
                message: "STS rejected the session policy of \(set): \"\(said)\"\(requestId). Fix credentials.\(setName).policy: it must be a valid IAM policy document (Version, Statement) of at most 2048 characters.",
                disposition: .needsAction)

        case "PackedPolicyTooLarge", "PackedPolicyTooLargeException":
            return SourceError(
                code: "PackedPolicyTooLarge",
                message: "STS says the session policy of \(set) is too large once packed: \"\(said)\"\(requestId). Shorten credentials.\(setName).policy (fewer statements, wildcards).",
                disposition: .needsAction)

        case "ValidationError", "InvalidParameterValue", "InvalidParameterCombination", "MissingParameter":
            return SourceError(
                code: error.code,
                message: "STS rejected the AssumeRole parameters of \(set): \"\(said)\"\(requestId). Fix credentials.\(setName); when it is about DurationSeconds, lower duration to at most the role's maximum session duration (and 1 h when chaining from role credentials).",
                disposition: .needsAction)

        default:
            if Self.throttlingCodes.contains(error.code) || error.status == 429 {
                return SourceError(
                    code: "STSThrottled",
                    message: "STS at \(endpoint) is throttling AssumeRole for \(set) (\(error.code): \"\(said)\")\(requestId); credd retries with backoff. If it persists, something else in the account calls STS too often.",
                    disposition: .transient)
            }
            if Self.serverCodes.contains(error.code) || error.status >= 500 || error.type == "Receiver" {
                return SourceError(
                    code: "STSUnavailable",
                    message: "STS at \(endpoint) failed AssumeRole for \(set) on its side (\(error.code), HTTP \(error.status): \"\(said)\")\(requestId); credd retries with backoff.",
                    disposition: .transient)
            }
            return SourceError(
                code: error.code,
                message: "STS at \(endpoint) refused AssumeRole of \(roleArn) for \(set) (\(error.code), HTTP \(error.status): \"\(said)\")\(requestId). Check credentials.\(setName) and the role's settings.",
                disposition: .needsAction)
        }
    }

    /// The error when the source set cannot give credentials at all.
    public func sourceUnavailable(_ error: any Error) -> SourceError {
        let inner: SourceError
        if let sourceError = error as? SourceError {
            inner = sourceError
        } else {
            inner = SourceError(code: "SourceFailed", message: String(describing: error), disposition: .transient)
        }
        return SourceError(
            code: "SourceUnavailable",
            message: "Credential set \(setName) assumes \(roleArn) with the credentials of set \(sourceSetName), which has none to give. \(inner.code): \(inner.message)",
            disposition: inner.disposition)
    }
}
