// sd_notify messages to the service manager: readiness, reload, stop, status, watchdog and the fd store.
#if canImport(Glibc)
import Glibc
#endif
import CSystemd

/// Tells systemd what credd is doing (`Type=notify`, `NotifyAccess=main`).
///
/// Every call is a no-op returning `false` when NOTIFY_SOCKET is unset (credd not started by systemd);
/// `true` means the message was sent. Messages are sent from this process itself: systemd drops
/// messages from other processes under `NotifyAccess=main`.
public struct SystemdNotifier: Sendable {
    /// Microseconds on CLOCK_MONOTONIC, as systemd wants in `MONOTONIC_USEC=`; injected for tests.
    let monotonicMicroseconds: @Sendable () -> UInt64

    public init(monotonicMicroseconds: @escaping @Sendable () -> UInt64 = SystemdNotifier.clockMonotonicMicroseconds) {
        self.monotonicMicroseconds = monotonicMicroseconds
    }

    /// True when systemd (or a test playing it) gave credd a notification socket.
    public var isEnabled: Bool { getenv("NOTIFY_SOCKET") != nil }

    /// `READY=1`: every listener is accepting; also ends a reload.
    @discardableResult
    public func ready() throws(SystemdError) -> Bool {
        try send("READY=1", what: "READY=1")
    }

    /// `RELOADING=1` with `MONOTONIC_USEC=`, sent on SIGHUP before the config is read again; follow with `ready()`.
    @discardableResult
    public func reloading() throws(SystemdError) -> Bool {
        try send("RELOADING=1\nMONOTONIC_USEC=\(monotonicMicroseconds())", what: "RELOADING=1")
    }

    /// `STOPPING=1`, sent once graceful shutdown begins.
    @discardableResult
    public func stopping() throws(SystemdError) -> Bool {
        try send("STOPPING=1", what: "STOPPING=1")
    }

    /// `STATUS=`: the line `systemctl status` shows. Newlines would end the assignment, so they are
    /// turned into "; " (one segment per credential set). Never pass a secret.
    @discardableResult
    public func status(_ text: String) throws(SystemdError) -> Bool {
        let oneLine = text.split(whereSeparator: \.isNewline).joined(separator: "; ")
        return try send("STATUS=\(oneLine)", what: "STATUS=")
    }

    /// `WATCHDOG=1`: call from the event loop itself, so a stuck loop stops the pings and systemd kills it.
    @discardableResult
    public func watchdogPing() throws(SystemdError) -> Bool {
        try send("WATCHDOG=1", what: "WATCHDOG=1")
    }

    /// The watchdog timeout systemd set (`WatchdogSec=` → WATCHDOG_USEC), or nil when there is none or it is
    /// meant for another process (WATCHDOG_PID). Ping at a quarter of it: well inside, with room for a slow tick.
    public var watchdogInterval: Duration? {
        var usec: UInt64 = 0
        guard sd_watchdog_enabled(0, &usec) > 0, usec > 0 else { return nil }
        return .microseconds(Int64(clamping: usec))
    }

    /// Hands `fd` to systemd's fd store under `name` (`FDSTORE=1`, `FDNAME=`); systemd passes it back at the
    /// next start (SystemdListeners.stored) while the service is restarted rather than stopped. The caller
    /// still owns and closes its own copy. systemd keeps a second fd under the same name rather than replacing
    /// the first: call `removeFD(name:)` first to replace. Needs `FileDescriptorStoreMax=` in the unit.
    @discardableResult
    public func storeFD(_ fd: Int32, name: String) throws(SystemdError) -> Bool {
        try Self.validate(name: name)
        guard isEnabled else { return false }
        var fds: [Int32] = [fd]
        let result = "FDSTORE=1\nFDNAME=\(name)".withCString { message in
            sd_pid_notify_with_fds(0, 0, message, &fds, 1)
        }
        if result < 0 { throw .notifyFailed(what: "FDSTORE=1 for '\(name)'", errno: -result) }
        return result > 0
    }

    /// Removes every fd-store entry named `name` (`FDSTOREREMOVE=1`).
    @discardableResult
    public func removeFD(name: String) throws(SystemdError) -> Bool {
        try Self.validate(name: name)
        return try send("FDSTOREREMOVE=1\nFDNAME=\(name)", what: "FDSTOREREMOVE=1 for '\(name)'")
    }

    /// Replaces the fd-store entry `name` with `fd`: remove, then store.
    @discardableResult
    public func replaceFD(_ fd: Int32, name: String) throws(SystemdError) -> Bool {
        try removeFD(name: name)
        return try storeFD(fd, name: name)
    }

    private func send(_ message: String, what: String) throws(SystemdError) -> Bool {
        guard isEnabled else { return false }
        let result = sd_notify(0, message)
        if result < 0 { throw .notifyFailed(what: what, errno: -result) }
        return result > 0
    }

    /// systemd's rules for FDNAME= (fdname_is_valid): 1–255 printable ASCII characters, no ':'.
    static func validate(name: String) throws(SystemdError) {
        let bytes = Array(name.utf8)
        guard !bytes.isEmpty, bytes.count <= 255,
            bytes.allSatisfy({ $0 >= 0x20 && $0 < 0x7F && $0 != UInt8(ascii: ":") })
        else { throw .invalidFDName(name) }
    }

    @Sendable
    public static func clockMonotonicMicroseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000 + UInt64(now.tv_nsec) / 1_000
    }
}
