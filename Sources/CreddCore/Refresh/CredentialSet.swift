// One credential set: its source, its refresher loop, and the view request handlers read.
import Foundation
import Logging
import NIOConcurrencyHelpers

/// What clients are handed for one set: credentials plus the expiry credd serves (which static stability
/// may push past the real one). Immutable; a new generation replaces it.
public struct ServedCredentials: Sendable {
    public let credentials: Credentials
    public let servedExpiration: Date
    /// Increases with every publication; handlers cache encoded answers per generation.
    public let generation: UInt64
    /// True while static stability keeps the credentials past a failed refresh.
    public let extendedByStaticStability: Bool
    /// The container-credentials JSON body (PROTOCOLS §1), encoded once per generation.
    public let body: [UInt8]

    init(credentials: Credentials, servedExpiration: Date, generation: UInt64, extended: Bool) {
        self.credentials = credentials
        self.servedExpiration = servedExpiration
        self.generation = generation
        self.extendedByStaticStability = extended
        self.body = ContainerCredentialsDocument.encode(credentials, expiration: servedExpiration)
    }
}

/// The container-credentials answer body (PROTOCOLS §1).
public enum ContainerCredentialsDocument {
    struct Document: Encodable {
        let AccessKeyId: String
        let SecretAccessKey: String
        let Token: String
        let Expiration: String
        let AccountId: String?
    }

    public static func encode(_ c: Credentials, expiration: Date) -> [UInt8] {
        let doc = Document(
            AccessKeyId: c.accessKeyId, SecretAccessKey: c.secretAccessKey.exposed, Token: c.sessionToken.exposed,
            Expiration: RFC3339.format(expiration), AccountId: c.accountId)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        // Encoding plain strings cannot fail.
        return Array((try? encoder.encode(doc)) ?? Data())
    }

    /// The `credential_process` shape (`Version: 1`) for `credd get --format process`.
    public static func encodeProcess(_ json: [String: Any]) -> [String: Any] {
        var out: [String: Any] = ["Version": 1]
        for key in ["AccessKeyId", "SecretAccessKey", "Expiration", "AccountId"] { out[key] = json[key] }
        out["SessionToken"] = json["Token"]
        return out
    }
}

/// The state of a set as status and handlers see it. No secrets.
public enum SetState: String, Sendable, Codable {
    case starting, fresh, refreshing, failing, staticStability = "static-stability", actionRequired = "action-required"
}

/// A consistent, secret-free picture of one set for status output.
public struct SetStatus: Sendable, Codable, Equatable {
    public var name: String
    public var source: String
    public var summary: String
    public var chain: [String]
    public var state: SetState
    public var expiration: Date?
    public var servedExpiration: Date?
    public var accessKeySuffix: String?
    public var accountId: String?
    public var lastRefresh: Date?
    public var nextRefresh: Date?
    public var lastError: String?
    public var lastErrorCode: String?
    public var consecutiveFailures: Int
}

/// Lock-protected view of a set that request handlers read without an actor hop.
public final class CredentialSetView: Sendable {
    public let name: String
    private struct Inner {
        var served: ServedCredentials?
        var status: SetStatus
        var waiters: [@Sendable () -> Void] = []
        var observers: [(id: UInt64, call: @Sendable (ServedCredentials) -> Void)] = []
        var nextObserver: UInt64 = 0
    }
    private let inner: NIOLockedValueBox<Inner>

    init(name: String, status: SetStatus) {
        self.name = name
        self.inner = NIOLockedValueBox(Inner(status: status))
    }

    /// The credentials currently served, if any (callers still check `servedExpiration`).
    public var served: ServedCredentials? { inner.withLockedValue { $0.served } }
    public var status: SetStatus { inner.withLockedValue { $0.status } }
    public var snapshot: (ServedCredentials?, SetStatus) { inner.withLockedValue { ($0.served, $0.status) } }

    /// Calls `waiter` once at the next change of state (first credentials, or a failure).
    /// Returns false, without registering, when the set is no longer starting.
    public func waitForFirstResult(_ waiter: @escaping @Sendable () -> Void) -> Bool {
        inner.withLockedValue { inner in
            guard inner.status.state == .starting || (inner.served == nil && inner.status.state == .refreshing) else {
                return false
            }
            inner.waiters.append(waiter)
            return true
        }
    }

