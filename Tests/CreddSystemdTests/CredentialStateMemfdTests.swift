// Sealed memfds: round trip, seals enforced, malformed stores refused; and the non-dumpable flag.
#if canImport(Glibc)
import Glibc
#endif
import Testing

@testable import CreddSystemd

@Suite struct CredentialStateMemfdTests {
    @Test(arguments: [0, 1, 4096, 70_000])
    func bytesRoundTripThroughASealedMemfd(size: Int) throws {
        let payload = (0..<size).map { UInt8(truncatingIfNeeded: $0 * 31) }
        let fd = try CredentialStateMemfd.create(payload)
        defer { close(fd) }
        #expect(try CredentialStateMemfd.read(fd: fd) == payload)
        // A second read starts again at offset 0.
        #expect(try CredentialStateMemfd.read(fd: fd) == payload)
        #expect(fcntl(fd, F_GETFD) & FD_CLOEXEC != 0)
    }

    @Test func aSealedMemfdCannotBeChanged() throws {
        let fd = try CredentialStateMemfd.create(Array("{\"sets\":{}}".utf8))
        defer { close(fd) }
        let more: [UInt8] = [1, 2, 3]
        #expect(more.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) } == -1)
        #expect(errno == EPERM)
        #expect(ftruncate(fd, 0) == -1)
    }

    @Test func aMemfdMissingASealIsRefused() throws {
        let allButWrite = CredentialStateMemfd.requiredSeals & ~Int32(0x0008)
        let fd = try CredentialStateMemfd.create([1, 2], name: "credd-state", seals: allButWrite)
        defer { close(fd) }
        #expect(throws: CredentialStateError.notSealed(seals: allButWrite)) {
            try CredentialStateMemfd.read(fd: fd)
        }
        let unsealed = try CredentialStateMemfd.create([1, 2], name: "credd-state", seals: 0)
        defer { close(unsealed) }
        #expect(throws: CredentialStateError.notSealed(seals: 0)) {
            try CredentialStateMemfd.read(fd: unsealed)
        }
    }

    @Test func somethingThatIsNotAMemfdIsRefused() throws {
        var ends: [Int32] = [0, 0]
        #expect(pipe(&ends) == 0)
        defer { ends.forEach { close($0) } }
        #expect(throws: CredentialStateError.notSealed(seals: nil)) {
            try CredentialStateMemfd.read(fd: ends[0])
        }
    }

    @Test func anOversizedStoreIsRefused() throws {
        let fd = try CredentialStateMemfd.create([UInt8](repeating: 7, count: 100))
        defer { close(fd) }
        #expect(throws: CredentialStateError.tooLarge(size: 100, maximum: 99)) {
            try CredentialStateMemfd.read(fd: fd, maximumSize: 99)
        }
    }

    @Test func errorsAreSentencesThatSayWhatHappensNext() {
        let text = CredentialStateError.notSealed(seals: 3).description
        #expect(text.contains("seals 0x3"))
        #expect(text.hasSuffix("fetched again."))
    }

    @Test func theProcessBecomesNonDumpable() throws {
        #expect(ProcessHardening.isDumpable)
        try ProcessHardening.setNonDumpable()
        #expect(!ProcessHardening.isDumpable)
        ProcessHardening.setDumpable(true)
        #expect(ProcessHardening.isDumpable)
    }
}
