// The daemon's object graph: sets and their refreshers, listeners, reload. Built here so tests build it too.
import AsyncHTTPClient
import CreddCore
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle

/// How the daemon meets its supervisor (systemd, or nothing when run by hand). All optional.
public struct DaemonHooks: Sendable {
    /// Sockets passed by the supervisor; empty means bind from config.
    public var inheritedListeners: [ListenerSource] = []
    /// Credentials kept across a restart (systemd's fd store).
    public var adoptedState: CredentialStateSnapshot?
    public var ready: @Sendable (_ statusLine: String) -> Void = { _ in }
    public var reloading: @Sendable () -> Void = {}
    public var stopping: @Sendable () -> Void = {}
    public var status: @Sendable (_ statusLine: String) -> Void = { _ in }
    /// Called with the snapshot of all sets after every change of credentials (to refresh the fd store).
    public var credentialsChanged: (@Sendable (CredentialStateSnapshot) -> Void)?
    /// Watchdog ping interval and action, run on the server's event loop so a stuck loop stops the pings.
    /// Each ping also compares the wall clock and refreshes the STATUS= line when it changed, so with a watchdog
    /// the refreshers never wake just to look at the clock.
    public var watchdog: (interval: TimeAmount, ping: @Sendable () -> Void)?
    /// The event loop group to serve on, owned by the caller: credd's executable passes the loop that runs every
    /// Swift task too, so one thread does all of credd's work. nil: the daemon makes a one-loop group of its own
    /// and shuts it down when it stops.
    public var eventLoopGroup: (any EventLoopGroup)?
    /// Called when a burst of work other than answering has ended: start-up (when ready), a reload, each refresh
    /// of a set, successful or not. credd's executable releases the code pages that work used
    /// (`ReadOnlyPageReleaser`).
    public var settled: (@Sendable () -> Void)?
    public init() {}
}

/// A running credd: build with `Daemon.init`, run as a `Service`.
public final class Daemon: Service, Sendable {
    public let environment: RuntimeEnvironment
    private let logger: Logger
    private let hooks: DaemonHooks
    private let startedAt = Date()
    private let initialConfig: CreddConfig
    private let policy: RefreshPolicy
    /// `policy` as the refreshers use it: with a watchdog, the pings compare the wall clock, and a refresher
    /// sleeps until its refresh is due instead of waking every `maximumSleep` to look.
    private let refresherPolicy: RefreshPolicy
    private let now: @Sendable () -> Date
    /// What GET /metrics exports; the request path and the sets' refreshers feed it.
    public let metrics = CreddMetrics()

    private struct Runtime {
        var config: CreddConfig
        var sets: [String: CredentialSet] = [:]
        var refreshers: [String: Task<Void, Never>] = [:]
        var group: (any EventLoopGroup)?
        var http: UpstreamHTTP?
        var stateBox: ServingStateBox?
        var channels: [any Channel] = []
    }
    private let runtime: NIOLockedValueBox<Runtime>
    /// Set once listening; the bound TCP ports (port 0 in config resolves here).
    private let boundAddresses = NIOLockedValueBox<[String]>([])

    public init(
        config: CreddConfig, environment: RuntimeEnvironment, logger: Logger, hooks: DaemonHooks = DaemonHooks(),
        policy: RefreshPolicy = .standard, now: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.initialConfig = config
        self.environment = environment
        self.logger = logger
        self.hooks = hooks
        self.policy = policy
        var refresherPolicy = policy
        if hooks.watchdog != nil { refresherPolicy.maximumSleep = .seconds(100 * 365 * 24 * 3600) }
        self.refresherPolicy = refresherPolicy
        self.now = now
        self.runtime = NIOLockedValueBox(Runtime(config: config))
    }

    public var listeningOn: [String] { boundAddresses.withLockedValue { $0 } }

    public func run() async throws {
        let config = initialConfig
        let ownGroup = hooks.eventLoopGroup == nil ? MultiThreadedEventLoopGroup(numberOfThreads: 1) : nil
        let group: any EventLoopGroup = hooks.eventLoopGroup ?? ownGroup!
        let http = UpstreamHTTP(eventLoopGroup: group)
        do {
            try await serve(config: config, group: group, http: http)
        } catch {
            await http.shutdown()
            try? await ownGroup?.shutdownGracefully()
            throw error
        }
        await http.shutdown()
        try? await ownGroup?.shutdownGracefully()
    }

