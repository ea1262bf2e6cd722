// STS's XML answers (AssumeRoleResponse, ErrorResponse) read with libexpat.
import CExpat
import Foundation

/// The useful part of a successful AssumeRole answer.
public struct AssumeRoleResult: Sendable, Equatable, CustomStringConvertible {
    public var credentials: Credentials
    /// "arn:aws:sts::123456789012:assumed-role/NAME/SESSION".
    public var assumedRoleArn: String
    public var assumedRoleId: String?
    public var sourceIdentity: String?
    public var requestId: String?

    public var description: String {
        "AssumeRoleResult(\(assumedRoleArn), \(credentials), request \(requestId ?? "unknown"))"
    }
}

/// An `ErrorResponse` from STS.
public struct STSServiceError: Sendable, Equatable, CustomStringConvertible {
    /// HTTP status of the answer.
    public var status: Int
    /// "Sender" or "Receiver".
    public var type: String?
    /// "AccessDenied", "ExpiredToken", …
    public var code: String
    public var message: String
    public var requestId: String?

    public init(status: Int, type: String? = nil, code: String, message: String, requestId: String? = nil) {
        self.status = status
        self.type = type
        self.code = code
        self.message = message
        self.requestId = requestId
    }

    public var description: String { "\(code) (HTTP \(status)): \(message)" }
}

enum STSResponseParser {
    struct Unreadable: Error, CustomStringConvertible {
        var description: String
    }

    /// Reads an AssumeRole answer. Throws `Unreadable` (no secret in its text) when a field is missing.
    static func assumeRoleResult(from body: [UInt8]) throws -> AssumeRoleResult {
        let fields = try leafValues(body)
        let result = "AssumeRoleResponse/AssumeRoleResult"
        func required(_ path: String) throws -> String {
            guard let value = fields["\(result)/\(path)"], !value.isEmpty else {
                throw Unreadable(description: "the AssumeRole answer has no \(path)")
            }
            return value
        }
        let expirationText = try required("Credentials/Expiration")
        guard let expiration = RFC3339.parse(expirationText) else {
            throw Unreadable(description: "the AssumeRole answer's Expiration \"\(expirationText)\" is not an ISO 8601 time")
        }
        let arn = try required("AssumedRoleUser/Arn")
        let credentials = Credentials(
            accessKeyId: try required("Credentials/AccessKeyId"),
            secretAccessKey: Secret(try required("Credentials/SecretAccessKey")),
            sessionToken: Secret(try required("Credentials/SessionToken")),
            expiration: expiration,
            accountId: accountId(fromARN: arn),
            isRoleCredentials: true)
        return AssumeRoleResult(
            credentials: credentials, assumedRoleArn: arn,
            assumedRoleId: fields["\(result)/AssumedRoleUser/AssumedRoleId"],
            sourceIdentity: fields["\(result)/SourceIdentity"],
            requestId: fields["AssumeRoleResponse/ResponseMetadata/RequestId"])
    }

    /// Reads an `ErrorResponse`; nil when the body is not one (an HTML page from a proxy, say).
    /// STS sends `ErrorResponse/Error/…`; the EC2-style `…/Errors/Error/…` (moto, some proxies) is read too.
    static func serviceError(status: Int, body: [UInt8]) -> STSServiceError? {
        guard let fields = try? leafValues(body) else { return nil }
        for error in ["ErrorResponse/Error", "ErrorResponse/Errors/Error", "Response/Errors/Error"] {
            guard let code = fields["\(error)/Code"], !code.isEmpty else { continue }
            let root = String(error.prefix { $0 != "/" })
            return STSServiceError(
                status: status, type: fields["\(error)/Type"], code: code,
                message: fields["\(error)/Message"] ?? "",
                requestId: fields["\(root)/RequestId"] ?? fields["\(root)/RequestID"])
        }
        return nil
    }

    /// The account id, the fifth field of an ARN ("arn:aws:sts::123456789012:assumed-role/…").
    static func accountId(fromARN arn: String) -> String? {
        let fields = arn.split(separator: ":", maxSplits: 5, omittingEmptySubsequences: false)
        guard fields.count == 6, fields[0] == "arn", fields[4].count == 12, fields[4].allSatisfy(\.isNumber) else {
            return nil
        }
        return String(fields[4])
    }

    /// Every element's text keyed by its path from the root ("A/B/C"), namespaces ignored.
    static func leafValues(_ body: [UInt8]) throws -> [String: String] {
        // Leading whitespace before the XML declaration is not well-formed XML, but moto (and some
        // proxies) send it; botocore tolerates it, so credd does too.
        let start = body.firstIndex { !($0 == 0x20 || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D) } ?? body.endIndex
        // FoundationXML trapped on an element name that is not UTF-8 (found by fuzzing, issue 7; regression test
        // FuzzRegressionSTSTests). STS answers in UTF-8: refuse anything else before it reaches the parser.
        guard String(validating: body[start...], as: UTF8.self) != nil else {
            throw Unreadable(description: "the answer is not UTF-8 text")
        }
        // Namespaces processed: expat names an element "URI\nlocal" (a newline never occurs in either part).
        guard let parser = XML_ParserCreateNS("UTF-8", 0x0A) else {
            throw Unreadable(description: "the XML parser could not be created")
        }
        defer { XML_ParserFree(parser) }
        let collector = LeafCollector()
        XML_SetUserData(parser, Unmanaged.passUnretained(collector).toOpaque())
        XML_SetElementHandler(
            parser,
            { user, name, _ in LeafCollector.from(user).start(name) },
            { user, _ in LeafCollector.from(user).end() })
        XML_SetCharacterDataHandler(parser) { user, text, count in
            guard let text, count > 0 else { return }
            LeafCollector.from(user).text.append(
                contentsOf: UnsafeRawBufferPointer(start: text, count: Int(count)).bindMemory(to: UInt8.self))
        }
        // No handler for external entities or DTDs is set: expat then reads none of them.
        let status = body[start...].withUnsafeBufferPointer { bytes in
            bytes.withMemoryRebound(to: CChar.self) { chars in
                XML_Parse(parser, chars.baseAddress, Int32(clamping: chars.count), 1)
            }
        }
        guard status == XML_STATUS_OK else {
            let reason = XML_ErrorString(XML_GetErrorCode(parser)).map { String(cString: $0) } ?? "unknown reason"
            throw Unreadable(description: "the answer is not well-formed XML (\(reason))")
        }
        return collector.values
    }

    private final class LeafCollector {
        var values: [String: String] = [:]
        private var path: [String] = []
        var text: [UInt8] = []

        static func from(_ user: UnsafeMutableRawPointer?) -> LeafCollector {
            Unmanaged<LeafCollector>.fromOpaque(user!).takeUnretainedValue()
        }

        func start(_ name: UnsafePointer<CChar>?) {
            let full = name.map { String(cString: $0) } ?? ""
            // The local name: what follows the namespace URI and its separator, if any.
            path.append(full.lastIndex(of: "\n").map { String(full[full.index(after: $0)...]) } ?? full)
            text = []
        }

        func end() {
            let key = path.joined(separator: "/")
            let trimmed = String(decoding: text, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            // Only leaves carry text; a parent's end must not overwrite what a child set.
            if values[key] == nil { values[key] = trimmed }
            path.removeLast()
            text = []
        }
    }
}
