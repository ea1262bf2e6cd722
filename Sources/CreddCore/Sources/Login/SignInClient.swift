// The one Sign-In call credd makes: refresh an `aws login` session (`POST /v1/token` with a DPoP proof).
import AsyncHTTPClient
import CreddCrypto
import Foundation
import Logging
import NIOCore
import NIOHTTP1

/// Calls `CreateOAuth2Token` with `grantType=refresh_token`, unsigned (no SigV4), as botocore's
/// `LoginCredentialFetcher` does, and maps every answer to a `SignInGrant` or a `SourceError`:
///
/// | answer | SourceError code | disposition |
/// |---|---|---|
/// | 401 `TOKEN_EXPIRED`, 403 `USER_CREDENTIALS_CHANGED`, `AUTHCODE_EXPIRED` | `LoginRequired` | needsAction |
/// | 403 `INSUFFICIENT_PERMISSIONS` | `LoginInsufficientPermissions` | needsAction |
/// | 400 `INVALID_REQUEST` and other 4xx | `LoginRefreshRejected` | needsAction |
/// | 429 | `SignInThrottled` | transient |
/// | 5xx | `SignInUnavailable` | transient |
/// | timeout, refused, reset | `SignInUnreachable` | transient |
/// | 200 that is not a token answer | `SignInInvalidResponse` | transient |
public struct SignInClient: Sendable {
    public let httpClient: HTTPClient
    /// Deadline for one request, connect to last byte.
    public var timeout: Duration

    public init(httpClient: HTTPClient, timeout: Duration = .seconds(10)) {
        self.httpClient = httpClient
        self.timeout = timeout
    }

    /// One refresh. `endpoint` is the base URL (`SignInEndpoint.resolve`); the proof's `htu` is
    /// `endpoint + /v1/token`, the URL the request goes to. `profile` only phrases errors.
    public func refresh(
        endpoint: String, clientId: String, refreshToken: Secret, key: P256SigningKey, profile: String, now: Date,
        logger: Logger
    ) async throws(SourceError) -> SignInGrant {
        let url = SignInEndpoint.tokenURL(base: endpoint)
        let proof: String
        do {
            proof = try DPoPProof.make(key: key, url: url, now: now)
        } catch {
            throw SourceError(
                code: "LoginCacheInvalid",
                message: "credd could not sign the DPoP proof with the dpopKey of profile \(profile)'s aws login "
                    + "session (\(error)): run `aws login --profile \(profile)` to get a new key.",
                disposition: .needsAction)
        }
        let body: Data
        do {
            body = try JSONSerialization.data(
                withJSONObject: ["clientId": clientId, "refreshToken": refreshToken.exposed, "grantType": "refresh_token"],
                options: [.sortedKeys, .withoutEscapingSlashes])
        } catch {
            throw SourceError(code: "LoginCacheInvalid", message: "credd could not encode the Sign-In request: \(error).")
        }
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "Accept", value: "application/json")
        request.headers.add(name: "User-Agent", value: "credd (aws login refresh)")
        request.headers.add(name: "DPoP", value: proof)
        request.body = .bytes(ByteBuffer(bytes: body))

