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
        ("2026-11-22T12:34:05-05:30", 1_795_370_645.0),
        ("2026-11-22T19:04:05+0100", 1_795_370_645.0),
        ("2026-11-22T18:04:05.5+00:00", 1_795_370_645.5),
        ("2026-11-22t18:04:05z", 1_795_370_645.0),
        ("1970-01-01T00:00:00Z", 0.0),
        ("2000-02-29T23:59:59Z", 951_868_799.0),
        ("2024-12-31T23:59:59.999999Z", 1_735_689_599.999999),
        ("2100-03-01T00:00:00Z", 4_107_542_400.0),
    ])
    func timestampsParse(text: String, epoch: Double) throws {
        let d = try #require(RFC3339.parse(text))
        #expect(abs(d.timeIntervalSince1970 - epoch) < 0.001)
    }

    @Test func badTimestampsDoNotParse() {
        for t in [
            "", "yesterday", "2026-13-01T00:00:00Z", "2026-11-22 18:04:05", "2026-11-22T18:04:05",
            "2026-02-29T00:00:00Z", "2100-02-29T00:00:00Z", "2026-04-31T00:00:00Z", "2026-00-10T00:00:00Z",
            "2026-11-00T00:00:00Z", "2026-11-22T24:00:00Z", "2026-11-22T18:60:00Z", "2026-11-22T18:04:60Z",
            "2026-11-22T18:04:05.Z", "2026-11-22T18:04:05Zjunk", "2026-11-22T18:04:05+1", "2026-11-22T18:04:05+24:00",
            "2026-11-22T18:04Z", "26-11-22T18:04:05Z", "2026-1-22T18:04:05Z", "+2026-11-22T18:04:05Z",
            "２026-11-22T18:04:05Z",
        ] { #expect(RFC3339.parse(t) == nil, "\(t)") }
    }

    /// The fixed-format parser agrees with Foundation's ISO 8601 parser it replaced, across the calendar.
    @Test func timestampsAgreeWithFoundation() throws {
        var t = -86_400.0 * 365 * 3
        while t < 86_400.0 * 365 * 140 {
            let date = Date(timeIntervalSince1970: t.rounded(.down))
            let text = date.formatted(Date.ISO8601FormatStyle())
            #expect(RFC3339.parse(text) == date, "\(text)")
            #expect(RFC3339.format(date) == text)
            t += 86_400 * 17 + 3_607.0
        }
    }
}
