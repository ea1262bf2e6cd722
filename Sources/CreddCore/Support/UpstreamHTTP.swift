// The outbound HTTP clients (AsyncHTTPClient): one for AWS services, one for link-local IMDS.
import AsyncHTTPClient
import NIOCore

public struct UpstreamHTTP: Sendable {
    /// STS, Sign-In: connection attempts retried within each request's deadline.
    public let general: HTTPClient
    /// IMDS is on the link or absent: fail a refused or unreachable connection at once and let the
    /// source's own bounded retries decide (AsyncHTTPClient would otherwise retry until the deadline).
    public let imds: HTTPClient

    /// How long a connection is kept after its last request. Long enough for the requests of one refresh
    /// (IMDSv2's token, then the role, then the credentials; a chain's AssumeRole after its base), far shorter
    /// than the time between refreshes: a connection kept longer is never reused, and its closing would wake
    /// credd after the refresh and run code after the read-only pages were released (ReadOnlyPageReleaser).
    public static let idleTimeout: TimeAmount = .seconds(1)

    public init(eventLoopGroup: any EventLoopGroup) {
        var general = HTTPClient.Configuration()
        general.timeout = .init(connect: .seconds(2), read: .seconds(5))
        general.connectionPool = .init(idleTimeout: Self.idleTimeout)
        general.redirectConfiguration = .disallow
        self.general = HTTPClient(eventLoopGroup: eventLoopGroup, configuration: general)
        var imds = HTTPClient.Configuration()
        imds.timeout = .init(connect: .seconds(1), read: .seconds(1))
        imds.connectionPool = .init(idleTimeout: Self.idleTimeout)
        imds.connectionPool.retryConnectionEstablishment = false
        imds.redirectConfiguration = .disallow
        self.imds = HTTPClient(eventLoopGroup: eventLoopGroup, configuration: imds)
    }

    public func shutdown() async {
        try? await general.shutdown()
        try? await imds.shutdown()
    }
}
