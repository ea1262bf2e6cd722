// Every STS failure mapped to a SourceError: code, disposition, and a message that says what to do.
import CreddCore
import Foundation
import Testing

@Suite("AssumeRole error mapping")
struct AssumeRoleErrorTests {
    static let context = AssumeRoleErrorContext(
        setName: "deploy", sourceSetName: "default", roleArn: "arn:aws:iam::123456789012:role/deploy",
        endpoint: .regional(region: "me-south-1"), callerKeySuffix: "WXYZ",
        signingTime: Date(timeIntervalSince1970: 1_795_370_645))

    struct Row: Sendable, CustomTestStringConvertible {
        var stsCode: String
        var status: Int
        var stsMessage: String
        var code: String
        var disposition: SourceError.Disposition
        /// Fragments the message must contain.
        var says: [String]
        var testDescription: String { "\(stsCode) (HTTP \(status))" }
    }

    static let rows: [Row] = [
        Row(stsCode: "AccessDenied", status: 403,
            stsMessage: "User: arn:aws:sts::123456789012:assumed-role/web/i-0abc is not authorized to perform: sts:AssumeRole on resource: arn:aws:iam::123456789012:role/deploy",
            code: "AccessDenied", disposition: .needsAction,
            says: ["arn:aws:iam::123456789012:role/deploy", "arn:aws:sts::123456789012:assumed-role/web/i-0abc", "trust policy", "sts:AssumeRole", "credential set deploy"]),
        Row(stsCode: "AccessDenied", status: 403, stsMessage: "Access denied",
            code: "AccessDenied", disposition: .needsAction,
            says: ["arn:aws:iam::123456789012:role/deploy", "set default", "…WXYZ", "external_id"]),
        Row(stsCode: "ExpiredToken", status: 400, stsMessage: "The security token included in the request is expired",
            code: "SourceCredentialsExpired", disposition: .transient,
            says: ["set default", "…WXYZ", "refreshes set default and retries once", "credd status"]),
        Row(stsCode: "RegionDisabledException", status: 403,
            stsMessage: "STS is not activated in this region for account:123456789012. Your account administrator can activate STS in this region using the IAM Console.",
            code: "RegionDisabled", disposition: .needsAction,
            says: ["me-south-1", "Activate", "aws account enable-region --region-name me-south-1", "credentials.deploy.region"]),
        Row(stsCode: "RegionDisabled", status: 403, stsMessage: "",
            code: "RegionDisabled", disposition: .needsAction, says: ["me-south-1", "IAM console"]),
        Row(stsCode: "InvalidClientTokenId", status: 403, stsMessage: "The security token included in the request is invalid.",
            code: "InvalidClientTokenId", disposition: .needsAction,
            says: ["…WXYZ", "set default", "version 1", "me-south-1"]),
        Row(stsCode: "SignatureDoesNotMatch", status: 403,
            stsMessage: "Signature expired: 20261122T180405Z is now earlier than 20261122T181000Z (20261122T182500Z - 15 min.)",
            code: "SignatureDoesNotMatch", disposition: .needsAction,
            says: ["clock", "2026-11-22T18:04:05Z", "5 minutes", "…WXYZ"]),
        Row(stsCode: "MalformedPolicyDocument", status: 400, stsMessage: "Syntax errors in policy.",
            code: "MalformedPolicyDocument", disposition: .needsAction,
            says: ["credentials.deploy.policy", "Syntax errors in policy."]),
        Row(stsCode: "PackedPolicyTooLarge", status: 400, stsMessage: "Packed policy consumes 120% of allotted space",
            code: "PackedPolicyTooLarge", disposition: .needsAction, says: ["credentials.deploy.policy"]),
        Row(stsCode: "ValidationError", status: 400,
            stsMessage: "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
            code: "ValidationError", disposition: .needsAction,
            says: ["DurationSeconds", "credentials.deploy", "maximum session duration"]),
        Row(stsCode: "AuthFailure", status: 401, stsMessage: "AWS was not able to validate the provided access credentials",
            code: "AuthFailure", disposition: .needsAction, says: ["Version 1", "regional STS endpoint"]),
        Row(stsCode: "Throttling", status: 400, stsMessage: "Rate exceeded",
            code: "STSThrottled", disposition: .transient, says: ["throttling", "retries with backoff"]),
        Row(stsCode: "RequestLimitExceeded", status: 503, stsMessage: "Request limit exceeded.",
            code: "STSThrottled", disposition: .transient, says: ["throttling"]),
        Row(stsCode: "SomethingNew", status: 429, stsMessage: "slow down",
            code: "STSThrottled", disposition: .transient, says: ["throttling"]),
        Row(stsCode: "InternalFailure", status: 500, stsMessage: "We encountered an internal error. Please try again.",
            code: "STSUnavailable", disposition: .transient, says: ["on its side", "retries with backoff"]),
        Row(stsCode: "ServiceUnavailable", status: 503, stsMessage: "Service is unable to handle request.",
            code: "STSUnavailable", disposition: .transient, says: ["retries"]),
        Row(stsCode: "IDPCommunicationError", status: 400, stsMessage: "",
            code: "STSUnavailable", disposition: .transient, says: ["retries"]),
        Row(stsCode: "SomethingNew", status: 400, stsMessage: "a new kind of refusal",
            code: "SomethingNew", disposition: .needsAction,
            says: ["arn:aws:iam::123456789012:role/deploy", "a new kind of refusal", "credentials.deploy"]),
    ]

