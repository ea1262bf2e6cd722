#if os(Linux)
import CreddServer
import CreddTestSupport
import Foundation
import Glibc
import NIOConcurrencyHelpers
import Testing

/// `ReadOnlyPages.release()` runs on the whole test process: these mappings of a file of its own show what it
/// releases (clean pages of read-only private mappings) and what it must never touch (a private copy of a page,
/// as the loader makes for relocated data, and writable mappings).
@Suite(.serialized) struct ReadOnlyPagesTests {
    static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

    /// A file of `pages` pages, page i filled with the byte "A" + i.
    func makeFile(pages: Int) throws -> (path: String, fd: Int32) {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("credd-pages-\(UUID().uuidString)").path
        var bytes: [UInt8] = []
        for i in 0..<pages { bytes += [UInt8](repeating: UInt8(ascii: "A") + UInt8(i), count: Self.pageSize) }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let fd = open(path, O_RDONLY)
        try #require(fd >= 0)
        return (path, fd)
    }

    func map(_ fd: Int32, pages: Int, protection: Int32) throws -> UnsafeMutableRawPointer {
        let p = mmap(nil, pages * Self.pageSize, protection, MAP_PRIVATE, fd, 0)
        try #require(p != MAP_FAILED)
        return p!
    }

    /// Whether the page at `address` is mapped in this process (/proc/self/pagemap, bit 63).
    func isPresent(_ address: UnsafeRawPointer) -> Bool {
        let fd = open("/proc/self/pagemap", O_RDONLY)
        defer { close(fd) }
        var entry: UInt64 = 0
        let n = pread(fd, &entry, 8, off_t(UInt(bitPattern: address) / UInt(Self.pageSize)) * 8)
        return n == 8 && entry & (1 << 63) != 0
    }

    func touch(_ base: UnsafeMutableRawPointer, pages: Int) -> [UInt8] {
        (0..<pages).map { base.load(fromByteOffset: $0 * Self.pageSize + 7, as: UInt8.self) }
    }

    @Test func releasesCleanPagesOfReadOnlyMappingsAndTheyReadTheSameAfter() throws {
        let (path, fd) = try makeFile(pages: 4)
        defer { close(fd); unlink(path) }
        let base = try map(fd, pages: 4, protection: PROT_READ)
        defer { munmap(base, 4 * Self.pageSize) }
        #expect(touch(base, pages: 4) == Array("ABCD".utf8))
        #expect((0..<4).allSatisfy { isPresent(base + $0 * Self.pageSize) })

        let released = try #require(ReadOnlyPages.release())
        #expect(released.pages >= 4)
        #expect((0..<4).allSatisfy { !isPresent(base + $0 * Self.pageSize) })
        // Mapped again from the file on use, with the same contents.
        #expect(touch(base, pages: 4) == Array("ABCD".utf8))
    }

    @Test func keepsAPrivateCopyInAReadOnlyMapping() throws {
        // What the dynamic loader does for RELRO: a writable private mapping, written (a private copy of the
        // page, relocated), then made read-only. Its contents exist nowhere else: releasing it would put the
        // file's bytes back.
        let (path, fd) = try makeFile(pages: 2)
        defer { close(fd); unlink(path) }
        let base = try map(fd, pages: 2, protection: PROT_READ | PROT_WRITE)
        defer { munmap(base, 2 * Self.pageSize) }
        base.storeBytes(of: UInt8(ascii: "Z"), toByteOffset: 7, as: UInt8.self)
        #expect(mprotect(base, 2 * Self.pageSize, PROT_READ) == 0)
        #expect(touch(base, pages: 2) == Array("ZB".utf8))

        _ = try #require(ReadOnlyPages.release())
        #expect(isPresent(base))
        #expect(touch(base, pages: 2) == Array("ZB".utf8))
    }

    @Test func leavesWritableMappingsAlone() throws {
        // A page of a writable mapping that has not been written yet is still the file's page, but a write could
        // land between the look and the release: such mappings are never touched.
        let (path, fd) = try makeFile(pages: 2)
        defer { close(fd); unlink(path) }
        let base = try map(fd, pages: 2, protection: PROT_READ | PROT_WRITE)
        defer { munmap(base, 2 * Self.pageSize) }
        #expect(touch(base, pages: 2) == Array("AB".utf8))

        _ = try #require(ReadOnlyPages.release())
        #expect(isPresent(base) && isPresent(base + Self.pageSize))
    }

    @Test func readsMapsLines() {
        func mapping(_ line: String) -> ReadOnlyPages.Mapping? { ReadOnlyPages.Mapping(Array(line.utf8)[...]) }
        let code = mapping("5581c0a00000-5581c1e00000 r-xp 00a00000 fd:01 1048602                    /usr/bin/credd")
        #expect(code?.start == 0x5581_c0a0_0000 && code?.end == 0x5581_c1e0_0000)
        #expect(code?.isReadOnlyPrivateFile == true)
        #expect(mapping("7f0e1c000000-7f0e1c021000 r--p 00000000 fd:01 77 /opt/a dir/lib x.so")?.path == "/opt/a dir/lib x.so")
        #expect(mapping("7f0e1c000000-7f0e1c021000 rw-p 00000000 fd:01 77 /usr/lib/libc.so.6")?.isReadOnlyPrivateFile == false)
        #expect(mapping("7f0e1c000000-7f0e1c021000 r--s 00000000 00:01 77 /memfd:credd-state (deleted)")?.isReadOnlyPrivateFile == false)
        #expect(mapping("7ffd4b3f2000-7ffd4b3f4000 r-xp 00000000 00:00 0                          [vdso]")?.isReadOnlyPrivateFile == false)
        #expect(mapping("7f0e1c000000-7f0e1c021000 r--p 00000000 00:00 0 ")?.isReadOnlyPrivateFile == false)
        #expect(mapping("garbage") == nil)
    }

    @Test func aBurstOfRequestsIsOneReleaseAQuietIntervalAfterTheLast() async throws {
        let releases = NIOLockedValueBox<[ContinuousClock.Instant]>([])
        let releaser = ReadOnlyPageReleaser(quiet: .milliseconds(300), atMost: .seconds(60)) {
            releases.withLockedValue { $0.append(.now) }
        }
        releaser.request()
        try await Task.sleep(for: .milliseconds(100))
        releaser.request()
        let last = ContinuousClock.now
        releaser.request()
        #expect(releases.withLockedValue { $0 }.isEmpty)
        #expect(try await poll { releases.withLockedValue { $0.count } >= 1 })
        try await Task.sleep(for: .milliseconds(500))
        let times = releases.withLockedValue { $0 }
        #expect(times.count == 1)
        #expect(times[0] - last >= .milliseconds(300), "released before the burst was quiet")

        releaser.request()
        #expect(try await poll { releases.withLockedValue { $0.count } >= 2 })
    }

    @Test func aBurstThatDoesNotEndIsReleasedAfterAtMost() async throws {
        let releases = NIOLockedValueBox(0)
        let releaser = ReadOnlyPageReleaser(quiet: .milliseconds(300), atMost: .milliseconds(600)) {
            releases.withLockedValue { $0 += 1 }
        }
        // A request every 100 ms (a set polling fast): never quiet for 300 ms, released all the same.
        let started = ContinuousClock.now
        while releases.withLockedValue({ $0 }) == 0 && ContinuousClock.now - started < .seconds(20) {
            releaser.request()
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(releases.withLockedValue { $0 } >= 1)
    }
}
#endif
