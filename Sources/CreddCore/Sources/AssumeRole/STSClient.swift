// The STS AssumeRole call: form body, SigV4 signature, one POST, the XML answer read.
import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1

/// Why an STS call failed, before it is phrased for a person (see `AssumeRoleErrorContext`).
public enum STSFailure: Error, Sendable, Equatable, CustomStringConvertible {
    /// STS answered with an `ErrorResponse`.
    case service(STSServiceError)
    /// No answer: connection refused, DNS, TLS, timeout. The text never holds a secret.
    case unreachable(String)
    /// An answer that is not what STS sends (HTML from a proxy, a truncated body, a missing field).
    case unreadableAnswer(status: Int, reason: String)

    public var description: String {
        switch self {
        case .service(let error): return error.description
        case .unreachable(let why): return "unreachable: \(why)"
        case .unreadableAnswer(let status, let reason): return "unreadable answer (HTTP \(status)): \(reason)"
        }
    }
}

/// One HTTP request ready to send.
public struct STSHTTPRequest: Sendable, CustomStringConvertible {
    public var url: URL
    public var headers: [SigV4Header]
    public var body: [UInt8]
    /// The signing details; its canonical request holds the session token, so never log it.
    public var signed: SignedSigV4Request

    public var description: String { "POST \(url.absoluteString) (\(signed))" }
}

/// Sends a request and returns status and body. The default goes through AsyncHTTPClient; tests pass a fake.
public typealias STSTransport = @Sendable (_ request: STSHTTPRequest, _ timeout: Duration) async throws -> (status: Int, body: [UInt8])

public struct STSClient: Sendable {
    public let endpoint: STSEndpoint
    /// Deadline for the whole exchange (connect, send, answer).
    public let timeout: Duration
    let transport: STSTransport
    let now: @Sendable () -> Date

    public static let apiVersion = "2011-06-15"
    public static let contentType = "application/x-www-form-urlencoded; charset=utf-8"
    /// Answers larger than this are not STS answers.
    static let maximumAnswerBytes = 256 * 1024

    /// A client over the shared `HTTPClient`.
    public init(
        httpClient: HTTPClient, endpoint: STSEndpoint, timeout: Duration = .seconds(5),
        now: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.init(endpoint: endpoint, timeout: timeout, now: now, transport: Self.asyncHTTPClientTransport(httpClient))
    }

    /// A client over any transport (tests).
    public init(
        endpoint: STSEndpoint, timeout: Duration = .seconds(5), now: @escaping @Sendable () -> Date = { Date() },
        transport: @escaping STSTransport
    ) {
        self.endpoint = endpoint
        self.timeout = timeout
        self.now = now
        self.transport = transport
    }

    // MARK: - Request

    /// The form fields of an AssumeRole call, in the order botocore sends them for these keyword arguments.
    public static func assumeRoleFields(_ parameters: AssumeRoleParameters, durationSeconds: Int) -> [(String, String)] {
        var fields: [(String, String)] = [
            ("Action", "AssumeRole"), ("Version", apiVersion),
            ("RoleArn", parameters.roleArn), ("RoleSessionName", parameters.roleSessionName),
            ("DurationSeconds", String(durationSeconds)),
        ]
        if let externalId = parameters.externalId { fields.append(("ExternalId", externalId)) }
        if let policy = parameters.policy { fields.append(("Policy", policy)) }
        if let sourceIdentity = parameters.sourceIdentity { fields.append(("SourceIdentity", sourceIdentity)) }
        return fields
    }

    /// `application/x-www-form-urlencoded` as Python's `urlencode` writes it: letters, digits and `-._~`
    /// stay, a space becomes "+", every other UTF-8 byte becomes %XX.
    public static func formEncode(_ fields: [(String, String)]) -> String {
        fields.map { "\(formEncode($0.0))=\(formEncode($0.1))" }.joined(separator: "&")
    }