    private func serve(config: CreddConfig, group: any EventLoopGroup, http: UpstreamHTTP) async throws {
        let logger = self.logger
        let access = try makeAccessPolicy(config)
        let (sets, served) = try makeSets(config, http: http, existing: [:])
        let box = ServingStateBox(ServingState(sets: served, access: access, policy: policy, server: config.server, auditEnabled: config.log.audit))
        if let adopted = hooks.adoptedState { await adopt(adopted, into: sets, config: config) }
        let counter = ConnectionCounter(limit: config.server.maxConnections)
        let audit = AuditLog.batchingStandardError(logger: { var l = logger; l[metadataKey: "credd.event"] = "audit"; return l }())
        let statusProvider: @Sendable () -> StatusDocument = { [weak self] in
            self?.statusDocument() ?? StatusDocument(pid: getpid(), startedAt: Date(), config: "", sets: [])
        }
        let metrics = self.metrics
        let metricsProvider: @Sendable () -> String = { [weak self] in  // metrics: gauges are set at scrape time
            metrics.exposition(sets: self?.statusDocument().sets ?? [], openConnections: counter.openCount, now: self?.now() ?? Date())
        }
        let makeContext: @Sendable (ListenerContext.Transport) -> ListenerContext = { transport in
            var context = ListenerContext(
                transport: transport, state: box, audit: audit, statusProvider: statusProvider, metricsProvider: metricsProvider,
                connections: counter, logger: logger)
            context.metrics = metrics
            return context
        }
        runtime.withLockedValue {
            $0.sets = sets
            $0.group = group
            $0.http = http
            $0.stateBox = box
        }

        // Listen: adopt what the supervisor passed, else bind from config.
        var sources = hooks.inheritedListeners
        if sources.isEmpty {
            if let unix = config.listen.unix { sources.append(.unixPath(unix)) }
            sources += config.listen.tcp.map { .tcp($0) }
        }
        guard !sources.isEmpty else {
            throw ListenerError(message: "no listener configured: set listen.unix and/or listen.tcp in \(config.file ?? "the config").")
        }
        var channels: [any Channel] = []
        do {
            for source in sources {
                let channel = try await CredentialsListener.start(source, group: group, context: makeContext)
                channels.append(channel)
                let where_: String
                if case .unixPath(let u) = source { where_ = "unix:\(u.path)" } else { where_ = "\(source)=\(channel.localAddress.map { "\($0)" } ?? "?")" }
                boundAddresses.withLockedValue { $0.append(channel.localAddress?.port.map { "tcp:127.0.0.1:\($0)" } ?? where_) }
                logger.info("listening", metadata: ["credd.listener": "\(where_)"])
            }
        } catch {
            for c in channels { try? await c.close() }
            throw error
        }
        runtime.withLockedValue { $0.channels = channels }

        wallClock.note(offset: wallMinusMonotonic())
        if let watchdog = hooks.watchdog {
            // Pings come from the serving event loop itself: if it is stuck, systemd stops hearing them.
            // They are the only periodic wake-up credd has, so the wall-clock comparison and the STATUS=
            // update ride on them.
            group.next().scheduleRepeatedTask(initialDelay: .zero, delay: watchdog.interval) { [weak self] _ in
                watchdog.ping()
                guard let self else { return }
                self.compareWallClock()
                self.publishStatusIfChanged()
            }
        }

        startRefreshers(sets)
        hooks.ready(statusLineToPublish())
        hooks.settled?()
        // Returns when a graceful shutdown (SIGTERM, SIGINT) begins or the task is cancelled.
        try? await gracefulShutdown()
        hooks.stopping()
        logger.info("stopping")
        for c in channels { try? await c.close() }
        let refreshers = runtime.withLockedValue { r -> [Task<Void, Never>] in
            let all = Array(r.refreshers.values)
            r.refreshers = [:]
            return all
        }
        for t in refreshers { t.cancel() }
        for t in refreshers { await t.value }
    }

