// The SigV4 signer's pieces: encoding, path normalisation, query and header canonicalisation, tokens.
import CreddCore
import Foundation
import Testing

@Suite("SigV4 signer pieces")
struct SigV4SignerTests {
    static let credentials = SigningCredentials(
        accessKeyId: "AKIDEXAMPLE", secretAccessKey: Secret("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"))
    static let date = Date(timeIntervalSince1970: 1_440_938_160)  // 2015-08-30T12:36:00Z

    @Test(
        "URI encoding keeps only the unreserved set (and / in paths)",
        arguments: [
            ("abcXYZ019-._~", false, "abcXYZ019-._~"),
            ("a b", false, "a%20b"),
            ("a+b=c&d", false, "a%2Bb%3Dc%26d"),
            ("/a/b", false, "%2Fa%2Fb"),
            ("/a/b", true, "/a/b"),
            ("%41", false, "%2541"),
            ("ሴ", false, "%E1%88%B4"),
            ("*", false, "%2A"),
        ])
    func uriEncoding(input: String, keepSlash: Bool, expected: String) {
        #expect(SigV4Signer.uriEncode(input, keepSlash: keepSlash) == expected)
    }

    @Test(
        "canonical URI: normalised or not, then encoded once more",
        arguments: [
            ("", true, "/"),
            ("/", true, "/"),
            ("/example/..", true, "/"),
            ("/a/./b/../c/", true, "/a/c/"),
            ("//example//", true, "/example/"),
            ("//example//", false, "//example//"),
            ("/example%20space/", true, "/example%2520space/"),
            ("/../..", true, "/"),
        ])
    func canonicalURI(path: String, normalize: Bool, expected: String) {
        #expect(SigV4Signer.canonicalURI(path, normalize: normalize) == expected)
    }

    @Test(
        "canonical query: decoded, re-encoded, sorted by key then value",
        arguments: [
            ("", ""),
            ("b=2&a=1", "a=1&b=2"),
            ("a=2&a=1", "a=1&a=2"),
            ("key", "key="),
            ("k=a%20b", "k=a%20b"),
            ("k=a b", "k=a%20b"),
            ("Z=1&a=1", "Z=1&a=1"),
        ])
    func canonicalQuery(query: String, expected: String) {
        #expect(SigV4Signer.canonicalQuery(query) == expected)
    }

    @Test("canonical headers: lowercased, sorted, trimmed, repeated ones joined with commas")
    func canonicalHeaders() {
        let (block, signed) = SigV4Signer.canonicalHeaders([
            SigV4Header("Host", "example.com"), SigV4Header("X-B", "  two   words  "), SigV4Header("x-a", "1"),
            SigV4Header("X-A", "2"), SigV4Header("X-Fold", "one\n   two"),
        ])
        #expect(block == "host:example.com\nx-a:1,2\nx-b:two words\nx-fold:one two\n")
        #expect(signed == "host;x-a;x-b;x-fold")
    }

    @Test("X-Amz-Date is the UTC basic format")
    func amzDate() {
        #expect(SigV4Signer.amzDate(Self.date) == "20150830T123600Z")
        #expect(SigV4Signer.amzDate(Date(timeIntervalSince1970: 0.999)) == "19700101T000000Z")
    }

    @Test("a session token is sent and signed by default; on request it is sent unsigned")
    func sessionToken() {
        let request = SigV4Request(method: "POST", path: "/", headers: [SigV4Header("Host", "sts.eu-west-1.amazonaws.com")])
        var creds = Self.credentials
        creds.sessionToken = Secret("the-session-token-value")

        let signed = SigV4Signer(service: "sts", region: "eu-west-1").sign(request, credentials: creds, date: Self.date)
        #expect(signed.headers.contains(SigV4Header("X-Amz-Security-Token", "the-session-token-value")))
        #expect(signed.authorization.contains("SignedHeaders=host;x-amz-date;x-amz-security-token,"))

        let unsigned = SigV4Signer(service: "sts", region: "eu-west-1", signSessionToken: false)
            .sign(request, credentials: creds, date: Self.date)
        #expect(unsigned.headers.contains(SigV4Header("X-Amz-Security-Token", "the-session-token-value")))
        #expect(unsigned.authorization.contains("SignedHeaders=host;x-amz-date,"))
        #expect(unsigned.signature != signed.signature)

        let none = SigV4Signer(service: "sts", region: "eu-west-1").sign(request, credentials: Self.credentials, date: Self.date)
        #expect(!none.headers.contains { $0.name.lowercased() == "x-amz-security-token" })
    }

