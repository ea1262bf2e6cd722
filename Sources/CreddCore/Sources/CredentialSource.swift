// What every credential source implements, and the errors sources raise.
import Foundation
import Logging

/// Where one credential set's credentials come from (IMDS, the `aws login` cache, AssumeRole, …).
public protocol CredentialSource: Sendable {
    /// Short kind used in status, logs and metrics: "imds", "login", "assume-role".
    var kind: String { get }
    /// One line saying where the credentials come from, without secrets ("IMDS at http://…, role web").
    var summary: String { get }
    /// How this source wants to be refreshed.
    var refreshTraits: RefreshTraits { get }
    /// Fetches fresh credentials. Throws `SourceError` with a message a person can act on.
    func fetch(logger: Logger) async throws -> Credentials
}

/// Per-source inputs to `RefreshPolicy`.
public struct RefreshTraits: Sendable, Equatable {
    /// Refresh once less than this remains (served credentials then keep more than the SDKs' 15-minute
    /// advisory window plus a margin).
    public var refreshBefore: Duration
    /// Poll even while the credentials are fresh (IMDS: rotated credentials appear early).
    public var pollInterval: Duration?
    /// Renew at this fraction of the lifetime (role credentials: about half).
    public var renewAtLifetimeFraction: Double?
    /// Keep serving the last credentials past their expiry while the source fails (IMDS only, as the SDKs do).
    public var staticStability: Bool

    public init(
        refreshBefore: Duration = .seconds(20 * 60), pollInterval: Duration? = nil,
        renewAtLifetimeFraction: Double? = nil, staticStability: Bool = false
    ) {
        self.refreshBefore = refreshBefore
        self.pollInterval = pollInterval
        self.renewAtLifetimeFraction = renewAtLifetimeFraction
        self.staticStability = staticStability
    }
}

/// A failure of a source, phrased for the person who has to fix it. Never carries a secret.
public struct SourceError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Disposition: Sendable, Equatable {
        /// Worth retrying with backoff (network, 5xx, throttling).
        case transient
        /// Needs a person (login expired, access denied, bad cache file): do not retry in a loop;
        /// the source is retried only when its input changes or at the capped backoff.
        case needsAction
    }

    /// Stable machine-readable code, e.g. "IMDSUnreachable", "LoginRequired", "AccessDenied".
    public var code: String
    /// A full sentence: what failed, where, and what to do.
    public var message: String
    public var disposition: Disposition
    /// Credentials the source still holds, unexpired, though it could not refresh them (the `aws login` cache
    /// after Sign-In failed): a set with nothing to serve serves these until they expire rather than 503.
    public var stillValid: Credentials?

    public init(code: String, message: String, disposition: Disposition = .transient, stillValid: Credentials? = nil) {
        self.code = code
        self.message = message
        self.disposition = disposition
        self.stillValid = stillValid
    }

    public var description: String { "\(code): \(message)" }
}
