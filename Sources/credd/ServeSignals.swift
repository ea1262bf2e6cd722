// SIGTERM, SIGINT and SIGHUP for `credd serve`: blocked in every thread and taken by one thread waiting in sigwaitinfo.
//
// No signal handler and no libdispatch signal source (swift-service-lifecycle's UnixSignals uses one, and with it
// libdispatch's worker pool and its 1 Hz monitor): the waiting thread costs nothing until a signal arrives.
import CCreddLinux
import Foundation

#if canImport(Glibc)
import Glibc
#endif

enum ServeSignals {
    static let taken: [Int32] = [SIGTERM, SIGINT, SIGHUP]

    /// Blocks the signals in the calling thread. Call first thing in main, before any other thread exists:
    /// threads inherit the mask, so none of them can take a signal with its default action (exit) while the
    /// waiting thread is not yet running; a signal that arrives early stays pending until it is.
    static func blockInEveryThread() {
        var set = signalSet()
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }

    /// Starts the thread that waits for the signals; `handler` runs on it, once per signal, in arrival order.
    static func startWaiting(_ handler: @escaping @Sendable (Int32) -> Void) {
        let thread = Thread {
            // Named from inside: a Linux thread starts with its creator's name.
            credd_name_this_thread("credd-signals")
            var set = signalSet()
            while true {
                var info = siginfo_t()
                let signal = sigwaitinfo(&set, &info)
                if signal < 0 {
                    if errno == EINTR { continue }
                    return
                }
                handler(signal)
            }
        }
        thread.start()
    }

    private static func signalSet() -> sigset_t {
        var set = sigset_t()
        sigemptyset(&set)
        for signal in taken { sigaddset(&set, signal) }
        return set
    }
}