    @Test("stale X-Amz-Date, token and Authorization headers are replaced, not duplicated")
    func replacesOldSigningHeaders() {
        let request = SigV4Request(
            method: "GET", path: "/",
            headers: [
                SigV4Header("Host", "example.amazonaws.com"), SigV4Header("X-Amz-Date", "20000101T000000Z"),
                SigV4Header("Authorization", "old"), SigV4Header("x-amz-security-token", "old-token"),
            ])
        let signed = SigV4Signer(service: "service", region: "us-east-1").sign(request, credentials: Self.credentials, date: Self.date)
        #expect(signed.headers.filter { $0.name.lowercased() == "x-amz-date" } == [SigV4Header("X-Amz-Date", "20150830T123600Z")])
        #expect(signed.headers.filter { $0.name.lowercased() == "authorization" }.count == 1)
        #expect(!signed.headers.contains { $0.name.lowercased() == "x-amz-security-token" })
        // The suite's get-vanilla signature: the old headers had no influence.
        #expect(signed.signature == "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")
    }

    @Test("region, service, date and secret each change the signature")
    func scopeMatters() {
        let request = SigV4Request(method: "GET", path: "/", headers: [SigV4Header("Host", "example.amazonaws.com")])
        let base = SigV4Signer(service: "service", region: "us-east-1").sign(request, credentials: Self.credentials, date: Self.date)
        let others = [
            SigV4Signer(service: "service", region: "us-east-2").sign(request, credentials: Self.credentials, date: Self.date),
            SigV4Signer(service: "sts", region: "us-east-1").sign(request, credentials: Self.credentials, date: Self.date),
            SigV4Signer(service: "service", region: "us-east-1").sign(
                request, credentials: Self.credentials, date: Self.date.addingTimeInterval(1)),
            SigV4Signer(service: "service", region: "us-east-1").sign(
                request, credentials: SigningCredentials(accessKeyId: "AKIDEXAMPLE", secretAccessKey: Secret("other")),
                date: Self.date),
        ]
        for other in others { #expect(other.signature != base.signature) }
    }

    @Test("a signed request prints without the secret key or the session token")
    func descriptionHasNoSecret() {
        var creds = Self.credentials
        creds.sessionToken = Secret("the-session-token-value")
        let signed = SigV4Signer(service: "sts", region: "eu-west-1").sign(
            SigV4Request(method: "POST", path: "/", headers: [SigV4Header("Host", "h")]), credentials: creds, date: Self.date)
        for text in [signed.description, String(describing: signed), "\(creds)"] {
            #expect(!text.contains("the-session-token-value"))
            #expect(!text.contains("wJalrXUtnFEMI"))
        }
    }

    @Test("credentials with an empty session token sign as long-term keys")
    func emptyTokenIsNoToken() {
        let creds = Credentials(
            accessKeyId: "AKIDEXAMPLE", secretAccessKey: Secret("s"), sessionToken: Secret(""), expiration: Self.date)
        #expect(SigningCredentials(creds).sessionToken == nil)
        let withToken = Credentials(
            accessKeyId: "ASIAEXAMPLE", secretAccessKey: Secret("s"), sessionToken: Secret("t"), expiration: Self.date)
        #expect(SigningCredentials(withToken).sessionToken?.exposed == "t")
    }
}
