import CreddCore
import Foundation
import Testing

@Suite struct IMDSParsingTests {
    static let good = #"{"Code":"Success","LastUpdated":"2026-11-22T12:00:00Z","Type":"AWS-HMAC","AccessKeyId":"ASIAIMDSKEY000000001","SecretAccessKey":"SECRETimds","Token":"TOKENimds","Expiration":"2026-11-22T18:00:00Z"}"#

    @Test func parsesTheCredentialsDocument() throws {
        let c = try IMDSParsing.credentials(Array(Self.good.utf8), where: "http://imds/x")
        #expect(c.accessKeyId == "ASIAIMDSKEY000000001")
        #expect(c.secretAccessKey.exposed == "SECRETimds")
        #expect(c.sessionToken.exposed == "TOKENimds")
        #expect(RFC3339.format(c.expiration) == "2026-11-22T18:00:00Z")
    }

    struct BadCase: Sendable, CustomTestStringConvertible {
        var body: String
        var code: String
        var mentions: String
        var testDescription: String { "\(code): \(body.prefix(40))" }
    }

    static let bad: [BadCase] = [
        .init(body: "", code: "IMDSBadResponse", mentions: "not valid JSON"),
        .init(body: "<html>proxy</html>", code: "IMDSBadResponse", mentions: "not valid JSON"),
        .init(body: String(good.prefix(60)), code: "IMDSBadResponse", mentions: "not valid JSON"),
        .init(body: #"{"Code":"AssumeRoleUnauthorizedAccess","Message":"EC2 cannot assume the role web"}"#, code: "IMDSCredentialsError", mentions: "EC2 cannot assume the role web"),
        .init(body: #"{"Code":"Success","AccessKeyId":"A","SecretAccessKey":"S","Expiration":"2026-11-22T18:00:00Z"}"#, code: "IMDSBadResponse", mentions: "without Token"),
        .init(body: #"{"Code":"Success","AccessKeyId":"A","SecretAccessKey":"S","Token":"T","Expiration":"soon"}"#, code: "IMDSBadResponse", mentions: "Expiration"),
        .init(body: #"[1,2,3]"#, code: "IMDSBadResponse", mentions: "not valid JSON"),
        .init(body: #"{"Code":7}"#, code: "IMDSBadResponse", mentions: "not valid JSON"),
    ]

    @Test(arguments: bad)
    func everyBadDocumentIsAClearError(_ c: BadCase) {
        do {
            _ = try IMDSParsing.credentials(Array(c.body.utf8), where: "http://imds/x")
            Issue.record("parsed \(c.body)")
        } catch let e as SourceError {
            #expect(e.code == c.code)
            #expect(e.message.contains(c.mentions), "\(e.message)")
            #expect(e.message.contains("http://imds/x"))
            #expect(!e.message.contains("SECRET") && !e.message.contains("\"S\""))
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test func roleListing() {
        #expect(IMDSParsing.roleName(Array("web\n".utf8)) == "web")
        #expect(IMDSParsing.roleName(Array("web\nother\n".utf8)) == "web")
        #expect(IMDSParsing.roleName(Array("".utf8)) == nil)
        #expect(IMDSParsing.roleName(Array("a/b".utf8)) == nil)
    }

    @Test func accountIdFromTheIdentityDocument() {
        #expect(IMDSParsing.accountId(Array(#"{"accountId":"123456789012","region":"eu-west-1"}"#.utf8)) == "123456789012")
        #expect(IMDSParsing.accountId(Array(#"{"accountId":"12"}"#.utf8)) == nil)
        #expect(IMDSParsing.accountId(Array("garbage".utf8)) == nil)
    }
}
