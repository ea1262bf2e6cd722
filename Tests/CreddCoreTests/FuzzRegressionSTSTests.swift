// Inputs the fuzzers (Tests/Fuzz) crashed credd with, replayed on every test run; each is also in Tests/Fuzz/corpus.
@testable import CreddCore
import Foundation
import Testing

@Suite struct FuzzRegressionSTSTests {
    /// Tests/Fuzz/corpus/sts/crash-non-utf8-element-name: an ErrorResponse whose element names hold bytes that
    /// are not UTF-8. FoundationXML's XMLParser trapped in `_NSXMLParserStartElementNs` (a crash of the whole
    /// daemon from one STS answer, or from anything on a plain-HTTP path to it).
    static let nonUTF8ElementName: [UInt8] = [
        0x3c, 0x45, 0x72, 0x72, 0x6f, 0x72, 0x52, 0x65, 0x73, 0x6e, 0x64, 0xff, 0xff, 0x3c, 0x2f, 0x54, 0x79, 0x70, 0x65, 0x3e,
        0x3c, 0x43, 0x6f, 0x64, 0x65, 0x3e, 0x54, 0x68, 0xff, 0xff, 0x74, 0x74, 0x6c, 0x69, 0x6e, 0x67, 0x3c, 0x2f, 0x43, 0x6f,
        0x64, 0x65, 0x3e, 0x3c, 0x4d, 0x65, 0x73, 0x73, 0x4d, 0x65, 0x73, 0x73, 0x61, 0x67, 0x65, 0x3e, 0x52, 0x61, 0x74, 0x65,
        0x20, 0x65, 0x78, 0x63, 0x65, 0x65, 0x64, 0x65, 0x64, 0x3c, 0x2f, 0x4d, 0x65, 0x73, 0x73, 0x61, 0x67, 0x65, 0x3e, 0x3c,
        0x2f, 0x45, 0x72, 0x72, 0x6f, 0x72, 0x3e, 0x3c, 0x52, 0x65, 0x71, 0xbf, 0x65, 0x73, 0x74, 0x49, 0x64, 0x3e, 0x72, 0x71,
        0x75, 0x65, 0x73, 0x74, 0x49, 0x64, 0x3e, 0x3c, 0x2f, 0x45, 0x72, 0x72, 0x6f, 0x72, 0x52, 0x65, 0x73, 0x70, 0x6f, 0x6e,
        0x73, 0x65, 0x3e,
    ]

    @Test func anAnswerThatIsNotUTF8IsUnreadableNotACrash() {
        #expect(STSResponseParser.serviceError(status: 400, body: Self.nonUTF8ElementName) == nil)
        #expect(throws: STSResponseParser.Unreadable.self) { try STSResponseParser.assumeRoleResult(from: Self.nonUTF8ElementName) }
        // A single stray byte anywhere in an otherwise good answer is refused the same way.
        var good = Array(#"<ErrorResponse><Error><Code>Throttling</Code><Message>Rate exceeded</Message></Error></ErrorResponse>"#.utf8)
        #expect(STSResponseParser.serviceError(status: 400, body: good)?.code == "Throttling")
        good.insert(0xC0, at: 10)
        #expect(STSResponseParser.serviceError(status: 400, body: good) == nil)
    }

    @Test func theCommittedCrashInputMatchesThisTest() throws {
        // Keeps the corpus file and the inline copy in step (the file is what run.sh replays).
        let here = URL(fileURLWithPath: #filePath)
        let file = here.deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fuzz/corpus/sts/crash-non-utf8-element-name")
        let data = try #require(FileManager.default.contents(atPath: file.path))
        #expect(Array(data) == Self.nonUTF8ElementName)
    }

    @Test(arguments: [
        "<ErrorResponse><Error><Code>Ω</Code><Message>ünïcödé</Message></Error></ErrorResponse>",
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ErrorResponse><Error><Code>Throttling</Code></Error></ErrorResponse>",
        "  \n<ErrorResponse><Error><Code>Throttling</Code></Error></ErrorResponse>",
    ])
    func validUTF8AnswersStillRead(text: String) {
        #expect(STSResponseParser.serviceError(status: 400, body: Array(text.utf8)) != nil)
    }
}
