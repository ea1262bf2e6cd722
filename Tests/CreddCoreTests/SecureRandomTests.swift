// SecureRandom: the system CSPRNG (token files, temporary names, DPoP jti).
import CreddCrypto
import Testing

@Suite struct SecureRandomTests {
    @Test(arguments: [0, 1, 6, 7, 8, 9, 16, 32, 33, 1000])
    func givesExactlyTheBytesAskedFor(count: Int) {
        #expect(SecureRandom.bytes(count).count == count)
    }

    @Test func successiveDrawsDifferAndLookRandom() {
        let a = SecureRandom.bytes(32), b = SecureRandom.bytes(32)
        #expect(a != b)
        // 4096 bytes: every value of a byte appears (the chance that one does not is about 256 * e^-16).
        #expect(Set(SecureRandom.bytes(4096)).count == 256)
        let uuid = SecureRandom.uuid4()
        #expect(uuid.count == 36 && Array(uuid)[14] == "4")
    }
}
