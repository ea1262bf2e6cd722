// Journal field mapping, priorities, metadata merging and the JOURNAL_STREAM check.
#if canImport(Glibc)
import Glibc
#endif
import Logging
import Synchronization
import Testing

@testable import CreddSystemd

@Suite struct JournalLogHandlerTests {
    @Test(arguments: [
        ("credd.set", "CREDD_SET"),
        ("set", "CREDD_SET"),
        ("source", "CREDD_SOURCE"),
        ("caller.uid", "CREDD_CALLER_UID"),
        ("aws.key-id last4", "CREDD_AWS_KEY_ID_LAST4"),
        ("CREDD_STATUS", "CREDD_STATUS"),
        ("_private", "CREDD__PRIVATE"),
        ("ünicode", "CREDD__NICODE"),
    ])
    func metadataKeysBecomeJournalFieldNames(key: String, expected: String) {
        #expect(JournalLogHandler.fieldName(forMetadataKey: key) == expected)
    }

    @Test func fieldNamesStopAtJournaldsLimit() {
        let name = JournalLogHandler.fieldName(forMetadataKey: String(repeating: "a", count: 100))
        #expect(name.count == 64)
        #expect(name.hasPrefix("CREDD_AAAA"))
    }

    @Test(arguments: [
        (Logger.Level.trace, 7), (.debug, 7), (.info, 6), (.notice, 5), (.warning, 4), (.error, 3), (.critical, 2),
    ])
    func levelsMapToSyslogPriorities(level: Logger.Level, priority: Int) {
        #expect(JournalLogHandler.priority(level) == priority)
    }

    @Test func fieldsCarryMessagePriorityIdentifierAndMetadata() {
        let fields = JournalLogHandler.fields(
            level: .warning, message: "Refresh failed",
            metadata: ["credd.set": "default", "credd.source": "imds", "caller": ["uid": "1000", "pid": "42"]],
            error: nil, label: "credd.refresh", file: "credd/X.swift", function: "run()", line: 7
        )
        #expect(fields.contains(JournalField("PRIORITY", "4")))
        #expect(fields.contains(JournalField("SYSLOG_IDENTIFIER", "credd")))
        #expect(fields.contains(JournalField("CREDD_LOGGER", "credd.refresh")))
        #expect(fields.contains(JournalField("CREDD_SET", "default")))
        #expect(fields.contains(JournalField("CREDD_SOURCE", "imds")))
        #expect(fields.contains(JournalField("CREDD_CALLER_UID", "1000")))
        #expect(fields.contains(JournalField("CREDD_CALLER_PID", "42")))
        #expect(fields.contains(JournalField("CODE_LINE", "7")))
        let message = fields.first { $0.name == "MESSAGE" }?.value
        #expect(message?.hasPrefix("Refresh failed ") == true)
        #expect(message?.contains("credd.set=default") == true)
        for field in fields {
            #expect(field.name.allSatisfy { $0.isUppercase || $0.isNumber || $0 == "_" })
            #expect(!field.name.hasPrefix("_"))
        }
    }

    @Test func messageCanLeaveMetadataToTheFields() {
        let fields = JournalLogHandler.fields(
            level: .info, message: "Served", metadata: ["credd.set": "dev"], label: "x",
            includeMetadataInMessage: false
        )
        #expect(fields.first == JournalField("MESSAGE", "Served"))
        #expect(fields.contains(JournalField("CREDD_SET", "dev")))
    }

    @Test func errorsBecomeTheirOwnField() {
        struct Failure: Error, CustomStringConvertible { var description: String { "IMDS answered 500." } }
        let fields = JournalLogHandler.fields(
            level: .error, message: "Fetch failed", metadata: [:], error: Failure(), label: "x"
        )
        #expect(fields.contains(JournalField("CREDD_ERROR", "IMDS answered 500.")))
    }

    @Test func loggerMetadataMergesHandlerProviderAndEvent() {
        let sent = Mutex<[[JournalField]]>([])
        var handler = JournalLogHandler(
            label: "credd.test",
            metadataProvider: Logger.MetadataProvider { ["credd.request": "r1", "credd.set": "provided"] },
            sink: { fields in
                sent.withLock { $0.append(fields) }
                return 0
            }
        )
        handler.logLevel = .debug
        var logger = Logger(label: "credd.test") { _ in handler }
        logger[metadataKey: "credd.source"] = "imds"
        logger.debug("Served credentials", metadata: ["credd.set": "default"])
        logger.trace("not logged below debug")
        let entries = sent.withLock { $0 }
        #expect(entries.count == 1)
        let fields = entries.first ?? []
        #expect(fields.contains(JournalField("CREDD_SET", "default")))
        #expect(fields.contains(JournalField("CREDD_SOURCE", "imds")))
        #expect(fields.contains(JournalField("CREDD_REQUEST", "r1")))
        #expect(fields.contains(JournalField("PRIORITY", "7")))
        #expect(fields.contains { $0.name == "CODE_FILE" && $0.value.contains("JournalLogHandlerTests") })
    }

    @Test func journalStreamMatchesOnlyTheDeviceAndInodeOfTheFd() throws {
        var path = Array("/tmp/credd-journal-stream-XXXXXX".utf8CString)
        let fd = path.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        #expect(fd >= 0)
        defer {
            close(fd)
            unlink(path.withUnsafeBufferPointer { String(cString: $0.baseAddress!) })
        }
        var info = stat()
        #expect(fstat(fd, &info) == 0)
        #expect(JournalLogHandler.isJournalStream(value: "\(info.st_dev):\(info.st_ino)", fd: fd))
        #expect(!JournalLogHandler.isJournalStream(value: "\(info.st_dev):\(info.st_ino + 1)", fd: fd))
        #expect(!JournalLogHandler.isJournalStream(value: "\(info.st_dev)", fd: fd))
        #expect(!JournalLogHandler.isJournalStream(value: "x:y", fd: fd))
        #expect(!JournalLogHandler.isJournalStream(value: "\(info.st_dev):\(info.st_ino)", fd: -1))
    }
}
