// What the request path reads: the sets with their answers prepared once per credentials generation.
import CreddCore
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import Synchronization

/// One served set: the view of its state plus the ready-to-write answer for the current generation.
public final class ServedSet: Sendable {
    public let name: String
    public let view: CredentialSetView
    /// A class: the request path takes the current answer with one retain.
    final class Prepared: Sendable {
        let generation: UInt64
        let servedExpiration: Date
        let keySuffix: String
        let response: ByteBuffer
        init(generation: UInt64, servedExpiration: Date, keySuffix: String, response: ByteBuffer) {
            self.generation = generation
            self.servedExpiration = servedExpiration
            self.keySuffix = keySuffix
            self.response = response
        }
    }
    /// The current answer and a count of its replacements. The observer holds this, not the set: a weak
    /// reference to the set would give it a side table, and then every retain and release of it on the request
    /// path would take the runtime's slow path. The set stops the observer when it goes (a reload makes new ones).
    private final class Answers: Sendable {
        let current = NIOLockedValueBox<Prepared?>(nil)
        let replacements = Atomic<UInt64>(0)

        /// Called for every new generation of credentials.
        func publish(_ served: ServedCredentials) {
            let p = Prepared(
                generation: served.generation, servedExpiration: served.servedExpiration,
                keySuffix: served.credentials.keySuffix, response: ResponseBytes.ok(body: served.body))
            let replaced = current.withLockedValue { current in
                guard current == nil || current!.generation < p.generation else { return false }
                current = p
                return true
            }
            if replaced { replacements.add(1, ordering: .releasing) }
        }
    }
    private let answers = Answers()
    private let observer: UInt64

    public init(name: String, view: CredentialSetView) {
        self.name = name
        self.view = view
        let answers = self.answers
        if let served = view.served { answers.publish(served) }
        observer = view.addPublishObserver { served in answers.publish(served) }
    }

    deinit {
        view.removePublishObserver(observer)
    }

    var current: Prepared? { answers.current.withLockedValue { $0 } }
    /// How many times the current answer was replaced, counted after each replacement: read before `current`,
    /// the same count later means the answer read is still current.
    var replacements: UInt64 { answers.replacements.load(ordering: .acquiring) }
}

/// Everything the request path needs, replaced as a whole on reload.
public struct ServingState: Sendable {
    public var sets: [String: ServedSet]
    public var access: AccessPolicy
    public var policy: RefreshPolicy
    public var server: ServerConfig
    public var auditEnabled: Bool

    public init(sets: [String: ServedSet], access: AccessPolicy, policy: RefreshPolicy, server: ServerConfig, auditEnabled: Bool) {
        self.sets = sets
        self.access = access
        self.policy = policy
        self.server = server
        self.auditEnabled = auditEnabled
    }
}

/// The current `ServingState`, read by every request.
public final class ServingStateBox: Sendable {
    /// One state as a reference: the request path takes it with one retain rather than copying the struct,
    /// and a connection knows from its identity whether an access decision it cached still holds.
    final class Snapshot: Sendable {
        let state: ServingState
        init(_ state: ServingState) { self.state = state }
        // Field by field: reading one field of the state does not copy (and retain) all of it.
        var sets: [String: ServedSet] { state.sets }
        var access: AccessPolicy { state.access }
        var policy: RefreshPolicy { state.policy }
        var server: ServerConfig { state.server }
        var auditEnabled: Bool { state.auditEnabled }
    }
    private let box: NIOLockedValueBox<Snapshot>
    private let replaced = Atomic<UInt64>(0)
    public init(_ state: ServingState) { box = NIOLockedValueBox(Snapshot(state)) }
    public var current: ServingState { box.withLockedValue { $0.state } }
    var snapshot: Snapshot { box.withLockedValue { $0 } }
    /// How many times the state was replaced, counted after each replacement: read before `snapshot`, the same
    /// count later means the snapshot read is still current.
    var replacements: UInt64 { replaced.load(ordering: .acquiring) }
    public func replace(_ state: ServingState) {
        box.withLockedValue { $0 = Snapshot(state) }
        replaced.add(1, ordering: .releasing)
    }
}

/// The status document of `GET /v1/status` and `credd status --json` (schema version 1; no secrets).
public struct StatusDocument: Codable, Sendable {
    public var version: Int = 1
    public var pid: Int32
    public var startedAt: Date
    public var config: String
    public var sets: [SetStatus]

    public init(pid: Int32, startedAt: Date, config: String, sets: [SetStatus]) {
        self.pid = pid
        self.startedAt = startedAt
        self.config = config
        self.sets = sets
    }

    public static func encoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.dateEncodingStrategy = .iso8601
        e.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        return e
    }

    public static func decoder() -> JSONDecoder {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .iso8601
        return d
    }
}

/// One line per credential request: who, which set, the answer, the key's last four characters.
///
/// Lines go through `logger`, unless built with `batchingStandardError(logger:)` while the logger writes plain
/// lines to stderr: then the same lines are formatted into one buffer per event loop and written with one
/// write(2) per loop tick (`AuditBatch`), a small fraction of a logger call per request. Under the journal
/// they stay structured entries (CREDD_SET, …) through the logger.
public struct AuditLog: Sendable {
    let logger: Logger
    /// Set when lines bypass the logger in batches.
    let batches: AuditBatches?
    public init(logger: Logger) {
        self.logger = logger
        self.batches = nil
    }

