// The listeners: a Unix socket and loopback TCP, bound from config or adopted from systemd.
#if os(Linux)
import CCreddLinux
#endif
import CreddCore
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// Counts open connections and refuses those above the limit. When the last one closes, the heap that
/// served them (buffers of hundreds of connections under load) goes back to the system: glibc keeps freed
/// memory for reuse otherwise, and an idle credd would hold it for good. At most once per `trimInterval`: a
/// last close within it of the previous trim is trimmed at its end instead (when still no connection is
/// open), so that bursts of short connections in quick succession (one per SDK process) are not left
/// holding their heap: measured, 2 MB more anonymous memory for good after such bursts before this.
public final class ConnectionCounter: Sendable {
    private struct State {
        var open = 0
        var limit: Int
        var lastTrim: NIODeadline = .uptimeNanoseconds(0)
        var trailingTrim = false
    }
    private let state: NIOLockedValueBox<State>
    private let trimInterval: TimeAmount
    private let trim: @Sendable () -> Void

    public init(limit: Int, trimInterval: TimeAmount = .seconds(1), trim: (@Sendable () -> Void)? = nil) {
        state = NIOLockedValueBox(State(limit: limit))
        self.trimInterval = trimInterval
        #if os(Linux)
        self.trim = trim ?? { _ = malloc_trim(0) }
        #else
        self.trim = trim ?? {}
        #endif
    }
    public var openCount: Int { state.withLockedValue { $0.open } }
    public func setLimit(_ limit: Int) { state.withLockedValue { $0.limit = limit } }
    public func open() -> Bool {
        state.withLockedValue {
            guard $0.open < $0.limit else { return false }
            $0.open += 1
            return true
        }
    }

    /// A counted connection closed; `loop` runs the trim that comes at the end of the interval, if one is due.
    public func close(on loop: any EventLoop) {
        enum Action { case none, now, at(NIODeadline) }
        let interval = trimInterval
        let action = state.withLockedValue { s -> Action in
            s.open -= 1
            guard s.open == 0 else { return .none }
            let now = NIODeadline.now()
            if now - s.lastTrim >= interval {
                s.lastTrim = now
                return .now
            }
            if s.trailingTrim { return .none }
            s.trailingTrim = true
            return .at(s.lastTrim + interval)
        }
        switch action {
        case .none: break
        case .now: trim()
        case .at(let deadline):
            loop.scheduleTask(deadline: deadline) { [self] in
                let due = state.withLockedValue { s -> Bool in
                    s.trailingTrim = false
                    guard s.open == 0 else { return false }  // the next last close trims
                    s.lastTrim = .now()
                    return true
                }
                if due { trim() }
            }
        }
    }
}

/// Where a listener comes from.
public enum ListenerSource: Sendable, CustomStringConvertible {
    case unixPath(UnixListenConfig)
    case tcp(TCPAddress)
    /// An already listening socket passed by systemd (`LISTEN_FDS`), with its `FileDescriptorName`.
    case inherited(fd: Int32, name: String, transport: ListenerContext.Transport)

    public var description: String {
        switch self {
        case .unixPath(let u): return "unix:\(u.path)"
        case .tcp(let a): return "tcp:\(a)"
        case .inherited(let fd, let name, _): return "systemd fd \(fd) (\(name))"
        }
    }
}

public struct ListenerError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public var description: String { message }
}

/// Binds or adopts a listener and serves the credentials endpoint on it.
public enum CredentialsListener {
    /// One connection's handlers, in order.
    static func addHandlers(
        to sync: ChannelPipeline.SynchronousOperations, listener: ListenerContext, activity: ConnectionActivity
    ) throws {
        // First, so that the hot path (a repeated request, answered there) passes no other handler.
        try sync.addHandler(ActivityTracker(activity: activity, counter: listener.connections))
        // A peer that pipelines requests without reading the answers stops being read once its answers fill
        // the outbound buffer, instead of growing credd's memory without bound.
        try sync.addHandler(BackPressureHandler())
        try sync.addHandler(ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes)))
        try sync.addHandler(ContainerCredentialsHandler(listener: listener, activity: activity))
    }

    public static func start(
        _ source: ListenerSource, group: any EventLoopGroup, context makeContext: @escaping @Sendable (ListenerContext.Transport) -> ListenerContext
    ) async throws -> any Channel {
        let transport: ListenerContext.Transport
        switch source {
        case .unixPath: transport = .unix
        case .tcp: transport = .tcp
        case .inherited(_, _, let t): transport = t
        }
        let listener = makeContext(transport)
        let server = listener.state.current.server
        let headerTimeout = TimeAmount.nanoseconds(Int64(timeInterval(server.headerTimeout) * 1e9))
        let idleTimeout = TimeAmount.nanoseconds(Int64(timeInterval(server.idleTimeout) * 1e9))
        var bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let activity = ConnectionActivity(headerTimeout: headerTimeout, idleTimeout: idleTimeout)
                    try addHandlers(to: channel.pipeline.syncOperations, listener: listener, activity: activity)
                }
            }
        if transport == .tcp {
            bootstrap = bootstrap.childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
        }
        do {
            switch source {
            case .inherited(let fd, _, _):
                return try await bootstrap.withBoundSocket(fd).get()
            case .tcp(let address):
                return try await bootstrap.bind(host: address.host, port: address.port).get()
            case .unixPath(let u):
                let dir = (u.path as NSString).deletingLastPathComponent
                try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
                let channel = try await bootstrap.bind(unixDomainSocketPath: u.path, cleanupExistingSocketFile: true).get()
                var gid: gid_t = getgid()
                if let group = u.group {
                    if let g = UInt32(group) {
                        gid = g
                    } else if let gr = getgrnam(group) {
                        gid = gr.pointee.gr_gid
                    } else {
                        try? await channel.close()
                        throw ListenerError(message: "listen.unix.group: no group named \"\(group)\" on this system; create it or give a gid.")
                    }
                    guard chown(u.path, getuid(), gid) == 0 else {
                        try? await channel.close()
                        throw ListenerError(message: "cannot give \(u.path) to group \(group): \(String(cString: strerror(errno))).")
                    }
                }
                guard chmod(u.path, mode_t(u.mode)) == 0 else {
                    try? await channel.close()
                    throw ListenerError(message: "cannot set mode \(String(u.mode, radix: 8)) on \(u.path): \(String(cString: strerror(errno))).")
                }
                return channel
            }
        } catch let e as ListenerError {
            throw e
        } catch {
            throw ListenerError(message: "cannot listen on \(source): \(error). Is another credd (or another program) already using it?")
        }
    }
}
