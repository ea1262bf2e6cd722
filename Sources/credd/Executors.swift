// Swift concurrency's executors for credd: tasks and their timers on one NIO event loop, the main actor on the main thread.
//
// Why: Swift's default executors on Linux are libdispatch's root queues, and once a root queue is used libdispatch
// starts a worker-pool monitor that wakes the process every second for as long as it lives. credd is meant to sleep
// when idle, so no task, timer or main-actor job may reach libdispatch.
//
// How: Swift 6.3's executor factory (`ExecutorFactory`, `_createExecutors(factory:)`, SPI
// "ExperimentalCustomExecutors") replaces the default and main executors for the whole process; the default one
// is also a `SchedulingExecutor` (SPI "ExperimentalScheduling"), which is where `Task.sleep` and every
// `Clock.sleep` put their wake-up jobs in 6.3 (the old `swift_task_enqueueGlobal*_hook` variables no longer see
// them: `Task.sleep` asks `Task.currentSchedulingExecutor`, which ends at the default executor). Both are SPI of
// the pinned toolchain: a toolchain that changes them fails to compile here rather than silently falling back.
@_spi(ExperimentalCustomExecutors) @_spi(ExperimentalScheduling) import _Concurrency
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// The executors `CreddExecutors.install()` puts in place.
enum CreddExecutors: ExecutorFactory {
    /// The loop every task runs on: NIO's singleton group, made to hold one loop, so `credd serve` can serve on
    /// the same loop (one thread does all of credd's work, and the watchdog ping proves all of it alive).
    static let eventLoopGroup: MultiThreadedEventLoopGroup = {
        NIOSingletons.groupLoopCountSuggestion = 1
        return MultiThreadedEventLoopGroup.singleton
    }()

    static let defaultExecutor: any TaskExecutor = EventLoopTaskExecutor(loop: eventLoopGroup.next())
    static let mainExecutor: any MainExecutor = MainThreadExecutor()

    /// Makes these the process's executors. Call first thing in main, before any task, actor or sleep exists
    /// (the runtime creates the platform's executors at first use and keeps them).
    static func install() {
        _createExecutors(factory: CreddExecutors.self)
    }

    /// Runs main-actor jobs on the calling thread, which must be the main thread, until the process exits.
    static func runMainThread() -> Never {
        while true {
            do {
                try MainActor.executor.run()
            } catch {
                // MainThreadExecutor.run() does not throw; the protocol allows it.
            }
        }
    }
}

/// Swift concurrency's default executor on one NIO event loop: jobs through `execute`, timed jobs (every sleep)
/// through `scheduleTask`, so an idle credd has no timer but the ones its tasks asked for.
final class EventLoopTaskExecutor: TaskExecutor, SchedulingExecutor {
    let loop: any EventLoop

    init(loop: any EventLoop) {
        self.loop = loop
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        loop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }

    func enqueue<C: Clock>(_ job: consuming ExecutorJob, after delay: C.Duration, tolerance: C.Duration?, clock: C) {
        schedule(UnownedJob(job), in: Self.nanoseconds(delay))
    }

    func enqueue<C: Clock>(_ job: consuming ExecutorJob, at instant: C.Instant, tolerance: C.Duration?, clock: C) {
        schedule(UnownedJob(job), in: Self.nanoseconds(clock.now.duration(to: instant)))
    }

    private func schedule(_ job: UnownedJob, in nanoseconds: Int64) {
        guard nanoseconds > 0 else {
            loop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
            return
        }
        // NIO's timers run on CLOCK_MONOTONIC: a ContinuousClock (CLOCK_BOOTTIME) sleep is not shortened by a
        // suspend of the machine. The refreshers do not rely on it: a resume sets the wall clock, which
        // WallClockWatcher reports, and the daemon then refreshes every set whose time has come.
        loop.scheduleTask(in: .nanoseconds(nanoseconds)) { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }

    /// Whole nanoseconds in a duration of the standard clocks (their `Duration` is `Swift.Duration`), saturating.
    static func nanoseconds<D: DurationProtocol>(_ duration: D) -> Int64 {
        guard let duration = duration as? Duration else {
            // No clock credd or its libraries use has another duration type; run such a job at once rather than never.
            return 0
        }
        let (seconds, attoseconds) = duration.components
        if seconds >= Int64.max / 1_000_000_000 { return Int64.max }
        if seconds < 0 { return 0 }
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}

/// The main actor's executor: a queue the main thread drains, blocked on a condition while it is empty.
final class MainThreadExecutor: MainExecutor, @unchecked Sendable {
    /// 1 while jobs are queued; guards `queue`.
    private let pending = ConditionLock(value: 0)
    private var queue: [UnownedJob] = []
    private var stopRequested = false
    private let mainThread = pthread_self()

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        pending.lock()
        queue.append(job)
        pending.unlock(withValue: 1)
    }

    func run() throws {
        while true {
            pending.lock(whenValue: 1)
            let jobs = queue
            queue.removeAll(keepingCapacity: true)
            let stop = stopRequested
            stopRequested = false
            pending.unlock(withValue: 0)
            for job in jobs { job.runSynchronously(on: asUnownedSerialExecutor()) }
            if stop { return }
        }
    }

    func stop() {
        pending.lock()
        stopRequested = true
        pending.unlock(withValue: 1)
    }

    func checkIsolated() {
        precondition(pthread_equal(pthread_self(), mainThread) != 0, "Expected to run on the main actor (the main thread).")
    }
}
