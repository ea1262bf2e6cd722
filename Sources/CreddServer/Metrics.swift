// credd's Prometheus metrics (GET /metrics): swift-metrics handles backed by a swift-prometheus registry.
import CoreMetrics
import CreddCore
import Foundation
import Metrics
import NIOConcurrencyHelpers
import NIOCore
import Prometheus

/// The route label of `credd_http_requests_total`.
public enum MetricsRoute: Int, Sendable, CaseIterable {
    case credentials, health, status, metrics, other

    public init(_ route: Route) {
        switch route {
        case .credentials: self = .credentials
        case .health: self = .health
        case .status: self = .status
        case .metrics: self = .metrics
        }
    }

    var label: String {
        switch self {
        case .credentials: return "credentials"
        case .health: return "health"
        case .status: return "status"
        case .metrics: return "metrics"
        case .other: return "other"
        }
    }
}

/// Every metric credd exports, created once; the request path only increments counters it finds by index.
///
/// Families (all prefixed `credd_`):
/// - `http_requests_total{route,status}`: every answer, by route and HTTP status (`other` for statuses credd
///   does not normally send);
/// - `credential_requests_total{set,status}`: credential requests per set (200, 401, 403, 503);
/// - `refreshes_total{set,source}` and `refresh_failures_total{set,source,reason}` (reason = the source's
///   error code, e.g. `IMDSUnreachable`);
/// - `upstream_latency_seconds{source}`: histogram of each upstream fetch (IMDS, Sign-In, STS), failures included;
/// - `credentials_expiry_seconds{set}`: seconds until the served credentials expire (0 when none), set at scrape;
/// - `open_connections`: connections open on all listeners, set at scrape.
public final class CreddMetrics: CredentialSetObserver, Sendable {
    /// HTTP statuses with their own series; anything else counts as `other`.
    static let statuses: [UInt] = [200, 400, 401, 403, 404, 405, 431, 503]
    static let credentialStatuses: [UInt] = [200, 401, 403, 503]
    static let latencyBuckets: [Duration] = [
        .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
        .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10),
    ]

    let registry = PrometheusCollectorRegistry()
    private let factory: PrometheusMetricsFactory
    /// Row-major [route × (statuses + other)]. Immutable after init: read without a lock.
    private let httpRequests: [CoreMetrics.Counter]
    private let openConnections: Meter

    private struct Mutable {
        /// Set name → one counter per `credentialStatuses` entry, then `other`.
        var requests: [String: [CoreMetrics.Counter]] = [:]
        /// Set name → its expiry gauge, while the set is served.
        var expiry: [String: Meter] = [:]
        /// "set NUL source" → counter.
        var refreshes: [String: CoreMetrics.Counter] = [:]
        /// "set NUL source NUL reason" → counter.
        var failures: [String: CoreMetrics.Counter] = [:]
        /// Source kind → histogram.
        var latency: [String: CoreMetrics.Timer] = [:]
    }
    private let mutable = NIOLockedValueBox(Mutable())

    private static var httpRequestsName: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "credd", metricName: "http_requests", unitName: "total",
            helpText: "HTTP answers by route and status (status \"other\": any status credd does not normally send).")
    }
    private static var credentialRequestsName: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "credd", metricName: "credential_requests", unitName: "total",
            helpText: "Credential requests by credential set and HTTP status.")
    }
    private static var refreshesName: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "credd", metricName: "refreshes", unitName: "total",
            helpText: "Successful refreshes by credential set and source.")
    }
    private static var failuresName: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "credd", metricName: "refresh_failures", unitName: "total",
            helpText: "Failed refreshes by credential set, source and reason (the source's error code).")
    }
    private static var latencyName: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "credd", metricName: "upstream_latency", unitName: "seconds",
            helpText: "Duration of each upstream fetch (IMDS, Sign-In, STS) by source, failures included.")
    }
    private static var expiryName: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "credd", metricName: "credentials_expiry", unitName: "seconds",
            helpText: "Seconds until the credentials a set serves expire (0 when it holds none); updated at each scrape.")
    }
    private static var connectionsName: MetricNameDescriptor {
        MetricNameDescriptor(
            namespace: "credd", metricName: "open_connections", unitName: "",
            helpText: "Connections open on all of credd's listeners; updated at each scrape.")
    }

    public init() {
        let factory = PrometheusMetricsFactory(registry: registry)
        self.factory = factory
        let registry = self.registry
        httpRequests = MetricsRoute.allCases.flatMap { route in
            (Self.statuses.map(String.init) + ["other"]).map { status in
                let labels = [("route", route.label), ("status", status)]
                return CoreMetrics.Counter(
                    label: Self.httpRequestsName.name, dimensions: labels,
                    handler: registry.makeCounter(descriptor: Self.httpRequestsName, labels: labels), factory: factory)
            }
        }
        openConnections = Meter(
            label: Self.connectionsName.name, dimensions: [],
            handler: registry.makeGauge(descriptor: Self.connectionsName), factory: factory)
    }

    // ---- the request path: no allocation, no string building --------------------------------------------

    /// Counts one answer of `route` with HTTP `status`.
    @inline(__always)
    public func answered(_ route: MetricsRoute, status: UInt) {
        httpRequests[route.rawValue * (Self.statuses.count + 1) + Self.statusIndex(status, in: Self.statuses)].increment()
    }

    /// Counts one answer of `route` from the status code in its first line ("HTTP/1.1 200 OK"): every
    /// answer passes through the handler's one write function, which knows the bytes but not the status.
    @inline(__always)
    public func answered(_ route: MetricsRoute, response: ByteBuffer) {
        answered(route, status: Self.statusCode(of: response))
    }

    /// The three digits after "HTTP/1.x "; 0 when the buffer does not start with a status line.
    @inline(__always)
    static func statusCode(of response: ByteBuffer) -> UInt {
        let at = response.readerIndex + 9
        var code: UInt = 0
        for i in 0..<3 {
            guard let digit = response.getInteger(at: at + i, as: UInt8.self), digit >= 0x30 && digit <= 0x39 else { return 0 }
            code = code * 10 + UInt(digit - 0x30)
        }
        return code
    }

    /// Counts one credential request for set `name` answered with `status`.
    public func credentialRequest(set name: String, status: UInt) {
        requestCounters(set: name).count(status: status)
    }

    /// The request counters of set `name`, for a connection to keep: counting is then one atomic add.
    public func requestCounters(set name: String) -> SetRequestCounters {
        SetRequestCounters(name: name, counters: mutable.withLockedValue { m in
            if let counters = m.requests[name] { return counters }
            let counters = makeRequestCounters(name)
            m.requests[name] = counters
            return counters
        })
    }

    /// One set's `credd_credential_requests_total` series, by status.
    public struct SetRequestCounters: Sendable {
        public let name: String
        let counters: [CoreMetrics.Counter]

        public func count(status: UInt) {
            counters[CreddMetrics.statusIndex(status, in: CreddMetrics.credentialStatuses)].increment()
        }
    }

    @inline(__always)
    static func statusIndex(_ status: UInt, in list: [UInt]) -> Int {
        for (i, s) in list.enumerated() where s == status { return i }
        return list.count
    }

    // ---- refreshes (CredentialSetObserver) -------------------------------------------------------------

    public func fetchFinished(set: String, source: String, latency: Duration) {
        let timer = mutable.withLockedValue { m -> CoreMetrics.Timer in
            if let t = m.latency[source] { return t }
            let labels = [("source", source)]
            let t = CoreMetrics.Timer(
                label: Self.latencyName.name, dimensions: labels,
                handler: registry.makeDurationHistogram(descriptor: Self.latencyName, labels: labels, buckets: Self.latencyBuckets),
                factory: factory)
            m.latency[source] = t
            return t
        }
        timer.recordNanoseconds(Self.nanoseconds(latency))
    }

    public func refreshSucceeded(set: String, source: String) {
        mutable.withLockedValue { m in refreshCounter(&m, set: set, source: source) }.increment()
    }

    private func refreshCounter(_ m: inout Mutable, set: String, source: String) -> CoreMetrics.Counter {
        let key = "\(set)\u{0}\(source)"
        if let c = m.refreshes[key] { return c }
        let labels = [("set", set), ("source", source)]
        let c = CoreMetrics.Counter(
            label: Self.refreshesName.name, dimensions: labels,
            handler: registry.makeCounter(descriptor: Self.refreshesName, labels: labels), factory: factory)
        m.refreshes[key] = c
        return c
    }

    public func refreshFailed(set: String, source: String, reason: String) {
        let key = "\(set)\u{0}\(source)\u{0}\(reason)"
        let counter = mutable.withLockedValue { m -> CoreMetrics.Counter in
            if let c = m.failures[key] { return c }
            let labels = [("set", set), ("source", source), ("reason", reason)]
            let c = CoreMetrics.Counter(
                label: Self.failuresName.name, dimensions: labels,
                handler: registry.makeCounter(descriptor: Self.failuresName, labels: labels), factory: factory)
            m.failures[key] = c
            return c
        }
        counter.increment()
    }

    private func makeRequestCounters(_ name: String) -> [CoreMetrics.Counter] {
        (Self.credentialStatuses.map(String.init) + ["other"]).map { status in
            let labels = [("set", name), ("status", status)]
            return CoreMetrics.Counter(
                label: Self.credentialRequestsName.name, dimensions: labels,
                handler: registry.makeCounter(descriptor: Self.credentialRequestsName, labels: labels), factory: factory)
        }
    }

    /// Creates the series of the sets being served, so that they exist (at zero) before their first event,
    /// and drops the expiry gauge of sets no longer served (a reload removed them).
    public func register(sets: [(name: String, source: String)]) {
        mutable.withLockedValue { m in
            for (name, source) in sets {
                if m.requests[name] == nil { m.requests[name] = makeRequestCounters(name) }
                _ = refreshCounter(&m, set: name, source: source)
                if m.expiry[name] == nil {
                    let labels = [("set", name)]
                    m.expiry[name] = Meter(
                        label: Self.expiryName.name, dimensions: labels,
                        handler: registry.makeGauge(descriptor: Self.expiryName, labels: labels), factory: factory)
                }
            }
            let served = Set(sets.map(\.name))
            for (name, meter) in m.expiry where !served.contains(name) {
                meter.destroy()
                m.expiry[name] = nil
            }
        }
    }

    // ---- the scrape ------------------------------------------------------------------------------------

    /// The Prometheus text exposition (format 0.0.4), after setting the gauges from `sets` and
    /// `openConnections`. Sets no longer served lose their expiry gauge.
    public func exposition(sets: [SetStatus], openConnections count: Int, now: Date) -> String {
        register(sets: sets.map { ($0.name, $0.source) })
        let gauges = mutable.withLockedValue { $0.expiry }
        for status in sets {
            let seconds = status.servedExpiration.map { max(0, $0.timeIntervalSince(now)) } ?? 0
            gauges[status.name]?.set(seconds.rounded(.down))
        }
        openConnections.set(Double(count))
        return registry.emitToString()
    }

    static func nanoseconds(_ d: Duration) -> Int64 {
        let (seconds, attoseconds) = d.components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
