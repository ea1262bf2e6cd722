// The only place that talks to OpenSSL's libcrypto: digests, HMAC, random bytes, P-256 ECDSA.
import COpenSSL

public enum CryptoError: Error, CustomStringConvertible, Sendable {
    case openssl(String)
    case invalidKey(String)

    public var description: String {
        switch self {
        case .openssl(let what): return "OpenSSL failed: \(what)"
        case .invalidKey(let why): return why
        }
    }
}

public enum Digest {
    /// SHA-256 of `data`.
    public static func sha256(_ data: some Collection<UInt8>) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        let bytes = Array(data)
        bytes.withUnsafeBufferPointer { input in
            out.withUnsafeMutableBufferPointer { output in
                _ = EVP_Digest(input.baseAddress, input.count, output.baseAddress, nil, EVP_sha256(), nil)
            }
        }
        return out
    }

    public static func sha256(_ string: String) -> [UInt8] { sha256(Array(string.utf8)) }

    /// HMAC-SHA256 of `data` under `key`.
    public static func hmacSHA256(key: some Collection<UInt8>, data: some Collection<UInt8>) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        var outLength: UInt32 = 32
        let k = Array(key)
        let d = Array(data)
        k.withUnsafeBufferPointer { kp in
            d.withUnsafeBufferPointer { dp in
                out.withUnsafeMutableBufferPointer { op in
                    _ = HMAC(EVP_sha256(), kp.baseAddress, Int32(kp.count), dp.baseAddress, dp.count, op.baseAddress, &outLength)
                }
            }
        }
        return out
    }
}

public enum SecureRandom {
    /// `count` bytes from the system's CSPRNG (`SystemRandomNumberGenerator`: getrandom(2) on Linux).
    /// Not OpenSSL's RAND_bytes: its first call initialises all of libcrypto (configuration, providers, every
    /// algorithm table), megabytes of resident memory that a credd serving IMDS credentials never needs.
    public static func bytes(_ count: Int) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        var out = [UInt8]()
        out.reserveCapacity(count + 7)
        while out.count < count {
            withUnsafeBytes(of: generator.next() as UInt64) { out.append(contentsOf: $0) }
        }
        out.removeLast(out.count - count)
        return out
    }

    /// A random RFC 4122 version 4 UUID, lowercase.
    public static func uuid4() -> String {
        var b = bytes(16)
        b[6] = (b[6] & 0x0F) | 0x40
        b[8] = (b[8] & 0x3F) | 0x80
        let hex = Hex.encode(b)
        let h = Array(hex)
        return String(h[0..<8]) + "-" + String(h[8..<12]) + "-" + String(h[12..<16]) + "-" + String(h[16..<20]) + "-" + String(h[20..<32])
    }
}

public enum Hex {
    public static func encode(_ bytes: some Sequence<UInt8>) -> String {
        let digits: [Character] = Array("0123456789abcdef")
        var s = ""
        for b in bytes {
            s.append(digits[Int(b >> 4)])
            s.append(digits[Int(b & 0x0F)])
        }
        return s
    }
}

