// The sockets and fd-store entries systemd passes at start (LISTEN_FDS), selected by FileDescriptorName=.
#if canImport(Glibc)
import Glibc
#endif
import CSystemd

/// One file descriptor systemd passed, with the name from `FileDescriptorName=` or `FDNAME=`.
public struct PassedFD: Equatable, Sendable, CustomStringConvertible {
    public var name: String
    public var fd: Int32

    public init(name: String, fd: Int32) {
        self.name = name
        self.fd = fd
    }

    public var description: String { "\(name)=fd \(fd)" }
}

/// What systemd handed credd at start: listening sockets, and entries of the fd store kept across restarts.
///
/// The order of fds from several socket units is not stable across boots, so callers select by name:
/// `unix` for the Unix socket, `tcp` for each loopback TCP socket (there may be several).
public struct SystemdListeners: Equatable, Sendable {
    public static let unixName = "unix"
    public static let tcpName = "tcp"
    /// Names that start with this prefix are fd-store entries credd wrote itself (`credd-state`, …).
    public static let storePrefix = "credd-state"

    /// Listening sockets, in the order systemd passed them.
    public var sockets: [PassedFD]
    /// fd-store entries (sealed memfds from an earlier run), in the order systemd passed them.
    public var stored: [PassedFD]

    public init(sockets: [PassedFD] = [], stored: [PassedFD] = []) {
        self.sockets = sockets
        self.stored = stored
    }

    /// True when systemd passed no listening socket: the caller binds from its config instead.
    public var isEmpty: Bool { sockets.isEmpty }

    /// The fds of the listening sockets named `name`.
    public func sockets(named name: String) -> [Int32] {
        sockets.filter { $0.name == name }.map(\.fd)
    }

    /// The Unix listening socket, if one was passed (the first, should there be several).
    public var unix: Int32? { sockets(named: Self.unixName).first }

    /// Every TCP listening socket passed (one per `credd-tcp.socket` ListenStream= line).
    public var tcp: [Int32] { sockets(named: Self.tcpName) }

    /// Sockets with a name credd does not know: the caller warns about them and leaves them alone.
    public var unknownSockets: [PassedFD] {
        sockets.filter { $0.name != Self.unixName && $0.name != Self.tcpName }
    }

    /// The fd-store entry named `name`, if systemd passed one back.
    public func stored(named name: String) -> Int32? {
        stored.first { $0.name == name }?.fd
    }

    /// Takes the fds systemd passed to this process (`sd_listen_fds_with_names`).
    ///
    /// Call once, early, before any other fd is opened. With `unsetEnvironment` (the default) LISTEN_PID,
    /// LISTEN_FDS and LISTEN_FDNAMES are removed, so nothing credd starts inherits them. systemd marks the
    /// fds close-on-exec. Returns an empty value when credd was not socket-activated (the caller then binds
    /// the sockets from its config). fds whose name starts with `credd-state`, and fds that are not sockets,
    /// are fd-store entries; the rest are listening sockets. When no names were given (`LISTEN_FDNAMES`
    /// unset, so every name is `unknown`) a socket is named by its address family: `unix` or `tcp`.
    public static func take(unsetEnvironment: Bool = true) throws(SystemdError) -> SystemdListeners {
        var names: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = nil
        let count = sd_listen_fds_with_names(unsetEnvironment ? 1 : 0, &names)
        if count < 0 {
            throw .listenFDsFailed(errno: -count)
        }
        defer {
            if let names {
                var index = 0
                while let name = names[index] {
                    free(name)
                    index += 1
                }
                free(names)
            }
        }
        var passed: [PassedFD] = []
        for index in 0..<Int(count) {
            let fd = SD_LISTEN_FDS_START + Int32(index)
            let name = names?[index].map { String(cString: $0) } ?? "unknown"
            passed.append(PassedFD(name: name, fd: fd))
        }
        return try classify(passed)
    }

    /// Splits passed fds into listening sockets and fd-store entries (see `take`).
    static func classify(_ passed: [PassedFD]) throws(SystemdError) -> SystemdListeners {
        var result = SystemdListeners()
        for entry in passed {
            if entry.name.hasPrefix(storePrefix) {
                result.stored.append(entry)
                continue
            }
            let listening = sd_is_socket(entry.fd, AF_UNSPEC, Int32(SOCK_STREAM.rawValue), 1) > 0
            if entry.name == unixName || entry.name == tcpName {
                guard listening else { throw .notAListeningSocket(name: entry.name, fd: entry.fd) }
                result.sockets.append(entry)
            } else if !listening {
                // Not a socket we listen on: something the fd store kept under another name.
                result.stored.append(entry)
            } else if entry.name == "unknown" || entry.name.isEmpty {
                let family = sd_is_socket(entry.fd, AF_UNIX, Int32(SOCK_STREAM.rawValue), 1) > 0
                    ? unixName : tcpName
                result.sockets.append(PassedFD(name: family, fd: entry.fd))
            } else {
                result.sockets.append(entry)
            }
        }
        return result
    }
}
