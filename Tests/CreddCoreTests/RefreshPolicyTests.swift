import CreddCore
import Foundation
import Testing

@Suite struct RefreshPolicyTests {
    let policy = RefreshPolicy.standard
    let now = Date(timeIntervalSince1970: 1_800_000_000)

    struct SuccessCase: Sendable, CustomTestStringConvertible {
        var name: String
        var lifetime: TimeInterval
        var traits: RefreshTraits
        var random: Double
        var expected: Duration
        var testDescription: String { name }
    }

    static let successCases: [SuccessCase] = [
        // IMDS: 6 h credentials, polled every 5 minutes.
        .init(name: "imds polls", lifetime: 6 * 3600, traits: RefreshTraits(pollInterval: .seconds(300), staticStability: true), random: 0, expected: .seconds(300)),
        .init(name: "imds polls, jitter moves earlier", lifetime: 6 * 3600, traits: RefreshTraits(pollInterval: .seconds(300)), random: 0.5, expected: .seconds(285)),
        // Plain source: refresh when 20 minutes remain.
        .init(name: "1 h credentials, 20 min before", lifetime: 3600, traits: RefreshTraits(), random: 0, expected: .seconds(2400)),
        // Role credentials: about half their life, and at least 20 minutes before expiry.
        .init(name: "role 1 h at half", lifetime: 3600, traits: RefreshTraits(renewAtLifetimeFraction: 0.5), random: 0, expected: .seconds(1800)),
        .init(name: "role 12 h at half", lifetime: 12 * 3600, traits: RefreshTraits(renewAtLifetimeFraction: 0.5), random: 0, expected: .seconds(6 * 3600)),
        // Login: 15 minute credentials refreshed when under 11 minutes remain.
        .init(name: "login 15 min", lifetime: 900, traits: RefreshTraits(refreshBefore: .seconds(660)), random: 0, expected: .seconds(240)),
        // Credentials shorter than the window: never hammer the source.
        .init(name: "short credentials use the minimum interval", lifetime: 600, traits: RefreshTraits(), random: 0, expected: .seconds(5)),
        .init(name: "already expired", lifetime: -10, traits: RefreshTraits(), random: 0.9, expected: .seconds(5)),
    ]

    @Test(arguments: successCases)
    func delayAfterSuccess(_ c: SuccessCase) {
        let d = policy.delayAfterSuccess(expiration: now.addingTimeInterval(c.lifetime), now: now, traits: c.traits, random: c.random)
        #expect(d == c.expected)
    }

    @Test func servedCredentialsKeepMoreThanTheAdvisoryWindow() {
        // Whatever the lifetime (above the window), the refresh happens while > 15 min + margin remain.
        for lifetime in stride(from: 1200.0, through: 43200, by: 300) {
            for r in [0.0, 0.3, 0.99] {
                for traits in [RefreshTraits(), RefreshTraits(renewAtLifetimeFraction: 0.5), RefreshTraits(pollInterval: .seconds(300))] {
                    let d = policy.delayAfterSuccess(expiration: now.addingTimeInterval(lifetime), now: now, traits: traits, random: r)
                    let leftAtRefresh = lifetime - timeInterval(d)
                    #expect(leftAtRefresh >= 15 * 60, "lifetime \(lifetime) left \(leftAtRefresh)")
                }
            }
        }
    }

    @Test(arguments: [(1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (7, 60.0), (50, 60.0)])
    func backoffDoublesUpToTheCap(failures: Int, seconds: Double) {
        #expect(policy.delayAfterFailure(consecutiveFailures: failures, random: 0) == .milliseconds(Int64(seconds * 1000)))
    }

    @Test func backoffJitterNeverExceedsTheCap() {
        for r in stride(from: 0.0, to: 1.0, by: 0.1) {
            #expect(policy.delayAfterFailure(consecutiveFailures: 40, random: r) <= .seconds(60))
            #expect(policy.delayAfterFailure(consecutiveFailures: 40, random: r) >= .seconds(54))
        }
    }

    @Test func staticStabilityOnlyForSourcesThatAskAndOnlyNearExpiry() {
        let imds = RefreshTraits(pollInterval: .seconds(300), staticStability: true)
        #expect(policy.staticStabilityExpiry(servedExpiration: now.addingTimeInterval(3600), now: now, traits: imds, random: 0) == nil)
        let extended = policy.staticStabilityExpiry(servedExpiration: now.addingTimeInterval(120), now: now, traits: imds, random: 0)
        #expect(extended == now.addingTimeInterval(20 * 60))
        #expect(policy.staticStabilityExpiry(servedExpiration: now.addingTimeInterval(120), now: now, traits: RefreshTraits(), random: 0) == nil)
        // Already expired: still extended (EC2 honours them during an IMDS outage).
        #expect(policy.staticStabilityExpiry(servedExpiration: now.addingTimeInterval(-600), now: now, traits: imds, random: 0.5) == now.addingTimeInterval(20 * 60 + 150))
    }

    @Test(arguments: [(3600.0, true), (61, true), (60, true), (59, false), (0, false), (-5, false)])
    func neverServesExpiredCredentials(left: TimeInterval, servable: Bool) {
        #expect(policy.isServable(expiration: now.addingTimeInterval(left), now: now) == servable)
    }
}
