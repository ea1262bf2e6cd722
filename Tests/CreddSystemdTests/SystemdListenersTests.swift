// Passed fds are told apart by FileDescriptorName= (and by kind when systemd gave no names).
#if canImport(Glibc)
import Glibc
#endif
import Testing

@testable import CreddSystemd

/// A listening socket of the given family on an ephemeral address, closed by the caller.
func listeningSocket(family: Int32) -> Int32 {
    let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    if family == AF_UNIX {
        // Autobind to an abstract address: nothing left on disk.
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sa_family_t>.size))
            }
        }
    } else {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
    }
    listen(fd, 8)
    return fd
}

@Suite struct SystemdListenersTests {
    @Test func namedSocketsAndStoreEntriesAreSeparated() throws {
        let unix = listeningSocket(family: AF_UNIX)
        let tcpA = listeningSocket(family: AF_INET)
        let tcpB = listeningSocket(family: AF_INET)
        let memfd = try CredentialStateMemfd.create([1])
        defer { [unix, tcpA, tcpB, memfd].forEach { close($0) } }
        let listeners = try SystemdListeners.classify([
            PassedFD(name: "tcp", fd: tcpA), PassedFD(name: "credd-state", fd: memfd),
            PassedFD(name: "unix", fd: unix), PassedFD(name: "tcp", fd: tcpB),
        ])
        #expect(listeners.unix == unix)
        #expect(listeners.tcp == [tcpA, tcpB])
        #expect(listeners.stored == [PassedFD(name: "credd-state", fd: memfd)])
        #expect(listeners.stored(named: "credd-state") == memfd)
        #expect(listeners.unknownSockets.isEmpty)
        #expect(!listeners.isEmpty)
    }

    @Test func unnamedSocketsAreNamedByAddressFamily() throws {
        let unix = listeningSocket(family: AF_UNIX)
        let tcp = listeningSocket(family: AF_INET)
        defer { [unix, tcp].forEach { close($0) } }
        let listeners = try SystemdListeners.classify([
            PassedFD(name: "unknown", fd: tcp), PassedFD(name: "unknown", fd: unix),
        ])
        #expect(listeners.unix == unix)
        #expect(listeners.tcp == [tcp])
    }

    @Test func otherNamesAreKeptApart() throws {
        let other = listeningSocket(family: AF_INET)
        var ends: [Int32] = [0, 0]
        #expect(pipe(&ends) == 0)
        defer { ([other] + ends).forEach { close($0) } }
        let listeners = try SystemdListeners.classify([
            PassedFD(name: "metrics", fd: other), PassedFD(name: "leftover", fd: ends[0]),
        ])
        #expect(listeners.unknownSockets == [PassedFD(name: "metrics", fd: other)])
        #expect(listeners.stored == [PassedFD(name: "leftover", fd: ends[0])])
    }

    @Test func aListenerNameOnSomethingElseIsAnError() throws {
        var ends: [Int32] = [0, 0]
        #expect(pipe(&ends) == 0)
        defer { ends.forEach { close($0) } }
        #expect(throws: SystemdError.notAListeningSocket(name: "tcp", fd: ends[0])) {
            try SystemdListeners.classify([PassedFD(name: "tcp", fd: ends[0])])
        }
    }
}
