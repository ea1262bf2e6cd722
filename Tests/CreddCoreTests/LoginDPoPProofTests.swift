// The DPoP proof's structure, and its signature checked independently by Python `cryptography`.
import CreddCore
import CreddCrypto
import Foundation
import Testing

/// Test-only keys (never used anywhere else): a P-256 key as `aws login` writes it (SEC1 PEM), and keys
/// of the wrong kind for the refusal cases.
enum LoginTestKeys {
    static let p256 = """
        -----BEGIN EC PRIVATE KEY-----
        MHcCAQEEIOmt3YPhnOpjrANIRXH40395zmqT8QpTycljCE+3YRH2oAoGCCqGSM49
        AwEHoUQDQgAEKLoFv+Mcb7/qv0WIO5y+IYtRI4dJWemwMfODT+NX8uO7XPtIOsZ4
        OJJh0LGinPVK2brnpqW2PfsJ4bBZqG0Lrw==
        -----END EC PRIVATE KEY-----

        """
    /// The JWK coordinates of `p256`, computed by Python `cryptography`.
    static let p256X = "KLoFv-Mcb7_qv0WIO5y-IYtRI4dJWemwMfODT-NX8uM"
    static let p256Y = "u1z7SDrGeDiSYdCxopz1Stm656altj37CeGwWahtC68"

    static let p384 = """
        -----BEGIN EC PRIVATE KEY-----
        MIGkAgEBBDAboWNvxbaa6kw2wmGo4D+2+kOIEB/vO5X+2/aJxIvZkdg0r8gUaaG7
        91x86AZqsaegBwYFK4EEACKhZANiAATMNRtYINs7xkjqLS6xeTkiIwQynLWjQ7x9
        cBfvfy4BZXSt+Fk/m124hvftTDFaX7ttL10llS6YakWoHOgZ3sh2dcFAEDUKardO
        zOcw1OVUY22tog3vCp4b/PHLLsJE5zg=
        -----END EC PRIVATE KEY-----

        """
    static let ed25519 = """
        -----BEGIN PRIVATE KEY-----
        MC4CAQAwBQYDK2VwBCIEIKaBqXnrbuPmucF0ysuv4jrOYeEAxqUgTxsAvsR9+Aqu
        -----END PRIVATE KEY-----

        """
}

func loginBase64URLDecode(_ text: Substring) -> Data? {
    var s = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
    while s.count % 4 != 0 { s += "=" }
    return Data(base64Encoded: s)
}

@Suite("aws login: DPoP proof")
struct LoginDPoPProofTests {
    static let url = "https://us-east-1.signin.aws.amazon.com/v1/token"
    static let now = Date(timeIntervalSince1970: 1_790_000_000.75)

    @Test("compact JWS: the header, payload and signature botocore builds")
    func structure() throws {
        let key = try P256SigningKey(pem: LoginTestKeys.p256)
        let proof = try DPoPProof.make(key: key, url: Self.url, now: Self.now)
        let parts = proof.split(separator: ".", omittingEmptySubsequences: false)
        try #require(parts.count == 3)
        for part in parts {
            #expect(!part.contains("=") && !part.contains("+") && !part.contains("/"), "base64url without padding")
        }
        let headerBytes = try #require(loginBase64URLDecode(parts[0]))
        let header = try #require(try JSONSerialization.jsonObject(with: headerBytes) as? [String: Any])
        #expect(Set(header.keys) == ["typ", "alg", "jwk"])
        #expect(header["typ"] as? String == "dpop+jwt")
        #expect(header["alg"] as? String == "ES256")
        let jwk = try #require(header["jwk"] as? [String: String])
        #expect(jwk == ["kty": "EC", "crv": "P-256", "x": LoginTestKeys.p256X, "y": LoginTestKeys.p256Y])
        #expect(!String(decoding: headerBytes, as: UTF8.self).contains(" "), "compact JSON")

        let payloadBytes = try #require(loginBase64URLDecode(parts[1]))
        let payloadText = String(decoding: payloadBytes, as: UTF8.self)
        let payload = try #require(try JSONSerialization.jsonObject(with: payloadBytes) as? [String: Any])
        #expect(Set(payload.keys) == ["htm", "htu", "iat", "jti"])
        #expect(payload["htm"] as? String == "POST")
        #expect(payload["htu"] as? String == Self.url)
        #expect(payloadText.contains("\"iat\":1790000000"), "iat: whole seconds of the injected now, as a number")
        #expect(payloadText.contains("\"htu\":\"https://us-east-1"), "no \\/ escaping")
        let jti = try #require(payload["jti"] as? String)
        #expect(jti.wholeMatch(of: /[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}/) != nil)

        let signature = try #require(loginBase64URLDecode(parts[2]))
        #expect(signature.count == 64, "raw r||s, not DER")
    }