    /// Calls `observer` with every new generation of credentials, in order, from the set's actor.
    /// Returns the observer's id, for `removePublishObserver`.
    @discardableResult
    public func addPublishObserver(_ observer: @escaping @Sendable (ServedCredentials) -> Void) -> UInt64 {
        inner.withLockedValue {
            $0.nextObserver += 1
            $0.observers.append(($0.nextObserver, observer))
            return $0.nextObserver
        }
    }

    /// Stops calling an observer (a call already under way may still finish).
    public func removePublishObserver(_ id: UInt64) {
        inner.withLockedValue { $0.observers.removeAll { $0.id == id } }
    }

    var publishObserverCount: Int { inner.withLockedValue { $0.observers.count } }

    func update(served: ServedCredentials?, status: SetStatus) {
        let (waiters, observers, changed) = inner.withLockedValue { inner in
            let changed = served != nil && served?.generation != inner.served?.generation
            inner.served = served
            inner.status = status
            defer { inner.waiters = [] }
            return (inner.waiters, inner.observers, changed)
        }
        // Observers see the new generation already in the view (the fd store reads it back).
        if changed, let served { for observer in observers { observer.call(served) } }
        for w in waiters { w() }
    }
}

/// Receives a set's refresh outcomes and upstream latency (credd's /metrics). Called from the set's actor
/// and its fetch task: implementations must be cheap and never block.
public protocol CredentialSetObserver: Sendable {
    /// One upstream fetch finished, successfully or not, after `latency`.
    func fetchFinished(set: String, source: String, latency: Duration)
    func refreshSucceeded(set: String, source: String)
    /// `reason` is the `SourceError.code`.
    func refreshFailed(set: String, source: String, reason: String)
}

