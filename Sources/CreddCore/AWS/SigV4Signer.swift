// AWS Signature Version 4 (header signing): canonical request, string to sign, signature, Authorization.
import CreddCrypto
import Foundation

/// One HTTP header as the signer sees it. Names keep their case; the signer lowercases them for signing.
public struct SigV4Header: Sendable, Equatable {
    public var name: String
    public var value: String
    public init(_ name: String, _ value: String) {
        self.name = name
        self.value = value
    }
}

/// The request to sign, as it will go on the wire.
public struct SigV4Request: Sendable {
    public var method: String
    /// The path as sent in the request line (already percent-encoded where the HTTP layer encodes it);
    /// the signer encodes it once more, as SigV4 requires for every service but S3.
    public var path: String
    /// The raw query string without `?` (empty when there is none).
    public var query: String
    /// Must include `Host` exactly as it will be sent.
    public var headers: [SigV4Header]
    public var body: [UInt8]

    public init(method: String, path: String, query: String = "", headers: [SigV4Header], body: [UInt8] = []) {
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
    }
}

/// What the signer needs from a set of credentials.
public struct SigningCredentials: Sendable {
    public var accessKeyId: String
    public var secretAccessKey: Secret
    /// Present for temporary credentials; sent as `X-Amz-Security-Token`.
    public var sessionToken: Secret?

    public init(accessKeyId: String, secretAccessKey: Secret, sessionToken: Secret? = nil) {
        self.accessKeyId = accessKeyId
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
    }

    public init(_ credentials: Credentials) {
        self.init(
            accessKeyId: credentials.accessKeyId, secretAccessKey: credentials.secretAccessKey,
            sessionToken: credentials.sessionToken.isEmpty ? nil : credentials.sessionToken)
    }
}

/// The result of signing: the headers to send plus the intermediate values, which tests compare.
/// `canonicalRequest` contains the session token: never log it; `description` leaves it out.
public struct SignedSigV4Request: Sendable, CustomStringConvertible {
    public var canonicalRequest: String
    public var stringToSign: String
    public var signature: String
    public var authorization: String
    /// `X-Amz-Date` value, e.g. "20150830T123600Z".
    public var amzDate: String
    /// The request's headers followed by those the signer added (X-Amz-Date, X-Amz-Security-Token,
    /// x-amz-content-sha256 when asked for, Authorization).
    public var headers: [SigV4Header]

    public var description: String {
        // The Authorization header holds only the key id, scope, header names and signature: no secret.
        "SignedSigV4Request(\(authorization))"
    }
}

/// Signs requests for one service in one region.
public struct SigV4Signer: Sendable {
    public var service: String
    public var region: String
    /// Remove `.`/`..` segments and empty segments from the path before encoding (all services but S3).
    public var normalizePath: Bool
    /// Include `X-Amz-Security-Token` in the signed headers (what botocore and STS do). When false the
    /// header is still sent but added after signing.
    public var signSessionToken: Bool
    /// Add and sign `x-amz-content-sha256` (S3 wants it; STS does not).
    public var addContentSHA256Header: Bool

    public static let algorithm = "AWS4-HMAC-SHA256"

    public init(
        service: String, region: String, normalizePath: Bool = true, signSessionToken: Bool = true,
        addContentSHA256Header: Bool = false
    ) {
        self.service = service
        self.region = region
        self.normalizePath = normalizePath
        self.signSessionToken = signSessionToken
        self.addContentSHA256Header = addContentSHA256Header
    }

    /// Signs `request` with `credentials` at `date`. Any `X-Amz-Date`, `X-Amz-Security-Token` or
    /// `Authorization` already in the request is replaced (and `x-amz-content-sha256` when the signer adds it).
    public func sign(_ request: SigV4Request, credentials: SigningCredentials, date: Date) -> SignedSigV4Request {
        let amzDate = Self.amzDate(date)
        let day = String(amzDate.prefix(8))
        let payloadHash = Hex.encode(Digest.sha256(request.body))

        var replaced: Set<String> = ["x-amz-date", "x-amz-security-token", "authorization"]
        if addContentSHA256Header { replaced.insert("x-amz-content-sha256") }
        var headers = request.headers.filter { !replaced.contains($0.name.lowercased()) }
        headers.append(SigV4Header("X-Amz-Date", amzDate))
        if addContentSHA256Header {
            headers.append(SigV4Header("x-amz-content-sha256", payloadHash))
        }
        var unsignedTail: [SigV4Header] = []
        if let token = credentials.sessionToken {
            let header = SigV4Header("X-Amz-Security-Token", token.exposed)
            if signSessionToken { headers.append(header) } else { unsignedTail.append(header) }
        }

        let (canonicalHeaders, signedHeaders) = Self.canonicalHeaders(headers)
        let canonicalRequest = [
            request.method.uppercased(),
            Self.canonicalURI(request.path, normalize: normalizePath),
            Self.canonicalQuery(request.query),
            canonicalHeaders,
            signedHeaders,
            payloadHash,
        ].joined(separator: "\n")

        let scope = "\(day)/\(region)/\(service)/aws4_request"
        let stringToSign = [
            Self.algorithm, amzDate, scope, Hex.encode(Digest.sha256(canonicalRequest)),
        ].joined(separator: "\n")

        let key = signingKey(secret: credentials.secretAccessKey, day: day)
        let signature = Hex.encode(Digest.hmacSHA256(key: key, data: Array(stringToSign.utf8)))
        let authorization =
            "\(Self.algorithm) Credential=\(credentials.accessKeyId)/\(scope), SignedHeaders=\(signedHeaders), Signature=\(signature)"

        headers += unsignedTail
        headers.append(SigV4Header("Authorization", authorization))
        return SignedSigV4Request(
            canonicalRequest: canonicalRequest, stringToSign: stringToSign, signature: signature,
            authorization: authorization, amzDate: amzDate, headers: headers)
    }

