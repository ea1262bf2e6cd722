// The errors CreddSystemd reports, each a full sentence saying what failed, where, and what to do.
#if canImport(Glibc)
import Glibc
#endif

public enum SystemdError: Error, Equatable, Sendable, CustomStringConvertible {
    /// `sd_listen_fds_with_names()` rejected the LISTEN_* environment.
    case listenFDsFailed(errno: Int32)
    /// A passed fd named like a listener (`unix`, `tcp`) is not a listening stream socket.
    case notAListeningSocket(name: String, fd: Int32)
    /// Sending a notification to the service manager failed.
    case notifyFailed(what: String, errno: Int32)
    /// An fd-store name systemd would refuse.
    case invalidFDName(String)

    public var description: String {
        switch self {
        case .listenFDsFailed(let code):
            return "credd could not read the sockets passed by systemd (LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES): "
                + "\(errnoText(code)); check the socket units, or start credd without socket activation."
        case .notAListeningSocket(let name, let fd):
            return "The file descriptor \(fd) that systemd passed as '\(name)' is not a listening stream socket; "
                + "check that the socket unit sets FileDescriptorName=\(name) only on a ListenStream= socket."
        case .notifyFailed(let what, let code):
            return "credd could not send \(what) to systemd over NOTIFY_SOCKET: \(errnoText(code)); "
                + "check that the unit has NotifyAccess=main and that systemd is still running."
        case .invalidFDName(let name):
            return "The fd-store name '\(name)' is not valid: systemd accepts 1 to 255 printable ASCII characters "
                + "without ':'; use a name such as 'credd-state'."
        }
    }
}

func errnoText(_ code: Int32) -> String {
    let positive = code < 0 ? -code : code
    return "\(String(cString: strerror(positive))) (errno \(positive))"
}
