// Test helpers shared by the Swift test targets: a manual clock, an in-memory log, scripted sources.
import CreddCore
import Foundation
import Logging
import NIOConcurrencyHelpers

/// A wall clock tests set and advance by hand.
public final class ManualWallClock: Sendable {
    private let value: NIOLockedValueBox<Date>
    public init(_ start: Date = Date(timeIntervalSince1970: 1_800_000_000)) { value = NIOLockedValueBox(start) }
    public var now: Date { value.withLockedValue { $0 } }
    public func advance(by seconds: TimeInterval) { value.withLockedValue { $0 = $0.addingTimeInterval(seconds) } }
    public func set(_ date: Date) { value.withLockedValue { $0 = date } }
    public var function: @Sendable () -> Date { { self.now } }
}

/// Collects log records in memory; tests read them (never bootstrap the global logging system).
public final class InMemoryLog: Sendable {
    public struct Record: Sendable {
        public var level: Logger.Level
        public var message: String
        public var metadata: [String: String]
        public var rendered: String { "\(level) \(message) " + metadata.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ") }
    }
    private let records = NIOLockedValueBox<[Record]>([])
    public init() {}
    public var all: [Record] { records.withLockedValue { $0 } }
    public var text: String { all.map(\.rendered).joined(separator: "\n") }
    func append(_ r: Record) { records.withLockedValue { $0.append(r) } }

    public func logger(label: String = "test") -> Logger {
        Logger(label: label) { _ in Handler(log: self) }
    }

    struct Handler: LogHandler {
        let log: InMemoryLog
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String, file: String, function: String, line: UInt) {
            let merged = self.metadata.merging(metadata ?? [:]) { $1 }
            log.append(Record(level: level, message: message.description, metadata: merged.mapValues { "\($0)" }))
        }
    }
}

/// A source whose answers a test scripts; counts fetches; can be made slow.
public final class ScriptedSource: CredentialSource {
    public let kind: String
    public let summary: String
    public let refreshTraits: RefreshTraits
    private struct State {
        var results: [Result<Credentials, SourceError>] = []
        var fallback: Result<Credentials, SourceError>
        var fetches = 0
        var delay: Duration = .zero
    }
    private let state: NIOLockedValueBox<State>

    public init(kind: String = "scripted", traits: RefreshTraits = RefreshTraits(), fallback: Result<Credentials, SourceError>) {
        self.kind = kind
        self.summary = "scripted source"
        self.refreshTraits = traits
        self.state = NIOLockedValueBox(State(fallback: fallback))
    }

    public var fetchCount: Int { state.withLockedValue { $0.fetches } }
    public func enqueue(_ r: Result<Credentials, SourceError>) { state.withLockedValue { $0.results.append(r) } }
    public func setFallback(_ r: Result<Credentials, SourceError>) { state.withLockedValue { $0.fallback = r } }
    public func setDelay(_ d: Duration) { state.withLockedValue { $0.delay = d } }

    public func fetch(logger: Logger) async throws -> Credentials {
        let (result, delay) = state.withLockedValue { s -> (Result<Credentials, SourceError>, Duration) in
            s.fetches += 1
            return (s.results.isEmpty ? s.fallback : s.results.removeFirst(), s.delay)
        }
        if delay > .zero { try await Task.sleep(for: delay) }
        return try result.get()
    }
}

/// Recognisable fake credentials; their secrets are what the secret scans look for.
public func testCredentials(key: String = "ASIATESTKEY000000001", expiresIn seconds: TimeInterval, now: Date, account: String? = "123456789012") -> Credentials {
    Credentials(
        accessKeyId: key, secretAccessKey: Secret("SECRETtestSECRET\(key)"), sessionToken: Secret("TOKENtestTOKEN\(key)"),
        expiration: now.addingTimeInterval(seconds), accountId: account)
}

/// Polls `condition` every 5 ms until it holds or `timeout` passes; whether it held (for `#expect`).
public func poll(timeout: Duration = .seconds(30), until condition: @Sendable () -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + timeout
    while !condition() {
        if ContinuousClock.now > deadline { return false }
        try await Task.sleep(for: .milliseconds(5))
    }
    return true
}
