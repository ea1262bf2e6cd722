import CreddServer
import CreddTestSupport
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

/// The heap trim when the last connection closes: at once, or at the end of the interval when the previous
/// trim was less than an interval ago, and never while a connection is open.
@Suite struct ConnectionCounterTests {
    func counter(_ trims: NIOLockedValueBox<Int>) -> ConnectionCounter {
        ConnectionCounter(limit: 10, trimInterval: .seconds(2)) { trims.withLockedValue { $0 += 1 } }
    }

    @Test func aLastCloseSoonAfterATrimIsTrimmedAtTheEndOfTheInterval() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let trims = NIOLockedValueBox(0)
        let c = counter(trims)
        #expect(c.open() && c.open())
        c.close(on: loop)
        #expect(trims.withLockedValue { $0 } == 0, "a connection is still open")
        c.close(on: loop)
        #expect(trims.withLockedValue { $0 } == 1)
        // Another burst right after: its last close is not trimmed at once, but it is trimmed.
        #expect(c.open())
        c.close(on: loop)
        #expect(trims.withLockedValue { $0 } == 1)
        #expect(try await poll { trims.withLockedValue { $0 } == 2 })
        try await group.shutdownGracefully()
    }

    @Test func noTrimWhileAConnectionIsOpen() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let trims = NIOLockedValueBox(0)
        let c = counter(trims)
        #expect(c.open())
        c.close(on: loop)
        #expect(trims.withLockedValue { $0 } == 1)
        #expect(c.open())
        c.close(on: loop)  // the trailing trim is scheduled...
        #expect(c.open())  // ...and a connection opens before it runs
        try await Task.sleep(for: .seconds(3))
        #expect(trims.withLockedValue { $0 } == 1, "trimmed while a connection was open")
        #expect(c.openCount == 1)
        c.close(on: loop)  // more than an interval after the last trim: at once
        #expect(trims.withLockedValue { $0 } == 2)
        try await group.shutdownGracefully()
    }

    @Test func refusesAboveTheLimit() {
        let c = ConnectionCounter(limit: 2) {}
        #expect(c.open() && c.open())
        #expect(!c.open())
        #expect(c.openCount == 2)
    }
}
