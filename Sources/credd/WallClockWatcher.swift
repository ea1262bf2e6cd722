// Reports changes of the wall clock (settimeofday, an NTP step, a resume from suspend) with no periodic wake-up.
//
// A timerfd on CLOCK_REALTIME armed far in the future with TFD_TIMER_CANCEL_ON_SET never expires; the kernel
// cancels it whenever the wall clock is set, and the blocked read(2) then fails with ECANCELED. A resume from
// suspend counts as a change (the kernel notifies timerfds on resume).
import CCreddLinux
import Foundation

#if canImport(Glibc)
import Glibc
#endif

enum WallClockWatcher {
    /// Starts a thread blocked on the timer; `changed` runs on it after each change of the wall clock.
    /// Returns false, starting nothing, when the kernel refuses the timer.
    @discardableResult
    static func start(_ changed: @escaping @Sendable () -> Void) -> Bool {
        let fd = timerfd_create(CLOCK_REALTIME, Int32(CREDD_TFD_CLOEXEC))
        guard fd >= 0 else { return false }
        guard arm(fd) else {
            close(fd)
            return false
        }
        let thread = Thread {
            // Named from inside: a Linux thread starts with its creator's name.
            credd_name_this_thread("credd-clock")
            defer { close(fd) }
            var expirations: UInt64 = 0
            var lastExpiry: timespec?
            while true {
                let n = read(fd, &expirations, MemoryLayout<UInt64>.size)
                if n < 0 {
                    switch errno {
                    case EINTR: continue
                    case ECANCELED:
                        changed()
                        guard arm(fd) else { return }
                    default: return
                    }
                } else if n == MemoryLayout<UInt64>.size {
                    // The far-future time passed: only a clock set absurdly far ahead (or a faked clock) does
                    // that. Re-arm once; a timer that keeps expiring is given up rather than spun on.
                    var now = timespec()
                    clock_gettime(CLOCK_MONOTONIC, &now)
                    if let last = lastExpiry, now.tv_sec - last.tv_sec < 1 { return }
                    lastExpiry = now
                    changed()
                    guard arm(fd) else { return }
                } else {
                    return
                }
            }
        }
        thread.start()
        return true
    }

    /// Arms the timer at an absolute wall-clock time thousands of years ahead, cancelled on any clock set.
    private static func arm(_ fd: Int32) -> Bool {
        var spec = itimerspec()
        spec.it_value.tv_sec = 1 << 40
        return timerfd_settime(fd, Int32(CREDD_TFD_TIMER_ABSTIME | CREDD_TFD_TIMER_CANCEL_ON_SET), &spec, nil) == 0
    }
}
