// Sealed memfds that carry credd's state through systemd's fd store across restarts, never touching disk.
#if canImport(Glibc)
import Glibc
#endif
import CSystemd

/// Moves bytes into and out of a sealed memfd. The payload (JSON) belongs to the caller.
///
/// The memfd is sealed against shrinking, growing and writing, and the seal set itself is sealed, so
/// the copy systemd keeps cannot be changed by anyone holding it; `read` refuses a memfd without all four.
public enum CredentialStateMemfd {
    /// The seals `create` applies and `read` requires.
    public static let requiredSeals: Int32 =
        Int32(CREDD_F_SEAL_SHRINK | CREDD_F_SEAL_GROW | CREDD_F_SEAL_WRITE | CREDD_F_SEAL_SEAL)
    /// Larger stored state is taken as malformed (credd's state is a few kilobytes).
    public static let defaultMaximumSize = 1 << 20

    /// Creates a sealed, close-on-exec memfd holding `bytes`; the caller owns (and closes) the returned fd.
    public static func create(_ bytes: [UInt8], name: String = SystemdListeners.storePrefix)
        throws(CredentialStateError) -> Int32
    {
        try create(bytes, name: name, seals: requiredSeals)
    }

    /// `create` with a chosen seal set (tests make under-sealed memfds with it).
    static func create(_ bytes: [UInt8], name: String, seals: Int32) throws(CredentialStateError) -> Int32 {
        let fd = credd_memfd_create_sealable(name)
        if fd < 0 { throw .system(operation: "memfd_create", errno: errno) }
        do throws(CredentialStateError) {
            try writeAll(fd, bytes)
            if seals != 0, fcntl(fd, Int32(CREDD_F_ADD_SEALS), seals) != 0 {
                throw .system(operation: "fcntl(F_ADD_SEALS)", errno: errno)
            }
            return fd
        } catch {
            close(fd)
            throw error
        }
    }

    /// Reads the whole content of a sealed memfd, from offset 0, without closing it.
    /// Throws `.notSealed` for anything that is not a memfd with all of `requiredSeals`, `.tooLarge` past
    /// `maximumSize`.
    public static func read(fd: Int32, maximumSize: Int = defaultMaximumSize) throws(CredentialStateError) -> [UInt8] {
        let seals = fcntl(fd, Int32(CREDD_F_GET_SEALS))
        if seals < 0 {
            // EINVAL: not a memfd (or a memfd created without MFD_ALLOW_SEALING).
            throw .notSealed(seals: nil)
        }
        guard seals & requiredSeals == requiredSeals else { throw .notSealed(seals: seals) }
        var info = stat()
        if fstat(fd, &info) != 0 { throw .system(operation: "fstat", errno: errno) }
        let size = Int(info.st_size)
        guard size <= maximumSize else { throw .tooLarge(size: size, maximum: maximumSize) }
        var bytes = [UInt8](repeating: 0, count: size)
        var offset = 0
        while offset < size {
            let count = bytes.withUnsafeMutableBytes { buffer in
                pread(fd, buffer.baseAddress! + offset, size - offset, off_t(offset))
            }
            if count < 0 {
                if errno == EINTR { continue }
                throw .system(operation: "pread", errno: errno)
            }
            if count == 0 { throw .truncated(expected: size, read: offset) }
            offset += count
        }
        return bytes
    }

    private static func writeAll(_ fd: Int32, _ bytes: [UInt8]) throws(CredentialStateError) {
        var offset = 0
        while offset < bytes.count {
            let count = bytes.withUnsafeBytes { buffer in
                write(fd, buffer.baseAddress! + offset, bytes.count - offset)
            }
            if count < 0 {
                if errno == EINTR { continue }
                throw .system(operation: "write", errno: errno)
            }
            offset += count
        }
    }
}

public enum CredentialStateError: Error, Equatable, Sendable, CustomStringConvertible {
    case system(operation: String, errno: Int32)
    case notSealed(seals: Int32?)
    case tooLarge(size: Int, maximum: Int)
    case truncated(expected: Int, read: Int)

    public var description: String {
        switch self {
        case .system(let operation, let code):
            return "credd could not keep its credential state in memory: \(operation) failed with "
                + "\(errnoText(code)); credentials will be fetched again after a restart."
        case .notSealed(let seals):
            let found = seals.map { "seals 0x\(String($0, radix: 16))" } ?? "no seals (not a sealable memfd)"
            return "The stored credential state from systemd's fd store has \(found), not the write, grow, "
                + "shrink and seal seals credd sets; it is ignored and credentials will be fetched again."
        case .tooLarge(let size, let maximum):
            return "The stored credential state from systemd's fd store is \(size) bytes, more than the "
                + "\(maximum) credd accepts; it is ignored and credentials will be fetched again."
        case .truncated(let expected, let read):
            return "The stored credential state from systemd's fd store ended after \(read) of \(expected) "
                + "bytes; it is ignored and credentials will be fetched again."
        }
    }
}
