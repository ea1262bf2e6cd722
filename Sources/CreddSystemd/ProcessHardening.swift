// Process-wide hardening credd applies to itself at start, whatever started it.
#if canImport(Glibc)
import Glibc
#endif
import CSystemd

public enum ProcessHardening {
    /// Makes the process non-dumpable (`prctl(PR_SET_DUMPABLE, 0)`): no core file with credentials in it,
    /// and other processes of the same user can no longer ptrace it or read its /proc/PID/mem and environ.
    /// Call first thing in `credd serve`.
    public static func setNonDumpable() throws(ProcessHardeningError) {
        if credd_set_dumpable(0) != 0 {
            throw ProcessHardeningError(operation: "prctl(PR_SET_DUMPABLE, 0)", errno: errno)
        }
    }

    /// Sets the flag back (tests restore the test runner with it).
    static func setDumpable(_ dumpable: Bool) {
        _ = credd_set_dumpable(dumpable ? 1 : 0)
    }

    /// Whether the process is currently dumpable (for tests and `credd status`).
    public static var isDumpable: Bool {
        credd_get_dumpable() > 0
    }
}

public struct ProcessHardeningError: Error, Equatable, Sendable, CustomStringConvertible {
    public var operation: String
    public var errno: Int32

    public var description: String {
        "credd could not harden its own process with \(operation): \(errnoText(errno)); "
            + "credd refuses to hold credentials in a process others could dump or trace."
    }
}
