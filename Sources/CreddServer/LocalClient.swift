// credd's own client for the CLI: requests over the Unix socket (the kernel identifies the caller; no token).
import AsyncHTTPClient
import CreddCore
import Foundation
import NIOCore
import NIOHTTP1

public struct LocalClientError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public var exitCode: Int32
    public var description: String { message }
}

public enum LocalClient {
    /// GETs `path` from credd's Unix socket. Returns status and body; throws when credd is unreachable.
    public static func get(socket: String, path: String, timeout: Duration = .seconds(5)) async throws -> (status: Int, body: [UInt8]) {
        guard let url = URL(httpURLWithSocketPath: socket, uri: path) else {
            throw LocalClientError(message: "\(socket) is not a usable socket path.", exitCode: 64)
        }
        // A missing or refused socket is reported at once, not retried until the deadline.
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.retryConnectionEstablishment = false
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        var request = HTTPClientRequest(url: url.absoluteString)
        request.method = .GET
        do {
            let response = try await client.execute(request, timeout: .nanoseconds(Int64(timeInterval(timeout) * 1e9)))
            let body = try await response.body.collect(upTo: 4 * 1024 * 1024)
            try? await client.shutdown()
            return (Int(response.status.code), Array(buffer: body))
        } catch {
            try? await client.shutdown()
            throw LocalClientError(
                message: "cannot reach credd at \(socket): \(error). Is it running? (systemctl status credd.socket, or start it with `credd serve`)",
                exitCode: 69)
        }
    }

    /// The `message` of an error answer, for printing.
    public static func errorMessage(_ body: [UInt8]) -> String {
        if let obj = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any], let m = obj["message"] as? String {
            let code = (obj["code"] as? String).map { "\($0): " } ?? ""
            return code + m
        }
        return String(decoding: body.prefix(500), as: UTF8.self)
    }
}
