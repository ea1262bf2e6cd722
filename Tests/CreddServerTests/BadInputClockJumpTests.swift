// The wall clock jumping back and forth under a running refresher: the schedule runs on the monotonic clock.
import CreddCore
import CreddTestSupport
import Foundation
import Logging
import NIOConcurrencyHelpers
import Testing

/// A monotonic clock that moves only when the test says so; sleepers wake when their deadline is reached.
final class SteppedClock: Clock, Sendable {
    struct Instant: InstantProtocol {
        var offset: Duration
        func advanced(by d: Duration) -> Instant { Instant(offset: offset + d) }
        func duration(to other: Instant) -> Duration { other.offset - offset }
        static func < (a: Instant, b: Instant) -> Bool { a.offset < b.offset }
    }

    private struct State {
        var now = Instant(offset: .zero)
        var nextID = 0
        var sleepers: [Int: (deadline: Instant, continuation: CheckedContinuation<Void, any Error>)] = [:]
    }
    private let state = NIOLockedValueBox(State())

    var now: Instant { state.withLockedValue { $0.now } }
    var minimumResolution: Duration { .nanoseconds(1) }
    var sleeperCount: Int { state.withLockedValue { $0.sleepers.count } }

    func sleep(until deadline: Instant, tolerance: Duration?) async throws {
        let id = state.withLockedValue { s -> Int in
            s.nextID += 1
            return s.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
                let resumeNow = state.withLockedValue { s -> Bool in
                    if deadline <= s.now || Task.isCancelled { return true }
                    s.sleepers[id] = (deadline, c)
                    return false
                }
                if resumeNow {
                    if Task.isCancelled { c.resume(throwing: CancellationError()) } else { c.resume() }
                }
            }
        } onCancel: {
            state.withLockedValue { $0.sleepers.removeValue(forKey: id) }?.continuation.resume(throwing: CancellationError())
        }
    }

    func advance(by d: Duration) {
        let due = state.withLockedValue { s -> [CheckedContinuation<Void, any Error>] in
            s.now = s.now.advanced(by: d)
            let ready = s.sleepers.filter { $0.value.deadline <= s.now }
            for id in ready.keys { s.sleepers.removeValue(forKey: id) }
            return ready.values.map(\.continuation)
        }
        for c in due { c.resume() }
    }
}

/// A source whose credentials last an hour from the (injected) wall clock at each fetch.
final class WallClockSource: CredentialSource {
    let kind = "login"
    let summary = "credentials that last an hour from each fetch"
    let refreshTraits = RefreshTraits(refreshBefore: .seconds(20 * 60))
    let wall: ManualWallClock
    private let fetches = NIOLockedValueBox(0)
    init(wall: ManualWallClock) { self.wall = wall }
    var fetchCount: Int { fetches.withLockedValue { $0 } }
    func fetch(logger: Logger) async throws -> Credentials {
        let n = fetches.withLockedValue { $0 += 1; return $0 }
        return testCredentials(key: "ASIATESTKEY00000000\(n % 10)", expiresIn: 3600, now: wall.now)
    }
}

@Suite struct BadInputClockJumpTests {
    /// Polls (in real time) until the refresher is asleep on the stepped clock with `fetches` fetches done.
    func settle(_ clock: SteppedClock, _ source: WallClockSource, fetches: Int) async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while !(clock.sleeperCount > 0 && source.fetchCount == fetches) {
            guard ContinuousClock.now < deadline else {
                Issue.record("the refresher did not settle: \(source.fetchCount) fetches (expected \(fetches)), \(clock.sleeperCount) sleepers")
                throw CancellationError()
            }
            try await Task.sleep(for: .milliseconds(2))
        }
    }

    /// Real time passes on both clocks at once; `jump` moves only the wall clock.
    func pass(_ seconds: Int, _ clock: SteppedClock, _ wall: ManualWallClock) {
        wall.advance(by: TimeInterval(seconds))
        clock.advance(by: .seconds(seconds))
    }

    @Test func aWallClockJumpBackDoesNotDelayTheRefreshAndAJumpForwardBringsItForward() async throws {
        let wall = ManualWallClock()
        let clock = SteppedClock()
        let source = WallClockSource(wall: wall)
        let policy = RefreshPolicy(jitterFraction: 0, maximumSleep: .seconds(300))
        let set = CredentialSet(name: "dev", source: source, policy: policy, logger: InMemoryLog().logger(), now: wall.function, random: { 0 })
        let refresher = Task { await set.run(clock: clock) }
        defer { refresher.cancel() }

        // First fetch at once; the next is due in 3600 − 1200 = 2400 s, slept in steps of at most 300 s.
        try await settle(clock, source, fetches: 1)
        wall.advance(by: -3 * 3600)  // the wall clock jumps back three hours (NTP step, a VM restored)
        for _ in 0..<7 {
            pass(300, clock, wall)
            try await settle(clock, source, fetches: 1)
        }
        pass(300, clock, wall)  // 2400 s of monotonic time: due, whatever the wall clock says
        try await settle(clock, source, fetches: 2)

        // The wall clock jumps forward 50 minutes: the credentials look 10 minutes from expiry. The refresher
        // notices at its next wake (≤ maximumSleep), not 40 minutes later.
        wall.advance(by: 50 * 60)
        pass(300, clock, wall)
        try await settle(clock, source, fetches: 3)
        #expect(set.view.status.state == .fresh)
        #expect(set.view.served.map { $0.servedExpiration > wall.now.addingTimeInterval(3000) } == true)
    }

    @Test func aWallClockJumpForwardPastExpiryRefreshesAtTheNextWakeWithoutAStorm() async throws {
        let wall = ManualWallClock()
        let clock = SteppedClock()
        let source = WallClockSource(wall: wall)
        let policy = RefreshPolicy(jitterFraction: 0, maximumSleep: .seconds(300))
        let set = CredentialSet(name: "dev", source: source, policy: policy, logger: InMemoryLog().logger(), now: wall.function, random: { 0 })
        let refresher = Task { await set.run(clock: clock) }
        defer { refresher.cancel() }
        try await settle(clock, source, fetches: 1)
        wall.advance(by: 5 * 3600)  // far past the expiry
        pass(300, clock, wall)
        try await settle(clock, source, fetches: 2)
        // One fetch per jump, then the normal schedule again: no refresh loop.
        for _ in 0..<7 {
            pass(300, clock, wall)
            try await settle(clock, source, fetches: 2)
        }
        pass(300, clock, wall)
        try await settle(clock, source, fetches: 3)
    }
}