    /// Batches to stderr when `logger` is swift-log's `StreamLogHandler` writing there (the format is the same);
    /// otherwise the same as `init(logger:)`.
    public static func batchingStandardError(logger: Logger) -> AuditLog {
        var log = AuditLog(logger: logger)
        if let handler = logger.handler as? StreamLogHandler, handler.metadataProvider == nil, !isJournalStandardError() {
            log = AuditLog(logger: logger, batches: AuditBatches(
                fd: STDERR_FILENO, enabled: handler.logLevel <= .info, label: logger.label, base: handler.metadata))
        }
        return log
    }

    init(logger: Logger, batches: AuditBatches?) {
        self.logger = logger
        self.batches = batches
    }

    /// The batch of `eventLoop`'s lines when batching; call on that loop (a connection does, once).
    func batch(on eventLoop: any EventLoop) -> AuditBatch? { batches?.batch(on: eventLoop) }

    /// True when systemd connected stderr to the journal (`JOURNAL_STREAM` names fd 2's device and inode).
    static func isJournalStandardError() -> Bool {
        guard let raw = getenv("JOURNAL_STREAM") else { return false }
        let parts = String(cString: raw).split(separator: ":")
        guard parts.count == 2, let device = UInt64(parts[0]), let inode = UInt64(parts[1]) else { return false }
        var info = stat()
        guard fstat(STDERR_FILENO, &info) == 0 else { return false }
        return UInt64(info.st_dev) == device && UInt64(info.st_ino) == inode
    }

    public func record(peer: Peer, unit: String?, set: String, status: UInt, keySuffix: String?) {
        var metadata: Logger.Metadata = [
            "credd.set": "\(set)", "credd.status": "\(status)", "credd.peer": "\(peer.auditDescription)",
        ]
        if case .unix(let uid, _, let pid, _) = peer {
            metadata["credd.uid"] = "\(uid)"
            metadata["credd.pid"] = "\(pid)"
            if let unit { metadata["credd.unit"] = "\(unit)" }
        }
        if let keySuffix { metadata["credd.key"] = "…\(keySuffix)" }
        logger.info("credential request", metadata: metadata)
    }

    /// The systemd unit of a process, from its cgroup path, when it has one.
    public static func unitOf(pid: Int32) -> String? {
        guard pid > 0, let text = try? String(contentsOfFile: "/proc/\(pid)/cgroup", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") {
            guard let path = line.split(separator: ":", maxSplits: 2).last else { continue }
            if let unit = path.split(separator: "/").last(where: { $0.hasSuffix(".service") || $0.hasSuffix(".scope") }) {
                return String(unit)
            }
        }
        return nil
    }
}

/// The audit batches of all event loops, created on first use by each loop.
final class AuditBatches: Sendable {
    let fd: Int32
    /// False when the log level hides info lines: then nothing is written, as the logger would not.
    let enabled: Bool
    let label: String
    /// The logger's own metadata (`credd.event=audit`), sorted by key as StreamLogHandler prints it.
    let base: [(key: String, value: String)]
    private let loops = NIOLockedValueBox<[ObjectIdentifier: NIOLoopBound<AuditBatch>]>([:])

    init(fd: Int32, enabled: Bool, label: String, base: Logger.Metadata) {
        self.fd = fd
        self.enabled = enabled
        self.label = label
        self.base = base.map { (key: $0.key, value: "\($0.value)") }.sorted { $0.key < $1.key }
    }

    func batch(on eventLoop: any EventLoop) -> AuditBatch? {
        guard enabled else { return nil }
        let key = ObjectIdentifier(eventLoop as AnyObject)
        let bound = loops.withLockedValue { loops -> NIOLoopBound<AuditBatch> in
            if let existing = loops[key] { return existing }
            let made = NIOLoopBound(AuditBatch(owner: self, eventLoop: eventLoop), eventLoop: eventLoop)
            loops[key] = made
            return made
        }
        return bound.value
    }
}

/// One connection's audit line with the per-request values left open: the connection's peer (and unit) and
/// the logger's metadata are formatted once, in StreamLogHandler's order (keys sorted).
final class AuditLineTemplate {
    enum Piece {
        case text([UInt8])
        case key, set, status
    }
    let pieces: [Piece]
    /// The last line made from this template: a connection repeating its request within the same second
    /// gets the very same line, copied rather than formatted again.
    var last: (second: time_t, set: String, status: UInt, keySuffix: String?, line: [UInt8])?