    private func startRefreshers(_ sets: [String: CredentialSet]) {
        runtime.withLockedValue { r in
            for (name, set) in sets where r.refreshers[name] == nil {
                r.refreshers[name] = Task {
                    await withDiscardingTaskGroup { group in
                        group.addTask { await set.run() }
                        if let login = set.source as? LoginSource {
                            // A new `aws login`, or a refresh by the CLI, is picked up at once.
                            group.addTask {
                                for await _ in LoginCacheWatcher.changes(for: login) where login.changedByAnotherWriter() {
                                    set.refreshSoon()
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// One segment per set: state and the served expiry (no secrets). The expiry is a time, not a countdown, so
    /// the line stays true between updates: it is sent at start, reload and every change of credentials, and
    /// with a watchdog also on a ping that finds it changed, never on a timer of its own.
    public func statusLine() -> String {
        statusDocument().sets.map { s in
            let expires = s.servedExpiration.map { ", expires \(RFC3339.format($0))" } ?? ""
            return "\(s.name): \(s.state.rawValue)\(expires)"
        }.joined(separator: "; ")
    }

    /// The STATUS= line last handed to `hooks`.
    private let publishedStatus = NIOLockedValueBox<String?>(nil)

    /// The current status line, remembered as published (for `hooks.ready`).
    private func statusLineToPublish() -> String {
        let line = statusLine()
        publishedStatus.withLockedValue { $0 = line }
        return line
    }

    /// Sends the status line through `hooks.status` when it differs from the last one sent.
    private func publishStatusIfChanged() {
        let line = statusLine()
        let changed = publishedStatus.withLockedValue { last -> Bool in
            if last == line { return false }
            last = line
            return true
        }
        if changed { hooks.status(line) }
    }

    // MARK: The wall clock

    /// The refreshers sleep on the monotonic clock; a refresh is due when the wall clock reaches the set's
    /// `nextRefresh`. When the wall clock jumps, these compare again: at once for a jump the kernel reports
    /// (`wallClockChanged()`, from a timerfd), and on each watchdog ping for one it does not (a faked clock).
    private let wallClock = WallClockState()

    /// The wall clock was set (an NTP step, `date -s`, a resume from suspend): every set whose refresh is due
    /// by the wall clock refreshes now, and one whose refresh came nearer is woken at its new time.
    /// Call from any thread; cheap.
    public func wallClockChanged() {
        let offset = wallMinusMonotonic()
        let previous = wallClock.note(offset: offset)
        reviewRefreshTimes(forward: previous.map { offset > $0 } ?? true)
    }

    /// On each ping: a change of the wall clock against the monotonic one of more than a second since the last
    /// ping is a jump (NTP's slewing moves it by microseconds in that time).
    private func compareWallClock() {
        let offset = wallMinusMonotonic()
        if let previous = wallClock.note(offset: offset), abs(offset - previous) > 1_000_000_000 {
            reviewRefreshTimes(forward: offset > previous)
        }
    }

    /// Refreshes now every set whose refresh time the wall clock has reached; after a forward jump, wakes each
    /// other set at its refresh time, which its refresher's monotonic sleep would now overshoot.
    private func reviewRefreshTimes(forward: Bool) {
        let (sets, group) = runtime.withLockedValue { ($0.sets, $0.group) }
        let t = now()
        var later: [(CredentialSet, TimeAmount)] = []
        for set in sets.values {
            guard let next = set.view.status.nextRefresh else { continue }
            if t >= next {
                set.refreshSoon()
            } else if forward {
                // The refresher's monotonic sleep ends later than the wall clock now says: wake it then.
                later.append((set, .nanoseconds(Int64(min(next.timeIntervalSince(t), 1e9) * 1e9))))
            }
        }
        guard let loop = group?.next() else { return }
        let scheduled = later.map { set, delay in
            loop.scheduleTask(in: delay) { [weak self] in
                guard let self, let next = set.view.status.nextRefresh, self.now() >= next else { return }
                set.refreshSoon()
            }
        }
        wallClock.replaceWakeUps(with: scheduled)
    }

    /// The wall clock (`now`) minus the monotonic clock, in nanoseconds: constant while neither jumps.
    private func wallMinusMonotonic() -> Int64 {
        var monotonic = timespec()
        clock_gettime(CLOCK_MONOTONIC, &monotonic)
        let wall = Int64((now().timeIntervalSince1970 * 1e9).rounded())
        return wall - (Int64(monotonic.tv_sec) * 1_000_000_000 + Int64(monotonic.tv_nsec))
    }

    public func statusDocument() -> StatusDocument {
        let (sets, config) = runtime.withLockedValue { ($0.sets, $0.config) }
        let ordered = config.sets.compactMap { sets[$0.name] }
        return StatusDocument(pid: getpid(), startedAt: startedAt, config: config.file ?? "(built-in defaults)", sets: ordered.map { $0.view.status })
    }

    /// SIGHUP: tells the supervisor RELOADING=1, loads and applies the new config, READY=1 whatever the outcome.
    /// An invalid config is logged with its error and the old one stays in force.
    public func reload(_ load: () throws -> CreddConfig) {
        hooks.reloading()
        defer {
            hooks.ready(statusLineToPublish())
            hooks.settled?()
        }
        do {
            try apply(try load())
        } catch {
            logger.error("reload refused; the previous configuration stays in force: \(error)")
        }
    }

    /// Applies a new config: sets whose configuration is unchanged keep their credentials. Listeners stay.
    public func apply(_ newConfig: CreddConfig) throws {
        let (old, http, box) = runtime.withLockedValue { ($0, $0.http, $0.stateBox) }
        guard let http, let box else { throw ListenerError(message: "credd is not running yet.") }
        if newConfig.listen != old.config.listen {
            logger.notice("listen settings changed; they take effect at the next restart")
        }
        let access = try makeAccessPolicy(newConfig)
        var keep: [String: CredentialSet] = [:]
        for set in newConfig.sets {
            if let existing = old.sets[set.name], old.config.set(named: set.name) == set, !dependsOnChanged(set.name, old: old.config, new: newConfig) {
                keep[set.name] = existing
            }
        }
        let (sets, served) = try makeSets(newConfig, http: http, existing: keep)
        let removed = runtime.withLockedValue { r -> [Task<Void, Never>] in
            var stale: [Task<Void, Never>] = []
            for (name, task) in r.refreshers where sets[name] !== r.sets[name] || sets[name] == nil {
                stale.append(task)
                r.refreshers[name] = nil
            }
            r.sets = sets
            r.config = newConfig
            return stale
        }
        for t in removed { t.cancel() }
        box.replace(ServingState(sets: served, access: access, policy: policy, server: newConfig.server, auditEnabled: newConfig.log.audit))
        startRefreshers(sets)
        logger.info("configuration reloaded", metadata: ["credd.config": "\(newConfig.file ?? "defaults")", "credd.sets": "\(newConfig.sets.map(\.name).joined(separator: ","))"])
    }

    private func dependsOnChanged(_ name: String, old: CreddConfig, new: CreddConfig) -> Bool {
        var current = new.set(named: name)
        var hops = 0
        while let c = current, case .assumeRole(let ar) = c.source, hops < new.sets.count {
            if old.set(named: ar.from) != new.set(named: ar.from) { return true }
            current = new.set(named: ar.from)
            hops += 1
        }
        return false
    }

    private func makeAccessPolicy(_ config: CreddConfig) throws -> AccessPolicy {
        var gid: gid_t?
        if let g = config.listen.unix?.group { gid = UInt32(g) ?? getgrnam(g).map { $0.pointee.gr_gid } }
        let token = try TokenFile.ensure(config.listen.tokenFile, group: gid)
        var setTokens: [String: [UInt8]] = [:]
        for set in config.sets {
            if let file = set.access?.tokenFile { setTokens[set.name] = try TokenFile.ensure(file, group: nil) }
        }
        return AccessPolicy(token: token, tokenFile: config.listen.tokenFile, access: config.access, sets: config.sets, setTokens: setTokens)
    }

    /// Builds sets in dependency order so an assume-role set can read its `from` set.
    private func makeSets(
        _ config: CreddConfig, http: UpstreamHTTP, existing: [String: CredentialSet]
    ) throws -> ([String: CredentialSet], [String: ServedSet]) {
        var sets = existing
        var remaining = config.sets.filter { existing[$0.name] == nil }
        while !remaining.isEmpty {
            let before = remaining.count
            for set in remaining {
                if case .assumeRole(let ar) = set.source, sets[ar.from] == nil { continue }
                let source = try SourceFactory.make(set, config: config, environment: environment, http: http, sets: sets, logger: logger, now: now)
                let credentialSet = CredentialSet(
                    name: set.name, source: source, chain: config.chain(of: set.name), policy: refresherPolicy, logger: logger, now: now,
                    observer: SetObserver(metrics: metrics, settled: hooks.settled))
                sets[set.name] = credentialSet
                remaining.removeAll { $0.name == set.name }
            }
            if remaining.count == before { throw ConfigError(file: config.file ?? "config", key: "credentials", message: "the sets' from: links cannot be resolved.") }
        }
        metrics.register(sets: config.sets.map { ($0.name, $0.source.kind) })
        var served: [String: ServedSet] = [:]
        for (name, set) in sets {
            let s = ServedSet(name: name, view: set.view)
            served[name] = s
            guard existing[name] == nil else { continue }
            let hooks = self.hooks
            let weakSelf = WeakDaemon(self)
            set.view.addPublishObserver { _ in
                guard let daemon = weakSelf.daemon else { return }
                if let changed = hooks.credentialsChanged { changed(daemon.stateSnapshot()) }
                daemon.publishStatusIfChanged()
            }
        }
        return (sets, served)
    }

    /// All sets' current credentials, for systemd's fd store.
    public func stateSnapshot() -> CredentialStateSnapshot {
        let (sets, config) = runtime.withLockedValue { ($0.sets, $0.config) }
        var entries: [CredentialStateSnapshot.Entry] = []
        for (name, set) in sets {
            guard let served = set.view.served, let setConfig = config.set(named: name) else { continue }
            entries.append(CredentialStateSnapshot.Entry(name: name, sourceFingerprint: SourceFactory.fingerprint(setConfig, config: config), served: served))
        }
        return CredentialStateSnapshot(entries: entries)
    }

    private func adopt(_ snapshot: CredentialStateSnapshot, into sets: [String: CredentialSet], config: CreddConfig) async {
        let t = now()
        var adopted = 0
        for entry in snapshot.entries {
            guard let set = sets[entry.name], let setConfig = config.set(named: entry.name),
                entry.sourceFingerprint == SourceFactory.fingerprint(setConfig, config: config)
            else { continue }
            guard policy.isServable(expiration: entry.servedExpiration, now: t) else { continue }
            await set.adopt(entry.credentials, servedExpiration: entry.servedExpiration)
            adopted += 1
        }
        logger.info("adopted credentials kept across the restart", metadata: ["credd.sets": "\(adopted)", "credd.offered": "\(snapshot.entries.count)"])
    }
}

/// What the daemon knows of the wall clock between comparisons.
private final class WallClockState: Sendable {
    private struct State {
        var offset: Int64?
        var wakeUps: [Scheduled<Void>] = []
    }
    private let state = NIOLockedValueBox(State())

    /// Notes `offset` and returns the one noted before.
    @discardableResult
    func note(offset: Int64) -> Int64? {
        state.withLockedValue { state in
            defer { state.offset = offset }
            return state.offset
        }
    }

    /// Replaces the wake-ups scheduled after the last jump (they were computed from a clock that moved again).
    func replaceWakeUps(with new: [Scheduled<Void>]) {
        let old = state.withLockedValue { state in
            defer { state.wakeUps = new }
            return state.wakeUps
        }
        for wakeUp in old { wakeUp.cancel() }
    }
}

private struct WeakDaemon: @unchecked Sendable {
    weak var daemon: Daemon?
    init(_ d: Daemon) { daemon = d }
}

func formatRemaining(_ seconds: TimeInterval) -> String {
    let s = Int(seconds)
    if s <= 0 { return "0s (expired)" }
    if s < 60 { return "\(s)s" }
    if s < 3600 { return "\(s / 60)m\(String(format: "%02d", s % 60))s" }
    return "\(s / 3600)h\(String(format: "%02d", (s % 3600) / 60))m"
}

/// What a set's refresher reports: to the metrics, and the end of each refresh to `DaemonHooks.settled`.
private struct SetObserver: CredentialSetObserver {
    let metrics: CreddMetrics
    let settled: (@Sendable () -> Void)?

    func fetchFinished(set: String, source: String, latency: Duration) {
        metrics.fetchFinished(set: set, source: source, latency: latency)
    }

    func refreshSucceeded(set: String, source: String) {
        metrics.refreshSucceeded(set: set, source: source)
        settled?()
    }

    func refreshFailed(set: String, source: String, reason: String) {
        metrics.refreshFailed(set: set, source: source, reason: reason)
        settled?()
    }
}
