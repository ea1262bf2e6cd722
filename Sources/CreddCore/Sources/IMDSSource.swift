// EC2 instance metadata (IMDSv2) as a credential source: session token, role, credentials, account id.
import AsyncHTTPClient
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1

/// Settings of the IMDS source (config `imds:`).
public struct IMDSSettings: Sendable, Equatable {
    public enum EndpointMode: String, Sendable { case ipv4 = "IPv4", ipv6 = "IPv6" }
    /// Base URL without a trailing slash, e.g. "http://169.254.169.254".
    public var endpoint: String
    public var allowV1: Bool
    /// A fixed role name; nil discovers it.
    public var role: String?
    public var pollInterval: Duration
    public var timeout: Duration
    public var attempts: Int
    public var tokenTTL: Int
    /// AWS_EC2_METADATA_DISABLED=true: the source refuses to run.
    public var disabled: Bool

    public init(
        endpoint: String = IMDSSettings.defaultEndpoint(mode: .ipv4), allowV1: Bool = false, role: String? = nil,
        pollInterval: Duration = .seconds(300), timeout: Duration = .seconds(1), attempts: Int = 3,
        tokenTTL: Int = 21600, disabled: Bool = false
    ) {
        self.endpoint = endpoint
        self.allowV1 = allowV1
        self.role = role
        self.pollInterval = pollInterval
        self.timeout = timeout
        self.attempts = attempts
        self.tokenTTL = tokenTTL
        self.disabled = disabled
    }

    public static func defaultEndpoint(mode: EndpointMode) -> String {
        mode == .ipv6 ? "http://[fd00:ec2::254]" : "http://169.254.169.254"
    }
}

/// The credentials document IMDS returns for a role (PROTOCOLS §2).
struct IMDSCredentialsDocument: Decodable {
    let Code: String?
    let Message: String?
    let AccessKeyId: String?
    let SecretAccessKey: String?
    let Token: String?
    let Expiration: String?
}

struct IMDSIdentityDocument: Decodable {
    let accountId: String?
}

/// Parsing of IMDS answers, apart from transport so it is unit-tested and fuzzed.
public enum IMDSParsing {
    /// Parses the credentials document; `where` names the URL for messages.
    public static func credentials(_ body: [UInt8], where url: String) throws -> Credentials {
        let doc: IMDSCredentialsDocument
        do {
            doc = try JSONDecoder().decode(IMDSCredentialsDocument.self, from: Data(body))
        } catch {
            throw SourceError(
                code: "IMDSBadResponse",
                message: "IMDS at \(url) answered with a credentials document that is not valid JSON (\(body.count) bytes); credd keeps the last good credentials and retries.")
        }
        if let code = doc.Code, code != "Success" {
            let detail = doc.Message.map { ": \($0)" } ?? ""
            throw SourceError(
                code: "IMDSCredentialsError",
                message: "IMDS at \(url) returned Code \(code)\(detail). Check that the instance profile's role trusts ec2.amazonaws.com and is attached to this instance.")
        }
        var missing: [String] = []
        if (doc.AccessKeyId ?? "").isEmpty { missing.append("AccessKeyId") }
        if (doc.SecretAccessKey ?? "").isEmpty { missing.append("SecretAccessKey") }
        if (doc.Token ?? "").isEmpty { missing.append("Token") }
        if (doc.Expiration ?? "").isEmpty { missing.append("Expiration") }
        guard missing.isEmpty, let key = doc.AccessKeyId, let secret = doc.SecretAccessKey, let token = doc.Token,
            let expirationText = doc.Expiration
        else {
            throw SourceError(
                code: "IMDSBadResponse",
                message: "IMDS at \(url) answered without \(missing.joined(separator: ", ")); credd keeps the last good credentials and retries.")
        }
        guard let expiration = RFC3339.parse(expirationText) else {
            throw SourceError(
                code: "IMDSBadResponse",
                message: "IMDS at \(url) answered with an Expiration that is not a timestamp; credd keeps the last good credentials and retries.")
        }
        return Credentials(
            accessKeyId: key, secretAccessKey: Secret(secret), sessionToken: Secret(token), expiration: expiration)
    }

    /// The first line of the role listing.
    public static func roleName(_ body: [UInt8]) -> String? {
        let text = String(decoding: body, as: UTF8.self)
        let first = text.split(whereSeparator: { $0 == "\n" || $0 == "\r" }).first.map(String.init)?
            .trimmingCharacters(in: .whitespaces)
        guard let first, !first.isEmpty, !first.contains("/") else { return nil }
        return first
    }

