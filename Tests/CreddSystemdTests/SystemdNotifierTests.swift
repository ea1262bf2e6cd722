// sd_notify messages as systemd receives them, from a datagram socket this test binds as NOTIFY_SOCKET.
#if canImport(Glibc)
import Glibc
#endif
import Testing

@testable import CreddSystemd

/// Plays PID 1's notification socket: an AF_UNIX datagram socket, with fds taken from SCM_RIGHTS.
final class NotifySocket {
    let fd: Int32
    let path: String

    init() throws {
        path = "/tmp/credd-notify-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock"
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.utf8.enumerated() { raw[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        #expect(bound == 0)
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit {
        close(fd)
        unlink(path)
    }

    /// One datagram's text.
    func receive() -> (message: String, fds: [Int32])? {
        guard let received = receiveWithFDs() else { return nil }
        received.fds.forEach { close($0) }
        return received
    }

    /// One datagram's text and the fds that came with it (SCM_RIGHTS); the caller closes the fds.
    func receiveWithFDs() -> (message: String, fds: [Int32])? {
        var data = [UInt8](repeating: 0, count: 4096)
        var control = [UInt8](repeating: 0, count: 256)
        var fds: [Int32] = []
        let count = data.withUnsafeMutableBytes { dataBuffer in
            control.withUnsafeMutableBytes { controlBuffer -> Int in
                var vector = iovec(iov_base: dataBuffer.baseAddress, iov_len: dataBuffer.count)
                var header = msghdr()
                let received = withUnsafeMutablePointer(to: &vector) { vectorPointer in
                    header.msg_iov = vectorPointer
                    header.msg_iovlen = 1
                    header.msg_control = controlBuffer.baseAddress
                    header.msg_controllen = controlBuffer.count
                    return recvmsg(fd, &header, Int32(MSG_CMSG_CLOEXEC))
                }
                // Walk the control messages (CMSG_FIRSTHDR/CMSG_NXTHDR are macros, absent in Swift).
                let headerSize = MemoryLayout<cmsghdr>.size
                var offset = 0
                while received >= 0, offset + headerSize <= Int(header.msg_controllen) {
                    let cmsg = controlBuffer.loadUnaligned(fromByteOffset: offset, as: cmsghdr.self)
                    let length = Int(cmsg.cmsg_len)
                    if length < headerSize { break }
                    if cmsg.cmsg_level == SOL_SOCKET, cmsg.cmsg_type == Int32(SCM_RIGHTS) {
                        for index in 0..<(length - headerSize) / 4 {
                            fds.append(
                                controlBuffer.loadUnaligned(
                                    fromByteOffset: offset + headerSize + 4 * index, as: Int32.self))
                        }
                    }
                    offset += (length + 7) & ~7
                }
                return received
            }
        }
        guard count >= 0 else { return nil }
        return (String(decoding: data[0..<count], as: UTF8.self), fds)
    }
}

@Suite(.serialized) struct SystemdNotifierTests {
    @Test func everyCallIsANoOpWithoutNotifySocket() throws {
        unsetenv("NOTIFY_SOCKET")
        let notifier = SystemdNotifier()
        #expect(!notifier.isEnabled)
        #expect(try notifier.ready() == false)
        #expect(try notifier.status("x") == false)
        #expect(try notifier.watchdogPing() == false)
        #expect(try notifier.storeFD(0, name: "credd-state") == false)
        #expect(try notifier.removeFD(name: "credd-state") == false)
    }

    @Test func messagesReachTheNotifySocket() throws {
        let socket = try NotifySocket()
        setenv("NOTIFY_SOCKET", socket.path, 1)
        defer { unsetenv("NOTIFY_SOCKET") }
        let notifier = SystemdNotifier(monotonicMicroseconds: { 123_456 })
        #expect(try notifier.ready())
        #expect(socket.receive()?.message == "READY=1")
        try notifier.reloading()
        #expect(socket.receive()?.message == "RELOADING=1\nMONOTONIC_USEC=123456")
        try notifier.status("default: fresh, expires in 54m\ndev: needs `aws login`")
        #expect(socket.receive()?.message == "STATUS=default: fresh, expires in 54m; dev: needs `aws login`")
        try notifier.watchdogPing()
        #expect(socket.receive()?.message == "WATCHDOG=1")
        try notifier.stopping()
        #expect(socket.receive()?.message == "STOPPING=1")
        try notifier.removeFD(name: "credd-state")
        #expect(socket.receive()?.message == "FDSTOREREMOVE=1\nFDNAME=credd-state")
    }

    @Test func storedFdsTravelWithTheirName() throws {
        let socket = try NotifySocket()
        setenv("NOTIFY_SOCKET", socket.path, 1)
        defer { unsetenv("NOTIFY_SOCKET") }
        let payload = Array("{\"version\":1}".utf8)
        let memfd = try CredentialStateMemfd.create(payload)
        defer { close(memfd) }
        #expect(try SystemdNotifier().storeFD(memfd, name: "credd-state"))
        let received = try #require(socket.receiveWithFDs())
        #expect(received.message == "FDSTORE=1\nFDNAME=credd-state")
        #expect(received.fds.count == 1)
        for fd in received.fds {
            #expect(try CredentialStateMemfd.read(fd: fd) == payload)
            close(fd)
        }
    }

    @Test(arguments: ["", "a:b", "tab\there", String(repeating: "x", count: 256), "ü"])
    func invalidFdNamesAreRefused(name: String) {
        #expect(throws: SystemdError.invalidFDName(name)) {
            try SystemdNotifier().storeFD(0, name: name)
        }
    }

    @Test(arguments: ["credd-state", "credd-state.v1", String(repeating: "x", count: 255)])
    func validFdNamesPass(name: String) throws {
        try SystemdNotifier.validate(name: name)
    }

    @Test func watchdogIntervalFollowsWatchdogUsecAndPid() {
        defer {
            unsetenv("WATCHDOG_USEC")
            unsetenv("WATCHDOG_PID")
        }
        unsetenv("WATCHDOG_USEC")
        #expect(SystemdNotifier().watchdogInterval == nil)
        setenv("WATCHDOG_USEC", "30000000", 1)
        setenv("WATCHDOG_PID", "\(getpid())", 1)
        #expect(SystemdNotifier().watchdogInterval == .seconds(30))
        setenv("WATCHDOG_PID", "\(getpid() + 1)", 1)
        #expect(SystemdNotifier().watchdogInterval == nil)
    }

    // Here rather than with the listener tests: it sets environment variables, so it runs serialized.
    @Test func nothingPassedMeansBindFromConfig() throws {
        // LISTEN_PID names another process, so these fds are not ours to take.
        setenv("LISTEN_PID", "1", 1)
        setenv("LISTEN_FDS", "2", 1)
        defer {
            unsetenv("LISTEN_PID")
            unsetenv("LISTEN_FDS")
        }
        let listeners = try SystemdListeners.take(unsetEnvironment: false)
        #expect(listeners.isEmpty)
        #expect(listeners.stored.isEmpty)
    }
}