    @Test("every proof has its own jti; an injected jti is used as given")
    func jti() throws {
        let key = try P256SigningKey.generate()
        let a = try DPoPProof.make(key: key, url: Self.url, now: Self.now)
        let b = try DPoPProof.make(key: key, url: Self.url, now: Self.now)
        #expect(a.split(separator: ".")[1] != b.split(separator: ".")[1])
        let fixed = try DPoPProof.make(key: key, url: Self.url, now: Self.now, jti: "0f0e0d0c-0b0a-4908-8706-050403020100")
        let payload = try JSONSerialization.jsonObject(with: #require(loginBase64URLDecode(fixed.split(separator: ".")[1])))
        #expect((payload as? [String: Any])?["jti"] as? String == "0f0e0d0c-0b0a-4908-8706-050403020100")
    }

    @Test("a URL with characters JSON must escape still yields valid JSON with the exact htu")
    func escaping() throws {
        let key = try P256SigningKey.generate()
        let url = "http://127.0.0.1:9/v1/token?a=\"b\"&c=\\d\u{7f}é"
        let proof = try DPoPProof.make(key: key, url: url, now: Self.now)
        let payload = try JSONSerialization.jsonObject(with: #require(loginBase64URLDecode(proof.split(separator: ".")[1])))
        #expect((payload as? [String: Any])?["htu"] as? String == url)
    }

    @Test(
        "Python `cryptography` verifies credd's proofs (signature, jwk, htm, htu, iat, jti)",
        .enabled(if: FakeSignInProcess.isAvailable, FakeSignInProcess.skipReason))
    func verifiedIndependently() throws {
        let fake = try FakeSignInProcess()
        defer { fake.stop() }
        for _ in 0..<20 {  // many signatures: r or s with leading zero bytes must still be 32 bytes each
            let key = try P256SigningKey.generate()
            let proof = try DPoPProof.make(key: key, url: Self.url, now: Date())
            let answer = try fake.command(["cmd": "verify_proof", "proof": proof, "htu": Self.url])
            #expect(answer["ok"] as? Bool == true, "\(answer["reason"] ?? "")")
        }
        let key = try P256SigningKey(pem: LoginTestKeys.p256)
        let proof = try DPoPProof.make(key: key, url: Self.url, now: Date())
        let wrongURL = try fake.command(["cmd": "verify_proof", "proof": proof, "htu": Self.url + "x"])
        #expect(wrongURL["ok"] as? Bool == false)
        let old = try DPoPProof.make(key: key, url: Self.url, now: Date().addingTimeInterval(-120))
        let stale = try fake.command(["cmd": "verify_proof", "proof": old, "htu": Self.url])
        #expect((stale["reason"] as? String)?.contains("iat") == true)
        // Tamper with one signature bit: the verifier must refuse it (so it is really checking).
        var parts = proof.split(separator: ".").map(String.init)
        var sig = try #require(loginBase64URLDecode(Substring(parts[2])))
        sig[10] ^= 0x01
        parts[2] = Base64URL.encode(sig)
        let tampered = try fake.command(["cmd": "verify_proof", "proof": parts.joined(separator: "."), "htu": Self.url])
        #expect((tampered["reason"] as? String)?.contains("does not verify") == true)
    }
}
