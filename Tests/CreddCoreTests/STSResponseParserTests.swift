// STS's XML read with libexpat: namespaces, entities, text split across callbacks, and what must be refused.
@testable import CreddCore
import Foundation
import Testing

@Suite struct STSResponseParserTests {
    static let answer = """
        <AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
          <AssumeRoleResult>
            <AssumedRoleUser>
              <AssumedRoleId>AROA3XFRBF23:s</AssumedRoleId>
              <Arn>arn:aws:sts::123456789012:assumed-role/demo/s</Arn>
            </AssumedRoleUser>
            <Credentials>
              <AccessKeyId>ASIAEXAMPLE</AccessKeyId>
              <SecretAccessKey>wJalr&amp;XUtn&lt;FEMI&gt;</SecretAccessKey>
              <SessionToken><![CDATA[Fw//token&more]]></SessionToken>
              <Expiration>2026-11-22T19:04:05.123Z</Expiration>
            </Credentials>
          </AssumeRoleResult>
          <ResponseMetadata><RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ResponseMetadata>
        </AssumeRoleResponse>
        """

    @Test func anAnswerWithANamespaceEntitiesAndCDATAReads() throws {
        let r = try STSResponseParser.assumeRoleResult(from: Array(Self.answer.utf8))
        #expect(r.credentials.accessKeyId == "ASIAEXAMPLE")
        #expect(r.credentials.secretAccessKey.exposed == "wJalr&XUtn<FEMI>")
        #expect(r.credentials.sessionToken.exposed == "Fw//token&more")
        #expect(r.credentials.accountId == "123456789012")
        #expect(r.assumedRoleId == "AROA3XFRBF23:s")
        #expect(r.requestId == "c6104cbe-af31-11e0-8154-cbc7ccf896c7")
        #expect(abs(r.credentials.expiration.timeIntervalSince1970 - 1_795_374_245.123) < 0.001)
    }

    @Test func prefixedNamesAreReadByTheirLocalName() throws {
        let text = #"<s:ErrorResponse xmlns:s="https://sts.amazonaws.com/doc/2011-06-15/"><s:Error><s:Type>Sender</s:Type><s:Code>AccessDenied</s:Code><s:Message>not &quot;allowed&quot;</s:Message></s:Error><s:RequestId>r1</s:RequestId></s:ErrorResponse>"#
        let e = try #require(STSResponseParser.serviceError(status: 403, body: Array(text.utf8)))
        #expect(e == STSServiceError(status: 403, type: "Sender", code: "AccessDenied", message: "not \"allowed\"", requestId: "r1"))
    }

    @Test(arguments: [
        "",
        "<ErrorResponse><Error><Code>X</Code></Error>",  // not closed
        "<ErrorResponse><Error><Code>X</Code></Err></ErrorResponse>",  // mismatched
        "<html><body>502 Bad Gateway</body></html>",
        "plain text",
        "<a>1</a><b>2</b>",  // two roots
    ])
    func whatIsNotAnAnswerIsUnreadable(text: String) {
        #expect(throws: STSResponseParser.Unreadable.self) { try STSResponseParser.assumeRoleResult(from: Array(text.utf8)) }
        #expect(STSResponseParser.serviceError(status: 500, body: Array(text.utf8)) == nil)
    }

    @Test func externalEntitiesAreNotRead() throws {
        let secret = FileManager.default.temporaryDirectory.appendingPathComponent("credd-xxe-\(getpid())")
        try "LEAKED".write(to: secret, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: secret) }
        let text = """
            <?xml version="1.0"?>
            <!DOCTYPE ErrorResponse [<!ENTITY x SYSTEM "file://\(secret.path)">]>
            <ErrorResponse><Error><Code>Throttling</Code><Message>&x;</Message></Error></ErrorResponse>
            """
        let e = STSResponseParser.serviceError(status: 400, body: Array(text.utf8))
        #expect(e?.message.contains("LEAKED") != true)
    }

    @Test func entityExpansionBombsAreRefused() {
        var text = "<?xml version=\"1.0\"?>\n<!DOCTYPE r [<!ENTITY a0 \"lollollollollollollollollollol\">"
        for i in 1...9 { text += "<!ENTITY a\(i) \"" + String(repeating: "&a\(i - 1);", count: 10) + "\">" }
        text += "]>\n<ErrorResponse><Error><Code>X</Code><Message>&a9;</Message></Error></ErrorResponse>"
        #expect(STSResponseParser.serviceError(status: 400, body: Array(text.utf8)) == nil)
    }
}