    public static func accountId(_ body: [UInt8]) -> String? {
        guard let doc = try? JSONDecoder().decode(IMDSIdentityDocument.self, from: Data(body)),
            let id = doc.accountId, id.count == 12, id.allSatisfy(\.isNumber)
        else { return nil }
        return id
    }
}

/// EC2 role credentials through IMDSv2 (IMDSv1 only when configured).
public final class IMDSSource: CredentialSource {
    public let kind = "imds"
    public let settings: IMDSSettings
    private let http: HTTPClient
    private let now: @Sendable () -> Date
    private struct SessionToken { var value: String; var expires: Date }
    private struct State { var token: SessionToken?; var accountId: String?; var role: String? }
    private let state = NIOLockedValueBox(State())

    public init(settings: IMDSSettings, httpClient: HTTPClient, now: @escaping @Sendable () -> Date = { Date() }) {
        self.settings = settings
        self.http = httpClient
        self.now = now
    }

    public var summary: String {
        "IMDS at \(settings.endpoint)" + (settings.role.map { ", role \($0)" } ?? "") + (settings.allowV1 ? " (IMDSv1 allowed)" : "")
    }

    public var refreshTraits: RefreshTraits {
        RefreshTraits(refreshBefore: .seconds(20 * 60), pollInterval: settings.pollInterval, staticStability: true)
    }

    public func fetch(logger: Logger) async throws -> Credentials {
        if settings.disabled {
            throw SourceError(
                code: "IMDSDisabled",
                message: "IMDS is disabled by AWS_EC2_METADATA_DISABLED=true in credd's environment; unset it or configure another source.",
                disposition: .needsAction)
        }
        let role = try await roleName(logger: logger)
        let path = "/latest/meta-data/iam/security-credentials/\(role)"
        let body: [UInt8]
        do {
            body = try await get(path, logger: logger)
        } catch let e as IMDSHTTPError where e.status == 404 {
            // The role may have been renamed or replaced: discover it again next time.
            state.withLockedValue { $0.role = nil }
            throw SourceError(
                code: "IMDSRoleNotFound",
                message: "IMDS at \(settings.endpoint) has no credentials for role \(role) (404); the instance profile may have changed. credd will look the role up again.")
        }
        var credentials = try IMDSParsing.credentials(body, where: settings.endpoint + path)
        credentials.accountId = await accountId(logger: logger)
        // Instance-profile credentials are a role session: AssumeRole with them is role chaining (at most 1 h).
        credentials.isRoleCredentials = true
        return credentials
    }

    private func roleName(logger: Logger) async throws -> String {
        if let role = settings.role { return role }
        if let role = state.withLockedValue({ $0.role }) { return role }
        let body: [UInt8]
        do {
            body = try await get("/latest/meta-data/iam/security-credentials/", logger: logger)
        } catch let e as IMDSHTTPError where e.status == 404 {
            throw SourceError(
                code: "IMDSNoRole",
                message: "IMDS at \(settings.endpoint) reports no IAM role attached to this instance (404). Attach an instance profile, or configure another source.")
        }
        guard let role = IMDSParsing.roleName(body) else {
            throw SourceError(
                code: "IMDSBadResponse",
                message: "IMDS at \(settings.endpoint) answered the role listing with no role name; credd retries.")
        }
        state.withLockedValue { $0.role = role }
        return role
    }

    private func accountId(logger: Logger) async -> String? {
        if let id = state.withLockedValue({ $0.accountId }) { return id }
        guard let body = try? await get("/latest/dynamic/instance-identity/document", logger: logger),
            let id = IMDSParsing.accountId(body)
        else { return nil }
        state.withLockedValue { $0.accountId = id }
        return id
    }

    struct IMDSHTTPError: Error { let status: Int }