        let seconds = Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18
        let status: Int
        let responseBody: Data
        do {
            let response = try await httpClient.execute(
                request, timeout: .nanoseconds(Int64(seconds * 1e9)), logger: logger)
            status = Int(response.status.code)
            let buffer = try await response.body.collect(upTo: 1 << 20)
            responseBody = Data(buffer.readableBytesView)
        } catch {
            throw SourceError(
                code: "SignInUnreachable",
                message: "The Sign-In service at \(url) did not answer the refresh of profile \(profile)'s aws login "
                    + "session (\(Self.describe(error, timeout: seconds))); credd retries with backoff.",
                disposition: .transient)
        }
        logger.debug("sign-in answered", metadata: ["signin.status": "\(status)", "signin.url": "\(url)"])
        switch Self.interpret(
            status: status, body: responseBody, url: url, profile: profile, refreshToken: refreshToken)
        {
        case .success(let grant): return grant
        case .failure(let error): throw error
        }
    }

    /// Maps one Sign-In answer to a grant or an error (pure; table-tested).
    public static func interpret(
        status: Int, body: Data, url: String, profile: String, refreshToken: Secret
    ) -> Result<SignInGrant, SourceError> {
        if status == 200 {
            return grant(from: body, url: url, profile: profile)
        }
        let answer = try? JSONDecoder().decode(ErrorAnswer.self, from: body)
        let error = sanitized(answer?.error, hiding: refreshToken)
        let serviceMessage = sanitized(answer?.message, hiding: refreshToken)
        let said = error.isEmpty ? "HTTP \(status)" : "HTTP \(status) \(error)"
        let detail = serviceMessage.isEmpty ? said : "\(said): \(serviceMessage)"
        switch (status, error) {
        case (_, "TOKEN_EXPIRED"), (_, "AUTHCODE_EXPIRED"):
            return .failure(
                SourceError(
                    code: "LoginRequired",
                    message: "login required: run `aws login --profile \(profile)` (the aws login session has expired; "
                        + "Sign-In at \(url) answered \(detail)).",
                    disposition: .needsAction))
        case (_, "USER_CREDENTIALS_CHANGED"):
            return .failure(
                SourceError(
                    code: "LoginRequired",
                    message: "login required: run `aws login --profile \(profile)` (the user's credentials changed "
                        + "since the login; Sign-In at \(url) answered \(detail)).",
                    disposition: .needsAction))
        case (_, "INSUFFICIENT_PERMISSIONS"):
            return .failure(
                SourceError(
                    code: "LoginInsufficientPermissions",
                    message: "The aws login session of profile \(profile) may not refresh its credentials: the "
                        + "identity lacks permission for signin:CreateOAuth2Token (Sign-In at \(url) answered "
                        + "\(detail)). Grant it, then run `aws login --profile \(profile)`.",
                    disposition: .needsAction))
        case (429, _):
            return .failure(
                SourceError(
                    code: "SignInThrottled",
                    message: "The Sign-In service at \(url) throttled the refresh of profile \(profile) (\(detail)); "
                        + "credd retries with backoff.",
                    disposition: .transient))
        case (500...599, _):
            return .failure(
                SourceError(
                    code: "SignInUnavailable",
                    message: "The Sign-In service at \(url) failed to refresh profile \(profile) (\(detail)); credd "
                        + "retries with backoff.",
                    disposition: .transient))
        default:
            return .failure(
                SourceError(
                    code: "LoginRefreshRejected",
                    message: "The Sign-In service at \(url) rejected the refresh of profile \(profile) (\(detail)). "
                        + "If it persists, run `aws login --profile \(profile)`.",
                    disposition: .needsAction))
        }
    }

    /// The 200 answer's shape (`CreateOAuth2TokenResponseBody`); JSONDecoder refuses a bool or string for `expiresIn`.
    struct TokenAnswer: Decodable {
        struct AccessToken: Decodable {
            let accessKeyId: String?
            let secretAccessKey: String?
            let sessionToken: String?
        }
        let accessToken: AccessToken?
        let expiresIn: Double?
        let refreshToken: String?
    }

    struct ErrorAnswer: Decodable {
        let error: String?
        let message: String?
    }

    static func grant(from body: Data, url: String, profile: String) -> Result<SignInGrant, SourceError> {
        func invalid(_ what: String) -> Result<SignInGrant, SourceError> {
            .failure(
                SourceError(
                    code: "SignInInvalidResponse",
                    message: "The Sign-In service at \(url) answered the refresh of profile \(profile) with an invalid "
                        + "token response (\(what)); credd retries with backoff. If it persists, run "
                        + "`aws login --profile \(profile)`.",
                    disposition: .transient))
        }
        let answer: TokenAnswer
        do {
            answer = try JSONDecoder().decode(TokenAnswer.self, from: body)
        } catch DecodingError.typeMismatch(_, let context) {
            return invalid("\(context.codingPath.map(\.stringValue).joined(separator: ".")) has the wrong type")
        } catch {
            return invalid("the body is not the expected JSON object")
        }
        guard let access = answer.accessToken else { return invalid("accessToken is missing") }
        guard let keyId = access.accessKeyId, !keyId.isEmpty else { return invalid("accessToken.accessKeyId is missing") }
        guard let secret = access.secretAccessKey, !secret.isEmpty else {
            return invalid("accessToken.secretAccessKey is missing")
        }
        guard let session = access.sessionToken, !session.isEmpty else {
            return invalid("accessToken.sessionToken is missing")
        }
        guard let refresh = answer.refreshToken, !refresh.isEmpty else { return invalid("refreshToken is missing") }
        guard let seconds = answer.expiresIn, seconds >= 1, seconds <= 86400, seconds.rounded() == seconds else {
            return invalid("expiresIn is missing or not a positive whole number of seconds")
        }
        let expiresIn = Int(seconds)
        return .success(
            SignInGrant(
                accessKeyId: keyId, secretAccessKey: Secret(secret), sessionToken: Secret(session),
                expiresIn: expiresIn, refreshToken: Secret(refresh)))
    }

    /// A service message fit for a status line: printable, at most 200 characters, never the refresh token.
    static func sanitized(_ message: String?, hiding refreshToken: Secret) -> String {
        guard var text = message, !text.isEmpty else { return "" }
        if !refreshToken.isEmpty { text = text.replacingOccurrences(of: refreshToken.exposed, with: "<redacted>") }
        text = String(text.unicodeScalars.map { $0.properties.generalCategory == .control ? " " : Character($0) })
        return text.count > 200 ? String(text.prefix(200)) + "…" : text
    }

    static func describe(_ error: any Error, timeout: Double) -> String {
        if let error = error as? HTTPClientError {
            switch error {
            case .deadlineExceeded, .readTimeout, .writeTimeout:
                return "no answer within \(timeout.formatted()) s"
            case .connectTimeout: return "connecting timed out"
            case .remoteConnectionClosed: return "the connection was closed without an answer"
            default: return "\(error)"
            }
        }
        return "\(error)"
    }
}
