import CreddCore
import CreddTestSupport
import Foundation
import Testing

@Suite struct CredentialSetTests {
    @Test func oneUpstreamFetchForAThousandConcurrentRequests() async throws {
        let clock = ManualWallClock()
        let source = ScriptedSource(fallback: .success(testCredentials(expiresIn: 3600, now: clock.now)))
        source.setDelay(.milliseconds(200))
        let set = CredentialSet(name: "default", source: source, logger: InMemoryLog().logger(), now: clock.function)
        try await withThrowingTaskGroup(of: Credentials.self) { group in
            for _ in 0..<1000 { group.addTask { try await set.currentCredentials() } }
            for try await c in group { #expect(c.accessKeyId == "ASIATESTKEY000000001") }
        }
        #expect(source.fetchCount == 1)
        #expect(set.view.served?.generation == 1)
    }

    @Test func failureKeepsTheLastCredentialsAndSaysWhy() async throws {
        let clock = ManualWallClock()
        let log = InMemoryLog()
        let source = ScriptedSource(fallback: .success(testCredentials(expiresIn: 3600, now: clock.now)))
        let set = CredentialSet(name: "default", source: source, logger: log.logger(), now: clock.function)
        try await set.refreshOnce()
        source.setFallback(.failure(SourceError(code: "IMDSUnreachable", message: "IMDS unreachable at http://x (timed out).")))
        await #expect(throws: SourceError.self) { try await set.refreshOnce() }
        let status = set.view.status
        #expect(status.state == .failing)
        #expect(status.lastError == "IMDS unreachable at http://x (timed out).")
        #expect(status.consecutiveFailures == 1)
        #expect(set.view.served?.credentials.accessKeyId == "ASIATESTKEY000000001")
        #expect(!log.text.contains("SECRETtest") && !log.text.contains("TOKENtest"))
    }

    @Test func staticStabilityExtendsTheServedExpiryForIMDSOnly() async throws {
        let clock = ManualWallClock()
        let imds = RefreshTraits(pollInterval: .seconds(300), staticStability: true)
        let source = ScriptedSource(kind: "imds", traits: imds, fallback: .success(testCredentials(expiresIn: 1800, now: clock.now)))
        let set = CredentialSet(name: "default", source: source, logger: InMemoryLog().logger(), now: clock.function, random: { 0 })
        try await set.refreshOnce()
        source.setFallback(.failure(SourceError(code: "IMDSUnreachable", message: "down")))
        clock.advance(by: 1700)  // 100 s of life left
        _ = try? await set.refreshOnce()
        let served = try #require(set.view.served)
        #expect(served.extendedByStaticStability)
        #expect(served.servedExpiration == clock.now.addingTimeInterval(1200))
        #expect(set.view.status.state == .staticStability)
        // Two hours later, still down: still served, expiry extended again, never in the past.
        clock.advance(by: 7200)
        _ = try? await set.refreshOnce()
        let later = try #require(set.view.served)
        #expect(later.servedExpiration > clock.now.addingTimeInterval(15 * 60))
        // Recovery replaces them.
        source.setFallback(.success(testCredentials(key: "ASIATESTKEY000000002", expiresIn: 3600, now: clock.now)))
        try await set.refreshOnce()
        #expect(set.view.served?.credentials.accessKeyId == "ASIATESTKEY000000002")
        #expect(set.view.served?.extendedByStaticStability == false)
        #expect(set.view.status.state == .fresh)
    }

    @Test func otherSourcesAreNotExtended() async throws {
        let clock = ManualWallClock()
        let source = ScriptedSource(fallback: .success(testCredentials(expiresIn: 1800, now: clock.now)))
        let set = CredentialSet(name: "x", source: source, logger: InMemoryLog().logger(), now: clock.function)
        try await set.refreshOnce()
        source.setFallback(.failure(SourceError(code: "Down", message: "down")))
        clock.advance(by: 1790)
        _ = try? await set.refreshOnce()
        #expect(set.view.served?.extendedByStaticStability == false)
        #expect(!RefreshPolicy.standard.isServable(expiration: set.view.served!.servedExpiration, now: clock.now))
    }

    @Test func needsActionErrorsAreLoggedOnce() async throws {
        let clock = ManualWallClock()
        let log = InMemoryLog()
        let source = ScriptedSource(fallback: .failure(SourceError(code: "LoginRequired", message: "login required: run `aws login --profile dev`", disposition: .needsAction)))
        let set = CredentialSet(name: "dev", source: source, logger: log.logger(), now: clock.function)
        for _ in 0..<5 { _ = try? await set.refreshOnce() }
        #expect(log.all.filter { $0.message.contains("login required") }.count == 1)
        #expect(set.view.status.state == .actionRequired)
    }

    @Test func theRefresherLoopRefreshesOnScheduleAndOnRequest() async throws {
        let clock = ManualWallClock()
        let source = ScriptedSource(fallback: .success(testCredentials(expiresIn: 3600, now: clock.now)))
        let set = CredentialSet(name: "x", source: source, logger: InMemoryLog().logger(), now: clock.function)
        let task = Task { await set.run() }
        defer { task.cancel() }
        try await waitUntil { source.fetchCount == 1 }
        set.refreshSoon()
        try await waitUntil { source.fetchCount == 2 }
        #expect(set.view.status.nextRefresh != nil)
    }

    @Test func waitersAreCalledWhenTheFirstResultArrives() async throws {
        let clock = ManualWallClock()
        let source = ScriptedSource(fallback: .success(testCredentials(expiresIn: 3600, now: clock.now)))
        source.setDelay(.milliseconds(50))
        let set = CredentialSet(name: "x", source: source, logger: InMemoryLog().logger(), now: clock.function)
        let called = Counter()
        #expect(set.view.waitForFirstResult { called.increment() })
        try await set.refreshOnce()
        #expect(called.value == 1)
        #expect(!set.view.waitForFirstResult { called.increment() })
    }
}

final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func increment() { lock.lock(); n += 1; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return n }
}

func waitUntil(timeout: Duration = .seconds(30), _ condition: @Sendable () -> Bool) async throws {
    if try await !poll(timeout: timeout, until: condition) { Issue.record("condition not met in time") }
}
