// Notices at once when `aws login`, the CLI or an SDK rewrites the login cache or the AWS config (inotify).
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Watches the AWS config file and the `aws login` cache directory with inotify and yields whenever
/// either changes: a new `aws login` (new session, new file), a refresh by the CLI or an SDK (in-place
/// write or atomic rename), a deletion (`aws logout`), a permission fix (chmod). Directories that do not
/// exist yet are waited for (their nearest existing ancestor is watched), so `credd serve` started
/// before the first `aws login` still notices it.
///
/// Changes are coalesced: a burst of events becomes one element, and a consumer that is busy sees at
/// most one pending element. credd's own rewrite of the cache is reported too; reading a fresh file is
/// cheap and does not call Sign-In. The stream ends, and the watching thread exits, when the consuming
/// task is cancelled or stops iterating.
public enum LoginCacheWatcher {
    /// Changes of `files` (matched by exact name in their directories) and of any `*.json` file in
    /// `directories`.
    public static func changes(files: [String], directories: [String]) -> AsyncStream<Void> {
        let (stream, continuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        guard let watcher = InotifyWatcher(files: files, directories: directories, onChange: { continuation.yield(()) })
        else {
            continuation.finish()
            return stream
        }
        continuation.onTermination = { _ in watcher.stop() }
        let thread = Thread { watcher.run() }
        thread.name = "credd-login-watcher"
        thread.start()
        return stream
    }

    /// The watch targets for a login source: its AWS config file and its cache directory.
    public static func changes(for source: LoginSource) -> AsyncStream<Void> {
        changes(files: [source.watchedConfigFile], directories: [source.watchedCacheDirectory])
    }
}

/// The inotify loop, run on its own thread; `stop()` may be called from any thread.
final class InotifyWatcher: @unchecked Sendable {
    private struct Target {
        let directory: String
        /// nil: any `*.json` name in the directory.
        let name: String?
    }

    private let targets: [Target]
    private let onChange: @Sendable () -> Void
    private let inotifyFD: Int32
    /// A pipe: `stop()` writes a byte to [1], the loop polls [0].
    private let stopPipe: [Int32]
    /// Watch descriptor → (path, is it a target directory, is it an ancestor a target directory is waited in).
    private var watches: [Int32: (path: String, isTarget: Bool, isAncestor: Bool)] = [:]

    private static let targetMask: UInt32 =
        UInt32(IN_CLOSE_WRITE) | UInt32(IN_MOVED_TO) | UInt32(IN_MOVED_FROM) | UInt32(IN_DELETE) | UInt32(IN_ATTRIB)
        | UInt32(IN_DELETE_SELF) | UInt32(IN_MOVE_SELF)
    private static let ancestorMask: UInt32 =
        UInt32(IN_CREATE) | UInt32(IN_MOVED_TO) | UInt32(IN_ATTRIB) | UInt32(IN_DELETE_SELF) | UInt32(IN_MOVE_SELF)

