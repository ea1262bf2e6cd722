// The outbound HTTP clients (AsyncHTTPClient): one for AWS services, one for link-local IMDS.
import AsyncHTTPClient
import NIOCore

public struct UpstreamHTTP: Sendable {
    /// STS, Sign-In: connection attempts retried within each request's deadline.
    public let general: HTTPClient
    /// IMDS is on the link or absent: fail a refused or unreachable connection at once and let the
    /// source's own bounded retries decide (AsyncHTTPClient would otherwise retry until the deadline).
    public let imds: HTTPClient

    public init(eventLoopGroup: any EventLoopGroup) {
        var general = HTTPClient.Configuration()
        general.timeout = .init(connect: .seconds(2), read: .seconds(5))
        general.connectionPool = .init(idleTimeout: .seconds(30))
        general.redirectConfiguration = .disallow
        self.general = HTTPClient(eventLoopGroup: eventLoopGroup, configuration: general)
        var imds = HTTPClient.Configuration()
        imds.timeout = .init(connect: .seconds(1), read: .seconds(1))
        imds.connectionPool = .init(idleTimeout: .seconds(10))
        imds.connectionPool.retryConnectionEstablishment = false
        imds.redirectConfiguration = .disallow
        self.imds = HTTPClient(eventLoopGroup: eventLoopGroup, configuration: imds)
    }

    public func shutdown() async {
        try? await general.shutdown()
        try? await imds.shutdown()
    }
}