public enum Base64URL {
    /// base64url without padding (RFC 4648 §5), as JWS and tokens use it.
    public static func encode(_ bytes: some Sequence<UInt8>) -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
        let input = Array(bytes)
        var out = [UInt8]()
        out.reserveCapacity((input.count + 2) / 3 * 4)
        var i = 0
        while i + 3 <= input.count {
            let n = UInt32(input[i]) << 16 | UInt32(input[i + 1]) << 8 | UInt32(input[i + 2])
            out.append(alphabet[Int(n >> 18 & 63)])
            out.append(alphabet[Int(n >> 12 & 63)])
            out.append(alphabet[Int(n >> 6 & 63)])
            out.append(alphabet[Int(n & 63)])
            i += 3
        }
        let rest = input.count - i
        if rest == 1 {
            let n = UInt32(input[i]) << 16
            out.append(alphabet[Int(n >> 18 & 63)])
            out.append(alphabet[Int(n >> 12 & 63)])
        } else if rest == 2 {
            let n = UInt32(input[i]) << 16 | UInt32(input[i + 1]) << 8
            out.append(alphabet[Int(n >> 18 & 63)])
            out.append(alphabet[Int(n >> 12 & 63)])
            out.append(alphabet[Int(n >> 6 & 63)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// Compares two byte strings in time that depends only on their lengths.
public func constantTimeEquals(_ a: some Collection<UInt8>, _ b: some Collection<UInt8>) -> Bool {
    let x = Array(a), y = Array(b)
    if x.count != y.count { return false }
    return x.withUnsafeBytes { xp in
        y.withUnsafeBytes { yp in CRYPTO_memcmp(xp.baseAddress, yp.baseAddress, x.count) == 0 }
    }
}

/// A P-256 private key loaded from PEM (SEC1 "EC PRIVATE KEY" or PKCS#8), signing ES256.
public final class P256SigningKey: @unchecked Sendable {
    private let pkey: OpaquePointer
    /// The public point's affine coordinates, 32 bytes each (JWK `x`, `y`).
    public let x: [UInt8]
    public let y: [UInt8]

    public init(pem: String) throws {
        let bytes = Array(pem.utf8)
        guard let bio = bytes.withUnsafeBufferPointer({ BIO_new_mem_buf($0.baseAddress, Int32($0.count)) }) else {
            throw CryptoError.openssl("BIO_new_mem_buf")
        }
        defer { BIO_free(bio) }
        guard let key = PEM_read_bio_PrivateKey(bio, nil, nil, nil) else {
            ERR_clear_error()
            throw CryptoError.invalidKey("the key is not a readable PEM private key")
        }
        guard EVP_PKEY_get_base_id(key) == EVP_PKEY_EC else {
            EVP_PKEY_free(key)
            throw CryptoError.invalidKey("the key is not an EC key (P-256 is required)")
        }
        var nameBuf = [CChar](repeating: 0, count: 64)
        var nameLen = 0
        let gotName = EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, &nameBuf, nameBuf.count, &nameLen)
        let curve = gotName == 1 ? String(cString: nameBuf) : "?"
        guard curve == "prime256v1" || curve == "P-256" else {
            EVP_PKEY_free(key)
            throw CryptoError.invalidKey("the key is on curve \(curve), but P-256 is required")
        }
        var pub = [UInt8](repeating: 0, count: 65)
        var pubLen = 0
        let gotPub = EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_PUB_KEY, &pub, pub.count, &pubLen)
        guard gotPub == 1, pubLen == 65, pub[0] == 4 else {
            EVP_PKEY_free(key)
            ERR_clear_error()
            throw CryptoError.invalidKey("the key's public point could not be read")
        }
        self.pkey = key
        self.x = Array(pub[1...32])
        self.y = Array(pub[33...64])
    }

    /// A fresh key, for tests.
    public static func generate() throws -> P256SigningKey {
        guard let key = credd_EVP_EC_gen_p256() else { throw CryptoError.openssl("EVP_EC_gen") }
        defer { EVP_PKEY_free(key) }
        guard let bio = BIO_new(BIO_s_mem()) else { throw CryptoError.openssl("BIO_new") }
        defer { BIO_free(bio) }
        guard PEM_write_bio_PrivateKey_traditional(bio, key, nil, nil, 0, nil, nil) == 1 else {
            throw CryptoError.openssl("PEM_write_bio_PrivateKey_traditional")
        }
        var data: UnsafeMutablePointer<CChar>?
        let len = credd_BIO_get_mem_data(bio, &data)
        guard let data, len > 0 else { throw CryptoError.openssl("BIO_get_mem_data") }
        let pem = String(decoding: UnsafeRawBufferPointer(start: data, count: len), as: UTF8.self)
        return try P256SigningKey(pem: pem)
    }

    deinit { EVP_PKEY_free(pkey) }

    /// ES256: ECDSA P-256 over SHA-256 of `message`, as the raw 64-byte r‖s (JWS), not DER.
    public func signES256(_ message: some Collection<UInt8>) throws -> [UInt8] {
        guard let ctx = EVP_MD_CTX_new() else { throw CryptoError.openssl("EVP_MD_CTX_new") }
        defer { EVP_MD_CTX_free(ctx) }
        guard EVP_DigestSignInit(ctx, nil, EVP_sha256(), nil, pkey) == 1 else { throw CryptoError.openssl("EVP_DigestSignInit") }
        let msg = Array(message)
        var sigLen = 0
        guard msg.withUnsafeBufferPointer({ EVP_DigestSign(ctx, nil, &sigLen, $0.baseAddress, $0.count) }) == 1 else {
            throw CryptoError.openssl("EVP_DigestSign (length)")
        }
        var der = [UInt8](repeating: 0, count: sigLen)
        guard msg.withUnsafeBufferPointer({ mp in
            der.withUnsafeMutableBufferPointer { EVP_DigestSign(ctx, $0.baseAddress, &sigLen, mp.baseAddress, mp.count) }
        }) == 1 else { throw CryptoError.openssl("EVP_DigestSign") }
        // DER ECDSA-Sig-Value → r‖s, each left-padded to 32 bytes.
        let sig = der.withUnsafeBufferPointer { buf -> OpaquePointer? in
            var p: UnsafePointer<UInt8>? = buf.baseAddress
            return d2i_ECDSA_SIG(nil, &p, sigLen)
        }
        guard let sig else { throw CryptoError.openssl("d2i_ECDSA_SIG") }
        defer { ECDSA_SIG_free(sig) }
        var out = [UInt8](repeating: 0, count: 64)
        let r = ECDSA_SIG_get0_r(sig)
        let s = ECDSA_SIG_get0_s(sig)
        let ok = out.withUnsafeMutableBufferPointer { buf -> Bool in
            BN_bn2binpad(r, buf.baseAddress, 32) == 32 && BN_bn2binpad(s, buf.baseAddress! + 32, 32) == 32
        }
        guard ok else { throw CryptoError.openssl("BN_bn2binpad") }
        return out
    }
}
