// The DPoP proof (RFC 9449) that binds a Sign-In token request to the login session's P-256 key.
import CreddCrypto
import Foundation

/// Builds the `DPoP` header value for one Sign-In request, exactly as botocore's `_build_dpop_header`:
/// a compact JWS with header `{"typ":"dpop+jwt","alg":"ES256","jwk":{"kty":"EC","x":…,"y":…,"crv":"P-256"}}`,
/// payload `{"htm":…,"htu":…,"iat":…,"jti":…}`, both compact JSON in base64url without padding, and the
/// ES256 signature over `header.payload` as the raw 64-byte r‖s (not DER: that was seed 001's bug).
public enum DPoPProof {
    struct JWK: Encodable {
        let kty = "EC"
        let x: String
        let y: String
        let crv = "P-256"
    }

    struct Header: Encodable {
        let typ = "dpop+jwt"
        let alg = "ES256"
        let jwk: JWK
    }

    struct Payload: Encodable {
        let htm: String
        let htu: String
        let iat: Int64
        let jti: String
    }

    /// The proof for a `method` request to `url` (the full URL the request goes to, the `htu`),
    /// issued at `now` (whole seconds, rounded down) with a fresh random UUIDv4 `jti` unless one is given.
    public static func make(
        key: P256SigningKey, method: String = "POST", url: String, now: Date, jti: String = SecureRandom.uuid4()
    ) throws -> String {
        let encoder = JSONEncoder()
        // Fixed key order and no `\/` escaping, so the proof is compact JSON however Foundation orders dictionaries.
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let header = Header(jwk: JWK(x: Base64URL.encode(key.x), y: Base64URL.encode(key.y)))
        let payload = Payload(
            htm: method, htu: url, iat: Int64(now.timeIntervalSince1970.rounded(.down)), jti: jti)
        let signingInput =
            Base64URL.encode(try encoder.encode(header)) + "." + Base64URL.encode(try encoder.encode(payload))
        let signature = try key.signES256(Array(signingInput.utf8))
        return signingInput + "." + Base64URL.encode(signature)
    }
}