    /// GET with the session token; a 401 renews the token once; connection failures are retried.
    private func get(_ path: String, logger: Logger) async throws -> [UInt8] {
        var lastError: (any Error)?
        // A rejected token is renewed once at once, whatever `attempts` is (IMDS forgets tokens when it restarts).
        var renewedAfter401 = false
        var attempt = 0
        while attempt < max(1, settings.attempts) {
            attempt += 1
            do {
                let token = try await sessionToken(logger: logger)
                var request = HTTPClientRequest(url: settings.endpoint + path)
                request.method = .GET
                if let token { request.headers.add(name: "X-aws-ec2-metadata-token", value: token) }
                let (status, body) = try await execute(request)
                switch status {
                case 200: return body
                case 401:
                    state.withLockedValue { $0.token = nil }
                    lastError = SourceError(
                        code: "IMDSUnauthorized",
                        message: "IMDS at \(settings.endpoint) rejected the session token (401) again after renewing it; credd retries.")
                    if !renewedAfter401 && token != nil {
                        renewedAfter401 = true
                        attempt -= 1
                    }
                    continue
                case 403:
                    throw SourceError(
                        code: "IMDSForbidden",
                        message: "IMDS at \(settings.endpoint) refused access (403): instance metadata access may be disabled for this instance (aws ec2 modify-instance-metadata-options --http-endpoint enabled).",
                        disposition: .transient)
                case 404: throw IMDSHTTPError(status: 404)
                default:
                    lastError = SourceError(
                        code: "IMDSHTTPError",
                        message: "IMDS at \(settings.endpoint) answered \(path) with HTTP \(status); credd retries.")
                }
            } catch let e as SourceError where e.code != "IMDSUnreachable" {
                throw e
            } catch let e as IMDSHTTPError {
                throw e
            } catch {
                lastError = error
            }
            if attempt < settings.attempts { try await Task.sleep(for: .milliseconds(100 * attempt)) }
        }
        throw unreachable(lastError)
    }

    private func unreachable(_ error: (any Error)?) -> SourceError {
        if let e = error as? SourceError { return e }
        return SourceError(
            code: "IMDSUnreachable",
            message: "IMDS unreachable at \(settings.endpoint) (\(describe(error))). credd is not on EC2, IMDS is disabled, or the endpoint is wrong (imds.endpoint, AWS_EC2_METADATA_SERVICE_ENDPOINT); credd retries with backoff.")
    }

    /// The IMDSv2 session token, reused until 60 s before it expires; nil when falling back to IMDSv1.
    private func sessionToken(logger: Logger) async throws -> String? {
        let t = now()
        if let token = state.withLockedValue({ $0.token }), token.expires.timeIntervalSince(t) > 60 { return token.value }
        var request = HTTPClientRequest(url: settings.endpoint + "/latest/api/token")
        request.method = .PUT
        request.headers.add(name: "X-aws-ec2-metadata-token-ttl-seconds", value: String(settings.tokenTTL))
        let status: Int
        let body: [UInt8]
        do {
            (status, body) = try await execute(request)
        } catch {
            if settings.allowV1 { return nil }
            throw unreachable(error)
        }
        switch status {
        case 200:
            let value = String(decoding: body, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            guard !value.isEmpty, value.utf8.count <= 1024, value.allSatisfy({ $0.isASCII && !$0.isWhitespace }) else {
                throw SourceError(code: "IMDSBadResponse", message: "IMDS at \(settings.endpoint) answered the token request with an unusable token; credd retries.")
            }
            state.withLockedValue {
                $0.token = SessionToken(value: value, expires: t.addingTimeInterval(TimeInterval(settings.tokenTTL)))
            }
            return value
        case 403 where settings.allowV1, 404 where settings.allowV1, 405 where settings.allowV1:
            return nil
        case 403:
            throw SourceError(
                code: "IMDSForbidden",
                message: "IMDS at \(settings.endpoint) refused the IMDSv2 token request (403): metadata access is disabled or the request carried X-Forwarded-For.")
        default:
            throw SourceError(
                code: "IMDSTokenFailed",
                message: "IMDS at \(settings.endpoint) answered the IMDSv2 token request with HTTP \(status). If IMDSv2 is unsupported here, set imds.allow_v1: true; credd retries.")
        }
    }

    private func execute(_ request: HTTPClientRequest) async throws -> (Int, [UInt8]) {
        let response = try await http.execute(request, timeout: .nanoseconds(Int64(timeInterval(settings.timeout) * 1e9)))
        let body = try await response.body.collect(upTo: 64 * 1024)
        return (Int(response.status.code), Array(buffer: body))
    }
}

/// A short, secret-free description of a transport error.
func describe(_ error: (any Error)?) -> String {
    guard let error else { return "no answer" }
    if let e = error as? HTTPClientError {
        switch e {
        case .connectTimeout: return "connect timed out"
        case .deadlineExceeded, .readTimeout: return "timed out"
        case .remoteConnectionClosed: return "connection closed"
        default: return "\(e)"
        }
    }
    if let e = error as? IOError { return e.description }
    if let e = error as? ChannelError { return "\(e)" }
    let text = "\(error)"
    return text.count > 200 ? String(text.prefix(200)) + "…" : text
}