    @Test("STS error codes", arguments: rows)
    func serviceErrors(_ row: Row) {
        let error = Self.context.sourceError(
            for: .service(STSServiceError(status: row.status, type: "Sender", code: row.stsCode, message: row.stsMessage, requestId: "req-1")))
        #expect(error.code == row.code)
        #expect(error.disposition == row.disposition)
        for fragment in row.says { #expect(error.message.contains(fragment), "\(error.message)") }
        #expect(error.message.hasSuffix("."), "messages are full sentences: \(error.message)")
    }

    @Test("the caller is the ARN STS names, else a known source ARN, else the source set and key suffix")
    func callerNaming() {
        var context = Self.context
        let denied = STSFailure.service(STSServiceError(status: 403, code: "AccessDenied", message: "Access denied"))
        #expect(context.sourceError(for: denied).message.contains("the credentials of set default (access key …WXYZ)"))
        context.callerArn = "arn:aws:sts::123456789012:assumed-role/web/i-0abc"
        #expect(context.sourceError(for: denied).message.contains("denied arn:aws:sts::123456789012:assumed-role/web/i-0abc AssumeRole"))
    }

    @Test(
        "no answer or an unreadable one",
        arguments: [
            (STSFailure.unreachable("connection refused"), "STSUnreachable", SourceError.Disposition.transient),
            (.unreachable("no answer within the deadline"), "STSUnreachable", .transient),
            (.unreadableAnswer(status: 200, reason: "the AssumeRole answer has no Credentials/SessionToken"), "STSUnreadableAnswer", .transient),
            (.unreadableAnswer(status: 502, reason: "the body is not an STS ErrorResponse"), "STSUnavailable", .transient),
            (.unreadableAnswer(status: 404, reason: "the body is not an STS ErrorResponse"), "STSUnreadableAnswer", .needsAction),
        ])
    func transportFailures(failure: STSFailure, code: String, disposition: SourceError.Disposition) {
        let error = Self.context.sourceError(for: failure)
        #expect(error.code == code)
        #expect(error.disposition == disposition)
        #expect(error.message.contains("https://sts.me-south-1.amazonaws.com"))
        #expect(error.message.hasSuffix("."))
    }

    @Test("a source failure keeps the source's code in the text and its disposition")
    func sourceUnavailable() {
        let inner = SourceError(code: "LoginRequired", message: "The aws login session expired; run aws login.", disposition: .needsAction)
        let error = Self.context.sourceUnavailable(inner)
        #expect(error.code == "SourceUnavailable")
        #expect(error.disposition == .needsAction)
        #expect(error.message.contains("LoginRequired: The aws login session expired; run aws login."))
        #expect(error.message.contains("set default"))
        #expect(error.message.contains("arn:aws:iam::123456789012:role/deploy"))
    }
}
