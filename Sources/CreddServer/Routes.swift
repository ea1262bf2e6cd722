// Request routing and the one place errors become HTTP answers.
import CreddCore
import Foundation
import NIOCore
import NIOHTTP1

/// What a request asks for.
public enum Route: Sendable, Equatable {
    case credentials(set: String)
    case health
    case status
    case metrics
}

/// A refusal or failure, as a client sees it: status, stable code, a sentence.
public struct HTTPError: Error, Sendable, Equatable {
    public var status: HTTPResponseStatus
    public var code: String
    public var message: String
    public var retryAfter: Int?
    public var closeConnection: Bool

    public init(_ status: HTTPResponseStatus, _ code: String, _ message: String, retryAfter: Int? = nil, close: Bool = false) {
        self.status = status
        self.code = code
        self.message = message
        self.retryAfter = retryAfter
        self.closeConnection = close
    }

    public init(_ denied: AccessDenied) {
        switch denied.reason {
        case .missingToken: self.init(.unauthorized, "MissingToken", denied.message)
        // Closing after a wrong token makes every guess cost a new connection (TokenGuessLimiter).
        case .wrongToken: self.init(.forbidden, "WrongToken", denied.message, close: true)
        case .tooManyWrongTokens: self.init(.tooManyRequests, "TooManyWrongTokens", denied.message, retryAfter: denied.retryAfter ?? 1, close: true)
        case .callerNotAllowed: self.init(.forbidden, "CallerNotAllowed", denied.message)
        case .badHost: self.init(.forbidden, "ForbiddenHost", denied.message)
        case .origin: self.init(.forbidden, "ForbiddenOrigin", denied.message)
        }
    }

    /// A set that cannot answer now: 503 with the source's reason.
    public static func unavailable(set: String, status: SetStatus) -> HTTPError {
        let reason: String
        switch status.state {
        case .starting, .refreshing:
            reason = "credd is fetching the first credentials for set \"\(set)\" (\(status.summary)); retry in a second."
        default:
            reason = status.lastError.map { "set \"\(set)\": \($0)" }
                ?? "set \"\(set)\" holds no valid credentials (the last ones expired); credd keeps retrying (\(status.summary))."
        }
        let code = status.lastErrorCode ?? "CredentialsUnavailable"
        return HTTPError(.serviceUnavailable, code, reason, retryAfter: status.state == .actionRequired ? 30 : 1)
    }
}

public enum Router {
    /// Maps a request line to a route. Set names are plain: no percent-encoding, no dots-only segments.
    public static func route(method: HTTPMethod, uri: String) -> Result<Route, HTTPError> {
        guard uri.hasPrefix("/") else {
            return .failure(HTTPError(.badRequest, "BadTarget", "the request target must be a path like /v1/credentials, not an absolute URL.", close: true))
        }
        var path = Substring(uri)
        if let q = path.firstIndex(where: { $0 == "?" || $0 == "#" }) { path = path[..<q] }
        let route: Route
        switch path {
        case "/v1/credentials", "/v1/credentials/": route = .credentials(set: "default")
        case "/healthz": route = .health
        case "/v1/status": route = .status
        case "/metrics": route = .metrics
        default:
            guard path.hasPrefix("/v1/credentials/") else {
                return .failure(HTTPError(.notFound, "NotFound", "no such path; credd serves /v1/credentials, /v1/credentials/NAME, /healthz, /v1/status and /metrics."))
            }
            let name = String(path.dropFirst("/v1/credentials/".count))
            guard CreddConfig.isValidSetName(name) else {
                return .failure(HTTPError(.notFound, "UnknownSet", "no credential set by that name; set names use letters, digits, '-', '_' and '.'."))
            }
            route = .credentials(set: name)
        }
        guard method == .GET || method == .HEAD else {
            return .failure(HTTPError(.methodNotAllowed, "MethodNotAllowed", "only GET is allowed here."))
        }
        return .success(route)
    }
}

/// Encodes HTTP/1.1 answers as bytes; the credentials answer is encoded once per generation.
public enum ResponseBytes {
    public static func ok(body: some Collection<UInt8>, contentType: String = "application/json", keepAlive: Bool = true, extraHeaders: String = "") -> ByteBuffer {
        var buffer = ByteBufferAllocator().buffer(capacity: 160 + body.count)
        buffer.writeString("HTTP/1.1 200 OK\r\nContent-Type: \(contentType)\r\nContent-Length: \(body.count)\r\n")
        buffer.writeString("Cache-Control: no-store\r\n")
        buffer.writeString(extraHeaders)
        if !keepAlive { buffer.writeString("Connection: close\r\n") }
        buffer.writeString("\r\n")
        buffer.writeBytes(body)
        return buffer
    }

    struct ErrorBody: Encodable {
        let code: String
        let message: String
    }

    public static func error(_ e: HTTPError, keepAlive: Bool) -> ByteBuffer {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        let body = (try? encoder.encode(ErrorBody(code: e.code, message: e.message))) ?? Data()
        var buffer = ByteBufferAllocator().buffer(capacity: 200 + body.count)
        buffer.writeString("HTTP/1.1 \(e.status.code) \(e.status.reasonPhrase)\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\n")
        if let r = e.retryAfter { buffer.writeString("Retry-After: \(r)\r\n") }
        if e.status == .methodNotAllowed { buffer.writeString("Allow: GET, HEAD\r\n") }
        if e.status == .unauthorized { buffer.writeString("WWW-Authenticate: credd-token\r\n") }
        if !keepAlive || e.closeConnection { buffer.writeString("Connection: close\r\n") }
        buffer.writeString("\r\n")
        buffer.writeBytes(body)
        return buffer
    }

    /// Drops the body of a GET answer for HEAD.
    public static func headOnly(_ full: ByteBuffer) -> ByteBuffer {
        var copy = full
        let view = full.readableBytesView
        if let end = view.firstRange(of: [0x0D, 0x0A, 0x0D, 0x0A]) {
            copy.moveWriterIndex(to: copy.readerIndex + (end.upperBound - view.startIndex))
        }
        return copy
    }
}
