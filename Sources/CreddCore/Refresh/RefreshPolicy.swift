// When to refresh: a pure function of (expiry, now, traits, failures, randomness), table-tested.
import Foundation

/// Refresh timing for one credential set. Pure: no clocks, no randomness of its own.
///
/// The SDKs start refreshing 15 minutes before expiry (advisory) and block from 10 minutes (mandatory),
/// so credd refreshes while more than `RefreshTraits.refreshBefore` (15 min + a margin) remains: clients
/// then never see credentials inside either window when the source allows it.
public struct RefreshPolicy: Sendable, Equatable {
    /// Refreshes are moved earlier by up to this fraction of the wait, so a fleet does not refresh in step.
    public var jitterFraction: Double
    /// Never refresh more often than this after a success (a source that only has short credentials).
    public var minimumInterval: Duration
    /// First retry delay after a failure; doubles with each consecutive failure up to `backoffCap`.
    public var backoffBase: Duration
    public var backoffCap: Duration
    /// Below this much life left credd answers 503 instead of serving the credentials.
    public var minimumServedLifetime: Duration
    /// Static stability (IMDS only): when the source fails and less than `staticStabilityThreshold` of life is
    /// left, the served expiry is pushed to now + `staticStabilityExtension` (plus jitter), as the SDKs do.
    public var staticStabilityThreshold: Duration
    public var staticStabilityExtension: Duration
    /// Longest sleep between wall-clock checks, so a jump of the wall clock is noticed (the schedule itself is
    /// monotonic; the refresher wakes this often only to compare the wall clock with the credentials' expiry).
    public var maximumSleep: Duration
    /// After an error only a person can fix (login expired), retry only this rarely; a change of the source's
    /// input (a new `aws login`) triggers a refresh at once instead.
    public var needsActionRetry: Duration = .seconds(30 * 60)

    public init(
        jitterFraction: Double = 0.1,
        minimumInterval: Duration = .seconds(5),
        backoffBase: Duration = .seconds(1),
        backoffCap: Duration = .seconds(60),
        minimumServedLifetime: Duration = .seconds(60),
        staticStabilityThreshold: Duration = .seconds(16 * 60),
        staticStabilityExtension: Duration = .seconds(20 * 60),
        // 30 s: after a forward jump past the expiry, clients get 503 for at most this long (issue 7).
        maximumSleep: Duration = .seconds(30)
    ) {
        self.jitterFraction = jitterFraction
        self.minimumInterval = minimumInterval
        self.backoffBase = backoffBase
        self.backoffCap = backoffCap
        self.minimumServedLifetime = minimumServedLifetime
        self.staticStabilityThreshold = staticStabilityThreshold
        self.staticStabilityExtension = staticStabilityExtension
        self.maximumSleep = maximumSleep
    }

    public static let standard = RefreshPolicy()

    /// How long to wait after fetching credentials (at `now`, issued at `now`) before the next refresh.
    /// - Parameter random: a number in 0..<1 (jitter); tests pass fixed values.
    public func delayAfterSuccess(expiration: Date, now: Date, traits: RefreshTraits, random: Double) -> Duration {
        let remaining = seconds(expiration.timeIntervalSince(now))
        var wait = remaining - traits.refreshBefore
        if let fraction = traits.renewAtLifetimeFraction {
            wait = min(wait, remaining * fraction)
        }
        if let poll = traits.pollInterval {
            wait = min(wait, poll)
        }
        wait = wait - wait * (jitterFraction * clamp(random))
        return max(wait, minimumInterval)
    }

    /// How long to wait after the `consecutiveFailures`-th failure in a row (1 for the first).
    public func delayAfterFailure(consecutiveFailures: Int, random: Double) -> Duration {
        let exponent = max(0, min(consecutiveFailures - 1, 30))
        var wait = backoffBase * (1 << exponent)
        if wait > backoffCap { wait = backoffCap }
        wait = wait - wait * (jitterFraction * clamp(random))
        return wait
    }

    /// The expiry to serve after a failed refresh of a statically stable source, or nil to keep the real one.
    public func staticStabilityExpiry(servedExpiration: Date, now: Date, traits: RefreshTraits, random: Double) -> Date? {
        guard traits.staticStability else { return nil }
        let remaining = seconds(servedExpiration.timeIntervalSince(now))
        guard remaining < staticStabilityThreshold else { return nil }
        let jitter = staticStabilityExtension * (0.25 * clamp(random))
        return now.addingTimeInterval(timeInterval(staticStabilityExtension + jitter))
    }

    /// Whether credentials expiring at `expiration` may still be handed out at `now`.
    public func isServable(expiration: Date, now: Date) -> Bool {
        expiration.timeIntervalSince(now) >= timeInterval(minimumServedLifetime)
    }

    private func clamp(_ r: Double) -> Double { r.isFinite ? min(max(r, 0), 0.999_999) : 0 }
}

func seconds(_ interval: TimeInterval) -> Duration { .milliseconds(Int64((interval * 1000).rounded())) }

public func timeInterval(_ d: Duration) -> TimeInterval {
    let c = d.components
    return TimeInterval(c.seconds) + TimeInterval(c.attoseconds) / 1e18
}