    private func signingKey(secret: Secret, day: String) -> [UInt8] {
        var key = Digest.hmacSHA256(key: Array("AWS4\(secret.exposed)".utf8), data: Array(day.utf8))
        for part in [region, service, "aws4_request"] {
            key = Digest.hmacSHA256(key: key, data: Array(part.utf8))
        }
        return key
    }

    // MARK: - Canonical pieces (static so tests can check them one by one)

    /// "yyyyMMdd'T'HHmmss'Z'" in UTC.
    public static func amzDate(_ date: Date) -> String {
        var t = time_t(date.timeIntervalSince1970.rounded(.down))
        var tm = tm()
        gmtime_r(&t, &tm)
        return String(
            format: "%04d%02d%02dT%02d%02d%02dZ",
            Int(tm.tm_year) + 1900, Int(tm.tm_mon) + 1, Int(tm.tm_mday), Int(tm.tm_hour), Int(tm.tm_min), Int(tm.tm_sec))
    }

    /// The path, optionally normalized, with every byte but the unreserved ones and `/` percent-encoded.
    /// `%` is encoded too: that is SigV4's double encoding of an already-encoded path.
    public static func canonicalURI(_ path: String, normalize: Bool) -> String {
        let raw = path.isEmpty ? "/" : path
        let effective = normalize ? normalizedPath(raw) : raw
        return uriEncode(effective, keepSlash: true)
    }

    /// Removes empty, `.` and `..` segments; keeps the leading slash and a trailing slash.
    static func normalizedPath(_ path: String) -> String {
        var segments: [Substring] = []
        for segment in path.split(separator: "/", omittingEmptySubsequences: true) {
            switch segment {
            case ".": continue
            case "..": if !segments.isEmpty { segments.removeLast() }
            default: segments.append(segment)
            }
        }
        if segments.isEmpty { return "/" }
        let trailing = path.hasSuffix("/") ? "/" : ""
        return "/" + segments.joined(separator: "/") + trailing
    }

    /// Query parameters decoded, re-encoded with the unreserved set, sorted by key then value.
    public static func canonicalQuery(_ query: String) -> String {
        guard !query.isEmpty else { return "" }
        var pairs: [(String, String)] = []
        for item in query.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = String(parts[0])
            let value = parts.count > 1 ? String(parts[1]) : ""
            pairs.append((uriEncode(key.removingPercentEncoding ?? key), uriEncode(value.removingPercentEncoding ?? value)))
        }
        pairs.sort { a, b in
            a.0 != b.0 ? Array(a.0.utf8).lexicographicallyPrecedes(Array(b.0.utf8))
                : Array(a.1.utf8).lexicographicallyPrecedes(Array(b.1.utf8))
        }
        return pairs.map { "\($0.0)=\($0.1)" }.joined(separator: "&")
    }

    /// Canonical header block (each line "name:value", sorted, with a final newline) and the signed-header list.
    /// Repeated headers are joined with commas in the order they came; values are trimmed and inner runs of
    /// whitespace (including folded continuation lines) become one space.
    public static func canonicalHeaders(_ headers: [SigV4Header]) -> (canonical: String, signed: String) {
        var values: [String: [String]] = [:]
        for header in headers {
            values[header.name.lowercased().trimmingCharacters(in: .whitespaces), default: []].append(trimAll(header.value))
        }
        let names = values.keys.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
        let canonical = names.map { "\($0):\(values[$0]!.joined(separator: ","))\n" }.joined()
        return (canonical, names.joined(separator: ";"))
    }

    static func trimAll(_ value: String) -> String {
        value.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" || $0 == "\n" }).joined(separator: " ")
    }

    /// RFC 3986 encoding as SigV4 defines it: A–Z a–z 0–9 `-._~` stay, every other UTF-8 byte becomes %XX.
    public static func uriEncode(_ string: String, keepSlash: Bool = false) -> String {
        let hex = Array("0123456789ABCDEF".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(string.utf8.count)
        for byte in string.utf8 {
            if isUnreserved(byte) || (keepSlash && byte == UInt8(ascii: "/")) {
                out.append(byte)
            } else {
                out += [UInt8(ascii: "%"), hex[Int(byte >> 4)], hex[Int(byte & 0x0F)]]
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func isUnreserved(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
            UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }
}
