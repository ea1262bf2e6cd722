// What the request path reads: the sets with their answers prepared once per credentials generation.
import CreddCore
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// One served set: the view of its state plus the ready-to-write answer for the current generation.
public final class ServedSet: Sendable {
    public let name: String
    public let view: CredentialSetView
    struct Prepared: Sendable {
        let generation: UInt64
        let servedExpiration: Date
        let keySuffix: String
        let response: ByteBuffer
    }
    private let prepared = NIOLockedValueBox<Prepared?>(nil)

    public init(name: String, view: CredentialSetView) {
        self.name = name
        self.view = view
        if let served = view.served { publish(served) }
        view.addPublishObserver { [weak self] served in self?.publish(served) }
    }

    /// Called for every new generation of credentials.
    public func publish(_ served: ServedCredentials) {
        let p = Prepared(
            generation: served.generation, servedExpiration: served.servedExpiration,
            keySuffix: served.credentials.keySuffix, response: ResponseBytes.ok(body: served.body))
        prepared.withLockedValue { current in
            if current == nil || current!.generation < p.generation { current = p }
        }
    }

    var current: Prepared? { prepared.withLockedValue { $0 } }
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
    private let box: NIOLockedValueBox<ServingState>
    public init(_ state: ServingState) { box = NIOLockedValueBox(state) }
    public var current: ServingState { box.withLockedValue { $0 } }
    public func replace(_ state: ServingState) { box.withLockedValue { $0 = state } }
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
public struct AuditLog: Sendable {
    let logger: Logger
    public init(logger: Logger) { self.logger = logger }

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
