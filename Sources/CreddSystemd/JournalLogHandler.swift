// A swift-log handler that writes native journald entries (sd_journal_sendv) with credd's fields.
#if canImport(Glibc)
import Glibc
#endif
import CSystemd
import Logging

/// One journal field: NAME (uppercase letters, digits and '_', not starting with '_') and its value.
public struct JournalField: Equatable, Sendable {
    public var name: String
    public var value: String

    public init(_ name: String, _ value: String) {
        self.name = name
        self.value = value
    }
}

/// Logs to journald with structured fields: MESSAGE, PRIORITY, SYSLOG_IDENTIFIER=credd, CODE_FILE/LINE/FUNC,
/// CREDD_LOGGER (the logger label), CREDD_ERROR, and every metadata key as an uppercase CREDD_* field
/// (`credd.set` → CREDD_SET, `source` → CREDD_SOURCE). Use it only when `isJournalStream()` says stderr
/// is the journal; otherwise log plain lines to stderr.
public struct JournalLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    public var logLevel: Logger.Level = .info
    public let label: String
    /// SYSLOG_IDENTIFIER; `journalctl -t credd` selects on it.
    public let identifier: String
    /// Also append `key=value` pairs to MESSAGE, so plain `journalctl -u credd` shows them; the fields are
    /// written either way.
    public var messageIncludesMetadata: Bool

    private let sink: @Sendable ([JournalField]) -> Int32

    public init(
        label: String,
        identifier: String = "credd",
        messageIncludesMetadata: Bool = true,
        metadataProvider: Logger.MetadataProvider? = nil
    ) {
        self.init(
            label: label, identifier: identifier, messageIncludesMetadata: messageIncludesMetadata,
            metadataProvider: metadataProvider, sink: JournalLogHandler.sendToJournal
        )
    }

    /// For tests: `sink` receives the fields instead of journald and returns what sd_journal_sendv would.
    init(
        label: String,
        identifier: String = "credd",
        messageIncludesMetadata: Bool = true,
        metadataProvider: Logger.MetadataProvider? = nil,
        sink: @escaping @Sendable ([JournalField]) -> Int32
    ) {
        self.label = label
        self.identifier = identifier
        self.messageIncludesMetadata = messageIncludesMetadata
        self.metadataProvider = metadataProvider
        self.sink = sink
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() {
            merged.merge(provided) { _, new in new }
        }
        if let own = event.metadata {
            merged.merge(own) { _, new in new }
        }
        let fields = Self.fields(
            level: event.level, message: event.message.description, metadata: merged, error: event.error,
            label: label, identifier: identifier, includeMetadataInMessage: messageIncludesMetadata,
            file: event.file, function: event.function, line: event.line
        )
        if sink(fields) < 0 {
            // journald is gone (or refused the entry): keep the line rather than lose it.
            let line = fields.first { $0.name == "MESSAGE" }?.value ?? event.message.description
            let bytes = Array("\(identifier): \(line)\n".utf8)
            _ = bytes.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
        }
    }

    /// The journal fields for one log event, in the order they are sent.
    public static func fields(
        level: Logger.Level,
        message: String,
        metadata: Logger.Metadata,
        error: (any Error)? = nil,
        label: String,
        identifier: String = "credd",
        includeMetadataInMessage: Bool = true,
        file: String = #fileID,
        function: String = #function,
        line: UInt = #line
    ) -> [JournalField] {
        var text = message
        if includeMetadataInMessage, !metadata.isEmpty {
            let pairs = metadata.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
            text += " " + pairs.joined(separator: " ")
        }
        var fields: [JournalField] = [
            JournalField("MESSAGE", text),
            JournalField("PRIORITY", String(priority(level))),
            JournalField("SYSLOG_IDENTIFIER", identifier),
            JournalField("CODE_FILE", file),
            JournalField("CODE_LINE", String(line)),
            JournalField("CODE_FUNC", function),
            JournalField("CREDD_LOGGER", label),
        ]
        if let error {
            fields.append(JournalField("CREDD_ERROR", String(describing: error)))
        }
        for (key, value) in metadata.sorted(by: { $0.key < $1.key }) {
            appendFields(name: fieldName(forMetadataKey: key), value: value, to: &fields)
        }
        return fields
    }

    /// The syslog priority journald stores in PRIORITY.
    public static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: return 7
        case .info: return 6
        case .notice: return 5
        case .warning: return 4
        case .error: return 3
        case .critical: return 2
        }
    }

    /// `credd.set` → `CREDD_SET`, `caller.uid` → `CREDD_CALLER_UID`: uppercase, anything but A–Z, 0–9 and '_'
    /// becomes '_', a `CREDD_` prefix unless already there, at most 64 characters (journald's limit).
    public static func fieldName(forMetadataKey key: String) -> String {
        var name = String(
            String.UnicodeScalarView(
                key.uppercased().unicodeScalars.map { scalar in
                    switch scalar {
                    case "A"..."Z", "0"..."9", "_": return scalar
                    default: return "_"
                    }
                }
            )
        )
        if !name.hasPrefix("CREDD_") {
            name = "CREDD_" + name
        }
        return String(name.prefix(64))
    }

    private static func appendFields(name: String, value: Logger.MetadataValue, to fields: inout [JournalField]) {
        switch value {
        case .string(let text):
            fields.append(JournalField(name, text))
        case .stringConvertible(let convertible):
            fields.append(JournalField(name, convertible.description))
        case .array(let values):
            fields.append(JournalField(name, values.map { "\($0)" }.joined(separator: ",")))
        case .dictionary(let values):
            for (key, nested) in values.sorted(by: { $0.key < $1.key }) {
                appendFields(name: fieldName(forMetadataKey: name + "_" + key), value: nested, to: &fields)
            }
        }
    }

    /// True when stderr (or `fd`) is the journal stream systemd connected (`JOURNAL_STREAM` = "dev:inode" of it).
    public static func isJournalStream(fd: Int32 = STDERR_FILENO) -> Bool {
        guard let raw = getenv("JOURNAL_STREAM") else { return false }
        return isJournalStream(value: String(cString: raw), fd: fd)
    }

    /// The comparison behind `isJournalStream()`, for a given JOURNAL_STREAM value.
    public static func isJournalStream(value: String, fd: Int32) -> Bool {
        let parts = value.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, let device = UInt64(parts[0]), let inode = UInt64(parts[1]) else { return false }
        var info = stat()
        guard fstat(fd, &info) == 0 else { return false }
        return UInt64(info.st_dev) == device && UInt64(info.st_ino) == inode
    }

    /// Sends fields with sd_journal_sendv, one iovec per "NAME=value" (values may hold newlines).
    @Sendable
    static func sendToJournal(_ fields: [JournalField]) -> Int32 {
        var storage: [UInt8] = []
        var spans: [(offset: Int, count: Int)] = []
        for field in fields {
            let start = storage.count
            storage.append(contentsOf: field.name.utf8)
            storage.append(UInt8(ascii: "="))
            storage.append(contentsOf: field.value.utf8)
            spans.append((start, storage.count - start))
        }
        return storage.withUnsafeMutableBytes { buffer in
            var vectors = spans.map { span in
                iovec(iov_base: buffer.baseAddress! + span.offset, iov_len: span.count)
            }
            return sd_journal_sendv(&vectors, Int32(vectors.count))
        }
    }
}