    static func formEncode(_ text: String) -> String {
        SigV4Signer.uriEncode(text).replacingOccurrences(of: "%20", with: "+")
    }

    /// Builds and signs the AssumeRole POST at `date`.
    public func assumeRoleRequest(
        _ parameters: AssumeRoleParameters, durationSeconds: Int, credentials: SigningCredentials, date: Date
    ) -> STSHTTPRequest {
        let body = Array(Self.formEncode(Self.assumeRoleFields(parameters, durationSeconds: durationSeconds)).utf8)
        let request = SigV4Request(
            method: "POST", path: "/",
            headers: [SigV4Header("Host", endpoint.hostHeader), SigV4Header("Content-Type", Self.contentType)],
            body: body)
        let signer = SigV4Signer(service: "sts", region: endpoint.signingRegion)
        let signed = signer.sign(request, credentials: credentials, date: date)
        return STSHTTPRequest(url: URL(string: endpoint.url.absoluteString + "/")!, headers: signed.headers, body: body, signed: signed)
    }

    // MARK: - Call

    /// Calls AssumeRole with `credentials`, signing at `now()`. Throws only `STSFailure`.
    public func assumeRole(
        _ parameters: AssumeRoleParameters, durationSeconds: Int, credentials: Credentials, logger: Logger
    ) async throws -> AssumeRoleResult {
        let request = assumeRoleRequest(
            parameters, durationSeconds: durationSeconds, credentials: SigningCredentials(credentials), date: now())
        let answer: (status: Int, body: [UInt8])
        do {
            answer = try await transport(request, timeout)
        } catch let failure as STSFailure {
            throw failure
        } catch {
            throw STSFailure.unreachable(Self.describe(error))
        }
        guard answer.status == 200 else {
            if let serviceError = STSResponseParser.serviceError(status: answer.status, body: answer.body) {
                throw STSFailure.service(serviceError)
            }
            throw STSFailure.unreadableAnswer(status: answer.status, reason: "the body is not an STS ErrorResponse")
        }
        do {
            let result = try STSResponseParser.assumeRoleResult(from: answer.body)
            logger.debug(
                "AssumeRole succeeded",
                metadata: [
                    "sts.role_arn": "\(parameters.roleArn)", "sts.assumed_role_arn": "\(result.assumedRoleArn)",
                    "sts.request_id": "\(result.requestId ?? "")", "sts.expiration": "\(RFC3339.format(result.credentials.expiration))",
                ])
            return result
        } catch {
            throw STSFailure.unreadableAnswer(status: answer.status, reason: "\(error)")
        }
    }

    /// The transport over AsyncHTTPClient: one POST with a deadline, the body read up to a limit.
    public static func asyncHTTPClientTransport(_ httpClient: HTTPClient) -> STSTransport {
        { request, timeout in
            var outgoing = HTTPClientRequest(url: request.url.absoluteString)
            outgoing.method = .POST
            for header in request.headers { outgoing.headers.add(name: header.name, value: header.value) }
            // After signing: proxies may rewrite User-Agent, so it is never signed.
            outgoing.headers.add(name: "User-Agent", value: "credd")
            outgoing.body = .bytes(ByteBuffer(bytes: request.body))
            let response = try await httpClient.execute(outgoing, timeout: TimeAmount(timeout))
            let body = try await response.body.collect(upTo: maximumAnswerBytes)
            return (Int(response.status.code), Array(buffer: body))
        }
    }

    /// A transport error as a short phrase without secrets (AsyncHTTPClient and NIO errors carry none).
    static func describe(_ error: any Error) -> String {
        if let httpError = error as? HTTPClientError {
            switch httpError {
            case .deadlineExceeded, .readTimeout, .writeTimeout: return "no answer within the deadline"
            case .connectTimeout: return "the connection timed out"
            default: return "\(httpError)"
            }
        }
        if let ioError = error as? IOError { return ioError.description }
        return String(describing: error)
    }
}