    init?(files: [String], directories: [String], onChange: @escaping @Sendable () -> Void) {
        var targets: [Target] = []
        for file in files {
            let url = URL(fileURLWithPath: file).standardizedFileURL
            targets.append(Target(directory: url.deletingLastPathComponent().path, name: url.lastPathComponent))
        }
        for directory in directories {
            targets.append(Target(directory: URL(fileURLWithPath: directory).standardizedFileURL.path, name: nil))
        }
        self.targets = targets
        self.onChange = onChange
        let fd = inotify_init1(Int32(IN_CLOEXEC) | Int32(IN_NONBLOCK))
        guard fd >= 0 else { return nil }
        var ends: [Int32] = [-1, -1]
        guard pipe(&ends) == 0 else {
            close(fd)
            return nil
        }
        for end in ends { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        self.inotifyFD = fd
        self.stopPipe = ends
    }

    // The write end outlives `run()`, so a late `stop()` never writes into a reused descriptor.
    deinit { close(stopPipe[1]) }

    func stop() {
        var one: UInt8 = 1
        _ = write(stopPipe[1], &one, 1)
    }

    func run() {
        defer {
            close(inotifyFD)
            close(stopPipe[0])
        }
        setUpWatches()
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            var fds = [
                pollfd(fd: inotifyFD, events: Int16(POLLIN), revents: 0),
                pollfd(fd: stopPipe[0], events: Int16(POLLIN), revents: 0),
            ]
            let ready = poll(&fds, 2, -1)
            if ready < 0 {
                if errno == EINTR { continue }
                return
            }
            if fds[1].revents != 0 { return }
            guard fds[0].revents != 0 else { continue }
            var changed = false
            var rewatch = false
            while true {
                let n = buffer.withUnsafeMutableBytes { read(inotifyFD, $0.baseAddress, $0.count) }
                if n <= 0 { break }
                var offset = 0
                buffer.withUnsafeBytes { raw in
                    // struct inotify_event { int wd; uint32_t mask, cookie, len; char name[len]; }
                    while offset + 16 <= n {
                        let wd = raw.loadUnaligned(fromByteOffset: offset, as: Int32.self)
                        let mask = raw.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self)
                        let length = Int(raw.loadUnaligned(fromByteOffset: offset + 12, as: UInt32.self))
                        let nameBytes = raw[(offset + 16)..<min(offset + 16 + length, n)].prefix { $0 != 0 }
                        let name = String(decoding: nameBytes, as: UTF8.self)
                        offset += 16 + length
                        let (c, r) = classify(wd: wd, mask: mask, name: name)
                        changed = changed || c
                        rewatch = rewatch || r
                    }
                }
            }
            if rewatch {
                // A waited-for directory may exist now (and its file may already be written), or a watched
                // directory went away: start over and report, so the consumer re-reads.
                setUpWatches()
                changed = true
            }
            if changed { onChange() }
        }
    }

    /// (a target changed, the watches must be rebuilt)
    private func classify(wd: Int32, mask: UInt32, name: String) -> (Bool, Bool) {
        if mask & UInt32(IN_Q_OVERFLOW) != 0 { return (true, true) }
        guard let watch = watches[wd] else { return (false, false) }
        if mask & (UInt32(IN_IGNORED) | UInt32(IN_DELETE_SELF) | UInt32(IN_MOVE_SELF)) != 0 { return (true, true) }
        var interesting = false
        if watch.isTarget {
            interesting = targets.contains { target in
                guard target.directory == watch.path else { return false }
                if let wanted = target.name { return name == wanted }
                return name.hasSuffix(".json") && !name.hasPrefix(".")
            }
        }
        let appeared = watch.isAncestor && mask & (UInt32(IN_CREATE) | UInt32(IN_MOVED_TO) | UInt32(IN_ATTRIB)) != 0
        return (interesting, appeared)
    }

    private func setUpWatches() {
        for wd in watches.keys { inotify_rm_watch(inotifyFD, wd) }
        watches.removeAll()
        // One watch per path (inotify keeps one per inode): a path can be a target and an ancestor at once.
        var plan: [String: (mask: UInt32, isTarget: Bool, isAncestor: Bool)] = [:]
        for directory in Set(targets.map(\.directory)) {
            if isDirectory(directory) {
                let entry = plan[directory] ?? (0, false, false)
                plan[directory] = (entry.mask | Self.targetMask, true, entry.isAncestor)
                continue
            }
            // Wait for the directory to appear: watch the nearest existing ancestor.
            var ancestor = (directory as NSString).deletingLastPathComponent
            while !ancestor.isEmpty, !isDirectory(ancestor), ancestor != "/" {
                ancestor = (ancestor as NSString).deletingLastPathComponent
            }
            guard !ancestor.isEmpty else { continue }
            let entry = plan[ancestor] ?? (0, false, false)
            plan[ancestor] = (entry.mask | Self.ancestorMask, entry.isTarget, true)
        }
        for (path, entry) in plan {
            let wd = inotify_add_watch(inotifyFD, path, entry.mask)
            if wd >= 0 { watches[wd] = (path, entry.isTarget, entry.isAncestor) }
        }
    }

    private func isDirectory(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
    }
}
