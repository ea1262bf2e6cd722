import CreddCore
import CreddTestSupport
import Foundation
import Testing

@Suite struct CredentialsTests {
    let now = Date(timeIntervalSince1970: 1_800_000_000)

    @Test func credentialsRedactThemselves() {
        let c = testCredentials(expiresIn: 3600, now: now)
        for text in ["\(c)", String(describing: c), String(reflecting: c), "\(c.secretAccessKey)", "\(c.sessionToken)", "\([c])"] {
            #expect(!text.contains("SECRETtest"), "\(text)")
            #expect(!text.contains("TOKENtest"), "\(text)")
        }
        var dumped = ""
        dump(c, to: &dumped)
        #expect(!dumped.contains("SECRETtest") && !dumped.contains("TOKENtest"))
        #expect("\(c)".contains("…0001"))
    }

    @Test func containerDocumentHasExactlyTheFieldsSDKsRead() throws {
        let c = testCredentials(expiresIn: 3600, now: now)
        let body = ContainerCredentialsDocument.encode(c, expiration: c.expiration)
        let json = try #require(try JSONSerialization.jsonObject(with: Data(body)) as? [String: String])
        #expect(Set(json.keys) == ["AccessKeyId", "SecretAccessKey", "Token", "Expiration", "AccountId"])
        #expect(json["Expiration"] == "2027-01-15T09:00:00Z")
        #expect(json["Token"] == c.sessionToken.exposed)
        var noAccount = c
        noAccount.accountId = nil
        let json2 = try #require(try JSONSerialization.jsonObject(with: Data(ContainerCredentialsDocument.encode(noAccount, expiration: c.expiration))) as? [String: String])
        #expect(json2["AccountId"] == nil)
    }

    @Test(arguments: [
        ("2026-11-22T18:04:05Z", 1_795_370_645.0),
        ("2026-11-22T18:04:05.123Z", 1_795_370_645.123),
        ("2026-11-22T19:04:05+01:00", 1_795_370_645.0),
    ])
    func timestampsParse(text: String, epoch: Double) throws {
        let d = try #require(RFC3339.parse(text))
        #expect(abs(d.timeIntervalSince1970 - epoch) < 0.001)
    }

    @Test func badTimestampsDoNotParse() {
        for t in ["", "yesterday", "2026-13-01T00:00:00Z", "2026-11-22 18:04:05"] { #expect(RFC3339.parse(t) == nil, "\(t)") }
    }
}
