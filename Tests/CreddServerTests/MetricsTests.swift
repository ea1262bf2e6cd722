// credd's /metrics: counters by route, status and set, refresh outcomes, the expiry gauge, the exposition text.
import CreddCore
import CreddServer
import CreddTestSupport
import Foundation
import NIOCore
import NIOHTTP1
import Testing

/// The value of one sample line (`name{labels} value`) in the exposition, or nil when absent.
private func sample(_ text: String, _ series: String) -> Double? {
    for line in text.split(separator: "\n") where line.hasPrefix(series + " ") {
        return Double(line.dropFirst(series.count + 1))
    }
    return nil
}

private let now = Date(timeIntervalSince1970: 1_800_000_000)

/// A `SetStatus` as credd's status document carries it (the type has no public memberwise initializer).
private func makeSetStatus(
    name: String, source: String, state: SetState, servedExpiration: Date? = nil, lastError: String? = nil, lastErrorCode: String? = nil
) -> SetStatus {
    var json: [String: Any] = [
        "name": name, "source": source, "summary": "", "chain": [String](), "state": state.rawValue, "consecutiveFailures": 0,
    ]
    if let servedExpiration { json["servedExpiration"] = servedExpiration.timeIntervalSince1970 }
    if let lastError { json["lastError"] = lastError }
    if let lastErrorCode { json["lastErrorCode"] = lastErrorCode }
    let decoder = JSONDecoder()
    decoder.dateDecodingStrategy = .secondsSince1970
    return try! decoder.decode(SetStatus.self, from: JSONSerialization.data(withJSONObject: json))
}

@Suite struct MetricsTests {
    @Test func answersAreCountedByRouteAndTheStatusInTheirFirstLine() {
        let m = CreddMetrics()
        m.answered(.credentials, response: ResponseBytes.ok(body: Array("{}".utf8)))
        m.answered(.credentials, response: ResponseBytes.ok(body: Array("{}".utf8), keepAlive: false))
        m.answered(.status, response: ResponseBytes.error(HTTPError(.forbidden, "CallerNotAllowed", "no."), keepAlive: true))
        m.answered(.other, response: ResponseBytes.error(HTTPError(.imATeapot, "Teapot", "short and stout."), keepAlive: true))
        m.answered(.health, status: 503)
        let text = m.exposition(sets: [], openConnections: 0, now: now)
        #expect(sample(text, #"credd_http_requests_total{route="credentials",status="200"}"#) == 2)
        #expect(sample(text, #"credd_http_requests_total{route="status",status="403"}"#) == 1)
        #expect(sample(text, #"credd_http_requests_total{route="other",status="other"}"#) == 1)
        #expect(sample(text, #"credd_http_requests_total{route="health",status="503"}"#) == 1)
        // Every known combination exists from the start, at zero.
        #expect(sample(text, #"credd_http_requests_total{route="metrics",status="401"}"#) == 0)
        #expect(text.contains("# TYPE credd_http_requests_total counter"))
        #expect(text.contains("# HELP credd_http_requests_total "))
    }

    @Test func credentialRequestsBySet() {
        let m = CreddMetrics()
        m.register(sets: [("default", "imds")])
        m.credentialRequest(set: "default", status: 200)
        m.credentialRequest(set: "default", status: 200)
        m.credentialRequest(set: "default", status: 503)
        m.credentialRequest(set: "added-by-reload", status: 401)
        let text = m.exposition(sets: [], openConnections: 0, now: now)
        #expect(sample(text, #"credd_credential_requests_total{set="default",status="200"}"#) == 2)
        #expect(sample(text, #"credd_credential_requests_total{set="default",status="503"}"#) == 1)
        #expect(sample(text, #"credd_credential_requests_total{set="default",status="403"}"#) == 0)
        #expect(sample(text, #"credd_credential_requests_total{set="added-by-reload",status="401"}"#) == 1)
    }

    @Test func refreshesFailuresAndUpstreamLatency() {
        let m = CreddMetrics()
        m.refreshSucceeded(set: "default", source: "imds")
        m.refreshFailed(set: "default", source: "imds", reason: "IMDSUnreachable")
        m.refreshFailed(set: "default", source: "imds", reason: "IMDSUnreachable")
        m.refreshFailed(set: "dev", source: "login", reason: "LoginRequired")
        m.fetchFinished(set: "default", source: "imds", latency: .milliseconds(30))
        m.fetchFinished(set: "default", source: "imds", latency: .seconds(3))
        let text = m.exposition(sets: [], openConnections: 0, now: now)
        #expect(sample(text, #"credd_refreshes_total{set="default",source="imds"}"#) == 1)
        #expect(sample(text, #"credd_refresh_failures_total{set="default",source="imds",reason="IMDSUnreachable"}"#) == 2)
        #expect(sample(text, #"credd_refresh_failures_total{set="dev",source="login",reason="LoginRequired"}"#) == 1)
        #expect(sample(text, #"credd_upstream_latency_seconds_count{source="imds"}"#) == 2)
        #expect(sample(text, #"credd_upstream_latency_seconds_bucket{source="imds",le="0.05"}"#) == 1)
        #expect(sample(text, #"credd_upstream_latency_seconds_bucket{source="imds",le="+Inf"}"#) == 2)
        #expect(text.contains("# TYPE credd_upstream_latency_seconds histogram"))
    }

    @Test func expiryAndConnectionGaugesAreSetAtScrapeTime() {
        let m = CreddMetrics()
        let fresh = makeSetStatus(name: "default", source: "imds", state: .fresh, servedExpiration: now.addingTimeInterval(3600.7))
        let empty = makeSetStatus(name: "dev", source: "login", state: .starting)
        var text = m.exposition(sets: [fresh, empty], openConnections: 7, now: now)
        #expect(sample(text, #"credd_credentials_expiry_seconds{set="default"}"#) == 3600)
        #expect(sample(text, #"credd_credentials_expiry_seconds{set="dev"}"#) == 0)
        #expect(sample(text, "credd_open_connections") == 7)
        text = m.exposition(sets: [fresh], openConnections: 2, now: now.addingTimeInterval(600))
        #expect(sample(text, #"credd_credentials_expiry_seconds{set="default"}"#) == 3000)
        #expect(sample(text, #"credd_credentials_expiry_seconds{set="dev"}"#) == nil, "a set removed by a reload loses its gauge")
        #expect(sample(text, "credd_open_connections") == 2)
    }

    @Test func aCredentialSetReportsItsRefreshesToTheObserver() async throws {
        let metrics = CreddMetrics()
        let clock = ManualWallClock(now)
        let source = ScriptedSource(kind: "imds", fallback: .failure(SourceError(code: "IMDSUnreachable", message: "IMDS unreachable.")))
        source.enqueue(.success(testCredentials(expiresIn: 3600, now: now)))
        let set = CredentialSet(name: "default", source: source, logger: InMemoryLog().logger(), now: clock.function, observer: metrics)
        _ = try await set.refreshOnce()
        await #expect(throws: SourceError.self) { try await set.refreshOnce() }
        let text = metrics.exposition(sets: [set.view.status], openConnections: 0, now: now)
        #expect(sample(text, #"credd_refreshes_total{set="default",source="imds"}"#) == 1)
        #expect(sample(text, #"credd_refresh_failures_total{set="default",source="imds",reason="IMDSUnreachable"}"#) == 1)
        #expect(sample(text, #"credd_upstream_latency_seconds_count{source="imds"}"#) == 2)
        #expect(sample(text, #"credd_credentials_expiry_seconds{set="default"}"#) == 3600)
    }
}
