// Code that ran once should not stay counted in credd's memory: after start-up and after each refresh, credd
// unmaps the clean pages of code and read-only data it holds (its own binary's and its libraries'); the
// kernel maps them again, from the page cache, when they are next used.
#if os(Linux)
import CreddCore
import Glibc
import NIOConcurrencyHelpers

/// Releases this process's mappings of read-only file pages: the code and constant data of credd's binary
/// and of the shared libraries. Start-up (argument parsing, the YAML config, the first fetches, TLS set-up)
/// runs code that never runs again, and the kernel maps file pages around every page fault (64 KiB), so
/// without this a serving credd would count about 12 MB of its binary as resident, of which the answer path
/// uses a fraction (bench/README.md, benchmark 2).
///
/// Only pages that are exactly the file's contents are released: those of mappings that are private and
/// not writable, and among them only the pages the page map reports as file pages, not the private copies
/// the dynamic loader made when it applied relocations (RELRO), whose contents exist nowhere else.
/// `MADV_DONTNEED` on such a page drops the mapping only; the next access maps the same page-cache page
/// again (a minor fault, no I/O while the page is cached). The pages stay in the page cache, so this lowers
/// credd's RSS, the memory that is credd's alone, not the page cache a cgroup is charged for.
public enum ReadOnlyPages {
    public struct Released: Sendable, Equatable {
        /// Pages released, and the mappings they were in.
        public var pages: Int
        public var mappings: Int
    }

    /// Releases the pages; nil if /proc/self/maps or /proc/self/pagemap cannot be read (no /proc).
    @discardableResult
    public static func release() -> Released? {
        guard case .success(let text) = LoginFileIO.read("/proc/self/maps") else { return nil }
        let maps = [UInt8](text)
        let pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC)
        guard pagemap >= 0 else { return nil }
        defer { close(pagemap) }
        let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
        var released = Released(pages: 0, mappings: 0)
        var entries = [UInt64](repeating: 0, count: 4096)
        for line in maps.split(separator: UInt8(ascii: "\n")) {
            guard let mapping = Mapping(line), mapping.isReadOnlyPrivateFile else { continue }
            var pagesHere = 0
            var page = mapping.start
            while page < mapping.end {
                let count = min(entries.count, (mapping.end - page) / pageSize)
                let wanted = count * 8
                let got = entries.withUnsafeMutableBytes { pread(pagemap, $0.baseAddress, wanted, off_t(page / pageSize) * 8) }
                guard got == wanted else { break }
                // Runs of present file pages (bit 63: present; bit 61: a file page, not a private copy).
                var i = 0
                while i < count {
                    guard isPresentFilePage(entries[i]) else { i += 1; continue }
                    var j = i + 1
                    while j < count && isPresentFilePage(entries[j]) { j += 1 }
                    let address = UnsafeMutableRawPointer(bitPattern: page + i * pageSize)
                    if madvise(address, (j - i) * pageSize, MADV_DONTNEED) == 0 { pagesHere += j - i }
                    i = j
                }
                page += count * pageSize
            }
            if pagesHere > 0 {
                released.pages += pagesHere
                released.mappings += 1
            }
        }
        return released
    }

    private static func isPresentFilePage(_ entry: UInt64) -> Bool {
        entry & (1 << 63) != 0 && entry & (1 << 61) != 0
    }

    /// One line of /proc/self/maps: `start-end perms offset dev inode path`.
    public struct Mapping: Sendable {
        public var start: Int
        public var end: Int
        public var permissions: [UInt8]
        public var inode: Int
        public var path: Substring

        public init?(_ line: ArraySlice<UInt8>) {
            let fields = line.split(separator: UInt8(ascii: " "), maxSplits: 5, omittingEmptySubsequences: true)
            guard fields.count >= 5 else { return nil }
            let range = fields[0].split(separator: UInt8(ascii: "-"))
            guard range.count == 2, let start = Int(String(decoding: range[0], as: UTF8.self), radix: 16),
                let end = Int(String(decoding: range[1], as: UTF8.self), radix: 16),
                let inode = Int(String(decoding: fields[4], as: UTF8.self))
            else { return nil }
            self.start = start
            self.end = end
            self.permissions = Array(fields[1])
            self.inode = inode
            let path = fields.count > 5 ? String(decoding: fields[5], as: UTF8.self) : ""
            self.path = Substring(path.drop { $0 == " " })
        }

        /// `r--p` or `r-xp` of a file (not `[vdso]` and the like, which have no inode).
        public var isReadOnlyPrivateFile: Bool {
            permissions.count == 4 && permissions[0] == UInt8(ascii: "r") && permissions[1] == UInt8(ascii: "-")
                && permissions[3] == UInt8(ascii: "p") && inode != 0 && path.hasPrefix("/")
        }
    }
}

/// Calls `ReadOnlyPages.release()` once a burst of work has ended: `quiet` after the last request, and at most
/// `atMost` after the first of a burst that does not end (a set polling IMDS every second). The wait lets what
/// a refresh leaves behind finish first: the upstream connection pools close their idle connections a second
/// after a refresh (UpstreamHTTP), and that code would otherwise stay resident until the next release. A
/// release costs about a millisecond; the answer path's pages are mapped again by the next requests (minor
/// faults).
public final class ReadOnlyPageReleaser: Sendable {
    private struct State {
        var waiting = false
        var firstRequest: ContinuousClock.Instant = .now
        var deadline: ContinuousClock.Instant = .now
    }
    private let state = NIOLockedValueBox(State())
    private let quiet: Duration
    private let atMost: Duration
    private let release: @Sendable () -> Void

    public init(
        quiet: Duration = .seconds(2), atMost: Duration = .seconds(10),
        release: @escaping @Sendable () -> Void = { ReadOnlyPages.release() }
    ) {
        self.quiet = quiet
        self.atMost = atMost
        self.release = release
    }

    public func request() {
        let now = ContinuousClock.now
        let startWaiting = state.withLockedValue { s -> Bool in
            if !s.waiting { s.firstRequest = now }
            s.deadline = min(now + quiet, s.firstRequest + atMost)
            defer { s.waiting = true }
            return !s.waiting
        }
        guard startWaiting else { return }
        Task {
            while true {
                let deadline = state.withLockedValue { $0.deadline }
                try? await Task.sleep(until: deadline, clock: .continuous)
                let due = state.withLockedValue { s -> Bool in
                    guard s.deadline <= ContinuousClock.now else { return false }  // a later request moved it
                    s.waiting = false
                    return true
                }
                if due { break }
            }
            release()
        }
    }
}
#endif