/// Owns one set's credentials and refreshes them: one fetch at a time, however many requests arrive.
public actor CredentialSet {
    public nonisolated let name: String
    public nonisolated let source: any CredentialSource
    public nonisolated let view: CredentialSetView
    public nonisolated let chain: [String]
    private let policy: RefreshPolicy
    private let now: @Sendable () -> Date
    private let random: @Sendable () -> Double
    private var logger: Logger

    private var served: ServedCredentials?
    private var status: SetStatus
    private var generation: UInt64 = 0
    private var inFlight: Task<Credentials, any Error>?
    private var loggedNeedsActionCode: String?
    private nonisolated let observer: (any CredentialSetObserver)?

    public init(
        name: String, source: any CredentialSource, chain: [String] = [], policy: RefreshPolicy = .standard,
        logger: Logger, now: @escaping @Sendable () -> Date = { Date() },
        random: @escaping @Sendable () -> Double = { Double.random(in: 0..<1) },
        observer: (any CredentialSetObserver)? = nil
    ) {
        self.name = name
        self.source = source
        self.chain = chain.isEmpty ? ["\(name) (\(source.kind))"] : chain
        self.policy = policy
        self.now = now
        self.random = random
        self.observer = observer
        var logger = logger
        logger[metadataKey: "credd.set"] = "\(name)"
        logger[metadataKey: "credd.source"] = "\(source.kind)"
        self.logger = logger
        let status = SetStatus(
            name: name, source: source.kind, summary: source.summary, chain: self.chain, state: .starting,
            consecutiveFailures: 0)
        self.status = status
        self.view = CredentialSetView(name: name, status: status)
    }

    /// Credentials adopted at start (from systemd's fd store): served at once, refreshed on schedule.
    public func adopt(_ credentials: Credentials, servedExpiration: Date) {
        guard policy.isServable(expiration: servedExpiration, now: now()) else { return }
        publish(credentials, servedExpiration: servedExpiration, extended: servedExpiration > credentials.expiration)
        status.state = .fresh
        view.update(served: served, status: status)
    }

    /// Asks the refresher to refresh now (a new `aws login`, a dependent's `ExpiredToken`).
    public nonisolated func refreshSoon() {
        Task { await self.yieldKick() }
    }

    private func yieldKick() { resumeKickWaiter(consumeKick: true) }

    /// The current credentials for a dependent set (AssumeRole `from:`), fetching them if none are held.
    public func currentCredentials() async throws -> Credentials {
        if let served, policy.isServable(expiration: served.credentials.expiration, now: now()) {
            return served.credentials
        }
        return try await refreshOnce()
    }

    /// Fetches now (joining a fetch already in flight) and publishes the result.
    @discardableResult
    public func refreshOnce() async throws -> Credentials {
        if let inFlight { return try await inFlight.value }
        let source = self.source
        let logger = self.logger
        let (observer, setName) = (self.observer, name)
        let task = Task {
            let started = ContinuousClock.now
            defer { observer?.fetchFinished(set: setName, source: source.kind, latency: ContinuousClock.now - started) }
            return try await source.fetch(logger: logger)
        }
        inFlight = task
        if status.state != .starting { status.state = served == nil ? status.state : .refreshing }
        defer { inFlight = nil }
        do {
            let credentials = try await task.value
            if source.refreshTraits.staticStability && !policy.isServable(expiration: credentials.expiration, now: now()) {
                // IMDS answered with credentials already (nearly) expired: as the SDKs do, keep the last ones
                // (or these, if there are none) and extend their served expiry rather than fail.
                if served == nil { publish(credentials, servedExpiration: credentials.expiration, extended: false) }
                let error = SourceError(
                    code: "ExpiredCredentialsReturned",
                    message: "The \(source.kind) source returned credentials that expire at \(RFC3339.format(credentials.expiration)), which is already past or too close; credd keeps retrying.")
                failed(error)
                throw error
            }
            succeeded(credentials)
            return credentials
        } catch let error as SourceError where error.code == "ExpiredCredentialsReturned" {
            throw error
        } catch {
            failed(error)
            throw error
        }
    }

    /// The refresher loop; returns when cancelled.
    public func run(clock: some Clock<Duration> = ContinuousClock()) async {
        // Adopted credentials (fd store) that are still fresh are refreshed on schedule, not at once.
        var delay: Duration = .zero
        if let served {
            delay = policy.delayAfterSuccess(
                expiration: served.credentials.expiration, now: now(), traits: source.refreshTraits, random: random())
        }
        while !Task.isCancelled {
            if delay > .zero {
                let wallDeadline = now().addingTimeInterval(timeInterval(delay))
                status.nextRefresh = wallDeadline
                view.update(served: served, status: status)
                // Sleep on the monotonic clock, waking at least every `maximumSleep` to compare the wall clock:
                // a wall clock that jumped forward makes the refresh due at once, one that jumped back changes nothing.
                var monotonicLeft = delay
                while monotonicLeft > .zero && !Task.isCancelled {
                    let step = min(monotonicLeft, policy.maximumSleep)
                    if await sleepOrKick(step, clock: clock) { break }
                    monotonicLeft -= step
                    if now() >= wallDeadline { break }
                }
                if Task.isCancelled { return }
            }
            do {
                let credentials = try await refreshOnce()
                delay = policy.delayAfterSuccess(
                    expiration: credentials.expiration, now: now(), traits: source.refreshTraits, random: random())
            } catch {
                if Task.isCancelled { return }
                if (error as? SourceError)?.disposition == .needsAction {
                    // A person has to act (`aws login`, a permission): no retry loop. The source's watcher
                    // (or a reload) kicks the refresher; a slow safety retry catches a fix made elsewhere.
                    delay = policy.needsActionRetry
                } else {
                    delay = policy.delayAfterFailure(consecutiveFailures: status.consecutiveFailures, random: random())
                }
            }
        }
    }

    private var pendingKick = false
    private var kickWaiter: CheckedContinuation<Void, Never>?

    /// Sleeps on the monotonic clock until `delay` passes or `refreshSoon()` is called; true when kicked.
    private func sleepOrKick(_ delay: Duration, clock: some Clock<Duration>) async -> Bool {
        if pendingKick {
            pendingKick = false
            return true
        }
        return await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                try? await clock.sleep(for: delay)
                return false
            }
            group.addTask {
                await self.waitForKick()
                return true
            }
            let kicked = await group.next() ?? false
            group.cancelAll()
            return kicked
        }
    }

    private func waitForKick() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                if pendingKick || Task.isCancelled {
                    pendingKick = false
                    c.resume()
                } else {
                    kickWaiter = c
                }
            }
        } onCancel: {
            Task { await self.resumeKickWaiter(consumeKick: false) }
        }
    }

    private func resumeKickWaiter(consumeKick: Bool) {
        if let waiter = kickWaiter {
            kickWaiter = nil
            waiter.resume()
        } else if consumeKick {
            pendingKick = true
        }
    }

    private func publish(_ credentials: Credentials, servedExpiration: Date, extended: Bool) {
        generation += 1
        let s = ServedCredentials(
            credentials: credentials, servedExpiration: servedExpiration, generation: generation, extended: extended)
        served = s
        status.expiration = credentials.expiration
        status.servedExpiration = servedExpiration
        status.accessKeySuffix = credentials.keySuffix
        status.accountId = credentials.accountId
    }

    private func succeeded(_ credentials: Credentials) {
        let t = now()
        let changed = served?.credentials != credentials || served?.extendedByStaticStability == true
        if changed {
            publish(credentials, servedExpiration: credentials.expiration, extended: false)
        }
        if status.state == .failing || status.state == .staticStability || status.state == .actionRequired {
            logger.notice("credentials refreshed again after failures", metadata: ["credd.failures": "\(status.consecutiveFailures)"])
        } else if changed {
            logger.info(
                "credentials refreshed",
                metadata: ["credd.key": "…\(credentials.keySuffix)", "credd.expires": "\(RFC3339.format(credentials.expiration))"])
        }
        status.state = .fresh
        status.lastRefresh = t
        status.lastError = nil
        status.lastErrorCode = nil
        status.consecutiveFailures = 0
        loggedNeedsActionCode = nil
        observer?.refreshSucceeded(set: name, source: source.kind)
        view.update(served: served, status: status)
    }

    private func failed(_ error: any Error) {
        let t = now()
        let sourceError = error as? SourceError
            ?? SourceError(code: "SourceFailed", message: "The \(source.kind) source failed: \(error).")
        status.consecutiveFailures += 1
        status.lastError = sourceError.message
        status.lastErrorCode = sourceError.code
        observer?.refreshFailed(set: name, source: source.kind, reason: sourceError.code)
        status.state = sourceError.disposition == .needsAction ? .actionRequired : .failing
        // Log a needs-action error once, transient ones at every failure (they are spaced by the backoff).
        if sourceError.disposition == .needsAction {
            if loggedNeedsActionCode != sourceError.code {
                logger.error("\(sourceError.message)", metadata: ["credd.code": "\(sourceError.code)"])
                loggedNeedsActionCode = sourceError.code
            }
        } else {
            logger.warning(
                "\(sourceError.message)",
                metadata: ["credd.code": "\(sourceError.code)", "credd.failures": "\(status.consecutiveFailures)"])
        }
        if served == nil, let still = sourceError.stillValid, policy.isServable(expiration: still.expiration, now: t) {
            publish(still, servedExpiration: still.expiration, extended: false)
            logger.warning(
                "serving the \(source.kind) source's unrefreshed credentials until they expire; credd keeps retrying",
                metadata: ["credd.key": "…\(still.keySuffix)", "credd.expires": "\(RFC3339.format(still.expiration))"])
        } else if let served,
            let extended = policy.staticStabilityExpiry(
                servedExpiration: served.servedExpiration, now: t, traits: source.refreshTraits, random: random())
        {
            publish(served.credentials, servedExpiration: extended, extended: true)
            status.state = .staticStability
            logger.warning(
                "static stability: keeping the last credentials after a failed refresh; served expiry extended",
                metadata: [
                    "credd.key": "…\(served.credentials.keySuffix)",
                    "credd.expires": "\(RFC3339.format(served.credentials.expiration))",
                    "credd.served_expires": "\(RFC3339.format(extended))",
                ])
        } else if self.served?.extendedByStaticStability == true {
            status.state = .staticStability
        }
        view.update(served: served, status: status)
    }
}