    init(base: [(key: String, value: String)], peer: Peer, unit: String?) {
        var fixed = base.filter { !["credd.key", "credd.set", "credd.status", "credd.peer", "credd.uid", "credd.pid", "credd.unit"].contains($0.key) }
        fixed.append((key: "credd.peer", value: peer.auditDescription))
        if case .unix(let uid, _, let pid, _) = peer {
            fixed.append((key: "credd.uid", value: "\(uid)"))
            fixed.append((key: "credd.pid", value: "\(pid)"))
            if let unit { fixed.append((key: "credd.unit", value: unit)) }
        }
        let slots: [(key: String, piece: Piece)] = [("credd.key", .key), ("credd.set", .set), ("credd.status", .status)]
        let all = (fixed.map { (key: $0.key, value: Optional($0.value), piece: Piece.text([])) }
            + slots.map { (key: $0.key, value: String?.none, piece: $0.piece) }).sorted { $0.key < $1.key }
        var pieces: [Piece] = []
        var text: [UInt8] = []
        for entry in all {
            if let value = entry.value {
                text += Array(" \(entry.key)=\(value)".utf8)
            } else {
                if !text.isEmpty { pieces.append(.text(text)) }
                text = []
                pieces.append(entry.piece)
            }
        }
        if !text.isEmpty { pieces.append(.text(text)) }
        self.pieces = pieces
    }
}

/// The audit lines of one event loop's current tick, written with one write(2) when the tick's I/O is done.
/// Lives on its event loop only (reached through `NIOLoopBound`).
final class AuditBatch {
    private unowned let owner: AuditBatches
    private let eventLoop: any EventLoop
    private var buffer: ByteBuffer
    private var flushScheduled = false
    /// The current second's timestamp, as StreamLogHandler formats it (local time, `%Y-%m-%dT%H:%M:%S%z`).
    private var second: time_t = -1
    private var stamp: [UInt8] = []
    private let levelAndLabel: [UInt8]
    private static let message = Array(" [CreddServer] credential request\n".utf8)
    /// Lines above this are written at once rather than at the end of the tick.
    private static let flushAbove = 64 * 1024

    init(owner: AuditBatches, eventLoop: any EventLoop) {
        self.owner = owner
        self.eventLoop = eventLoop
        self.buffer = ByteBufferAllocator().buffer(capacity: 4096)
        self.levelAndLabel = Array(" \(Logger.Level.info)\(owner.label.isEmpty ? "" : " ")\(owner.label):".utf8)
    }

    func template(peer: Peer, unit: String?) -> AuditLineTemplate {
        AuditLineTemplate(base: owner.base, peer: peer, unit: unit)
    }

    func append(_ template: AuditLineTemplate, set: String, status: UInt, keySuffix: String?) {
        let now = time(nil)
        if now != second { updateStamp(now) }
        if let last = template.last, last.second == now, last.status == status, last.set == set, last.keySuffix == keySuffix {
            buffer.writeBytes(last.line)
        } else {
            let start = buffer.writerIndex
            format(template, set: set, status: status, keySuffix: keySuffix)
            let line = buffer.getBytes(at: start, length: buffer.writerIndex - start)
            template.last = line.map { (now, set, status, keySuffix, $0) }
        }
        if buffer.readableBytes > Self.flushAbove {
            flush()
        } else if !flushScheduled {
            flushScheduled = true
            // Runs after this tick's reads and writes: one write(2) for every line of the tick.
            eventLoop.assumeIsolated().execute { self.flush() }
        }
    }

    private func format(_ template: AuditLineTemplate, set: String, status: UInt, keySuffix: String?) {
        buffer.writeBytes(stamp)
        buffer.writeBytes(levelAndLabel)
        for piece in template.pieces {
            switch piece {
            case .text(let bytes): buffer.writeBytes(bytes)
            case .key:
                if let keySuffix {
                    buffer.writeStaticString(" credd.key=\u{2026}")
                    buffer.writeString(keySuffix)
                }
            case .set:
                buffer.writeStaticString(" credd.set=")
                buffer.writeString(set)
            case .status:
                buffer.writeStaticString(" credd.status=")
                switch status {
                case 200: buffer.writeStaticString("200")
                case 403: buffer.writeStaticString("403")
                case 503: buffer.writeStaticString("503")
                default: buffer.writeString(String(status))
                }
            }
        }
        buffer.writeBytes(Self.message)
    }

    func flush() {
        flushScheduled = false
        while buffer.readableBytes > 0 {
            let written = buffer.withUnsafeReadableBytes { write(owner.fd, $0.baseAddress, $0.count) }
            if written > 0 {
                buffer.moveReaderIndex(forwardBy: written)
            } else if written < 0 && errno == EINTR {
                continue
            } else {
                break  // stderr is gone or full (non-blocking): as the logger, lose the lines rather than block
            }
        }
        buffer.clear()
        if buffer.capacity > 1 << 20 { buffer = ByteBufferAllocator().buffer(capacity: 4096) }
    }

    private func updateStamp(_ now: time_t) {
        second = now
        var t = now
        var parts = tm()
        var text = [CChar](repeating: 0, count: 64)
        let count = localtime_r(&t, &parts) == nil ? 0 : strftime(&text, text.count, "%Y-%m-%dT%H:%M:%S%z", &parts)
        if count > 0 {
            stamp = text.prefix(count).map { UInt8(bitPattern: $0) }
        } else {
            stamp = Array("<unknown>".utf8)
        }
    }
}
