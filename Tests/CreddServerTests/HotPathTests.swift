// The hot path: a request that repeats the last one byte for byte is answered by the connection's first handler,
// and the read it came in ends there; back-pressure still holds; a served set's observer leaves with the set.
@testable import CreddCore
@testable import CreddServer
import CreddTestSupport
import Foundation
import Logging
import NIOCore
import NIOEmbedded
import Testing

@Suite struct HotPathTests {
    static let token = "hot-path-token-0123456789abcdefghijklmnop"

    /// Where the socket would be: counts the reads and flushes that reach it.
    final class SocketEnd: ChannelOutboundHandler {
        typealias OutboundIn = NIOAny
        var reads = 0
        var flushes = 0
        func read(context: ChannelHandlerContext) {
            reads += 1
            context.read()
        }
        func flush(context: ChannelHandlerContext) {
            flushes += 1
            context.flush()
        }
    }

    /// Behind every credd handler: counts the read-complete events that pass them all.
    final class Tail: ChannelInboundHandler {
        typealias InboundIn = NIOAny
        var readCompletes = 0
        func channelReadComplete(context: ChannelHandlerContext) { readCompletes += 1 }
    }

    struct Connection {
        let channel: EmbeddedChannel
        let socket: SocketEnd
        let tail: Tail
        let state: ServingStateBox
        let set: CredentialSet

        func send(_ text: String) throws -> String {
            try channel.writeInbound(ByteBuffer(string: text))
            var answers = ""
            while let out = try channel.readOutbound(as: ByteBuffer.self) { answers += String(buffer: out) }
            return answers
        }
    }

    static func policy(token: String) -> AccessPolicy {
        AccessPolicy(token: Array(token.utf8), tokenFile: "/test/token", access: AccessConfig(allowUids: [], allowGids: []), sets: [], setTokens: [:])
    }

    static func servingState(expiresIn: TimeInterval = 6 * 3600) async -> (ServingStateBox, CredentialSet) {
        let source = ScriptedSource(fallback: .failure(SourceError(code: "Test", message: "no upstream in this test.")))
        let set = CredentialSet(name: "default", source: source, logger: InMemoryLog().logger())
        let credentials = testCredentials(expiresIn: expiresIn, now: Date())
        await set.adopt(credentials, servedExpiration: credentials.expiration)
        let state = ServingState(
            sets: ["default": ServedSet(name: "default", view: set.view)], access: policy(token: token), policy: .standard,
            server: ServerConfig(), auditEnabled: false)
        return (ServingStateBox(state), set)
    }

    static func connect(expiresIn: TimeInterval = 6 * 3600) async throws -> Connection {
        let (state, set) = await servingState(expiresIn: expiresIn)
        let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
        let listener = ListenerContext(
            transport: .tcp, state: state, audit: AuditLog(logger: logger),
            statusProvider: { StatusDocument(pid: 1, startedAt: Date(timeIntervalSince1970: 0), config: "test", sets: []) },
            connections: ConnectionCounter(limit: 10), logger: logger)
        let channel = EmbeddedChannel()
        let socket = SocketEnd()
        let tail = Tail()
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(socket)
        try CredentialsListener.addHandlers(
            to: sync, listener: listener, activity: ConnectionActivity(headerTimeout: .seconds(10), idleTimeout: .seconds(300)))
        try sync.addHandler(tail)
        try await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9702)).get()
        return Connection(channel: channel, socket: socket, tail: tail, state: state, set: set)
    }

    static let request = "GET /v1/credentials HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: \(token)\r\n\r\n"

    @Test func aRepeatedRequestIsAnsweredAtTheFrontAndTheReadEndsThere() async throws {
        let c = try await Self.connect()
        let first = try c.send(Self.request)
        #expect(first.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(first.contains("\"AccessKeyId\":\"ASIATESTKEY000000001\""))
        #expect(c.tail.readCompletes == 1, "the first request is decoded")
        let (reads, flushes) = (c.socket.reads, c.socket.flushes)

        for n in 1...3 {
            #expect(try c.send(Self.request) == first, "repeat \(n) is answered as the first")
            #expect(c.tail.readCompletes == 1, "repeat \(n): the read ended at the first handler")
            #expect(c.socket.flushes == flushes + n, "repeat \(n): the answer was sent")
            #expect(c.socket.reads == reads + n, "repeat \(n): the next read was asked for")
        }
        _ = try c.channel.finish()
    }

    @Test func anyOtherRequestGoesThroughTheDecoderAsBefore() async throws {
        let c = try await Self.connect()
        _ = try c.send(Self.request)
        _ = try c.send(Self.request)
        #expect(c.tail.readCompletes == 1)
        // Another request, then two repeats of the first in one read (pipelined): decoded, answered in order.
        let health = try c.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        #expect(health.hasPrefix("HTTP/1.1 200 OK\r\n") && health.contains("\"status\":\"ok\""))
        #expect(c.tail.readCompletes == 2)
        let two = try c.send(Self.request + Self.request)
        #expect(two.components(separatedBy: "HTTP/1.1 200 OK\r\n").count == 3)
        #expect(c.tail.readCompletes == 3)
        // The same request with another token is not a repeat: refused, and the connection closed.
        let other = try c.send(Self.request.replacingOccurrences(of: Self.token, with: String(Self.token.reversed())))
        #expect(other.hasPrefix("HTTP/1.1 403 "))
        #expect(c.tail.readCompletes == 4)
        #expect(!c.channel.isActive)
    }

    @Test func whileAnswersCannotBeSentNoReadIsAskedForUntilTheyCan() async throws {
        let c = try await Self.connect()
        let first = try c.send(Self.request)
        _ = try c.send(Self.request)
        let reads = c.socket.reads

        c.channel.isWritable = false
        c.channel.pipeline.fireChannelWritabilityChanged()
        #expect(try c.send(Self.request) == first, "still answered")
        #expect(c.socket.reads == reads, "no read asked for while the peer does not take its answers")
        c.channel.read()  // what NIO asks for after a read, from the pipeline's tail
        #expect(c.socket.reads == reads, "held by the back-pressure handler")

        c.channel.isWritable = true
        c.channel.pipeline.fireChannelWritabilityChanged()
        #expect(c.socket.reads == reads + 1, "the held read goes out once the answers can be sent")
        #expect(try c.send(Self.request) == first)
        #expect(c.socket.reads == reads + 2)
        _ = try c.channel.finish()
    }

    @Test func aRepeatGetsTheNewCredentialsOnceTheyArePublished() async throws {
        let c = try await Self.connect()
        _ = try c.send(Self.request)
        #expect(try c.send(Self.request).contains("\"AccessKeyId\":\"ASIATESTKEY000000001\""))
        let next = testCredentials(key: "ASIATESTKEY000000002", expiresIn: 6 * 3600, now: Date())
        await c.set.adopt(next, servedExpiration: next.expiration)
        let answer = try c.send(Self.request)
        #expect(answer.hasPrefix("HTTP/1.1 200 OK\r\n") && answer.contains("\"AccessKeyId\":\"ASIATESTKEY000000002\""))
        #expect(c.tail.readCompletes == 1, "still answered at the front")
        _ = try c.channel.finish()
    }

    @Test func aRepeatIsCheckedAgainstANewServingState() async throws {
        let c = try await Self.connect()
        _ = try c.send(Self.request)
        #expect(try c.send(Self.request).hasPrefix("HTTP/1.1 200 OK\r\n"))
        // A reload that rotates the token: the very bytes that were allowed are refused now.
        let old = c.state.current
        c.state.replace(
            ServingState(sets: old.sets, access: Self.policy(token: "rotated-token-abcdefghijklmnopqrstuvwxyz0123"), policy: old.policy,
                server: old.server, auditEnabled: false))
        #expect(try c.send(Self.request).hasPrefix("HTTP/1.1 403 "))
    }

    @Test func aRepeatIsRefusedOnceItsCredentialsAreTooCloseToExpiry() async throws {
        // Served while more than the policy's minimum lifetime (60 s) is left, for about half a second.
        let c = try await Self.connect(expiresIn: timeInterval(RefreshPolicy.standard.minimumServedLifetime) + 0.5)
        _ = try c.send(Self.request)
        #expect(try c.send(Self.request).hasPrefix("HTTP/1.1 200 OK\r\n"))
        try await Task.sleep(for: .seconds(0.7))
        let answer = try c.send(Self.request)
        #expect(answer.hasPrefix("HTTP/1.1 503 "), "\(answer.prefix(40))")
        _ = try c.channel.finish()
    }

    @Test func aServedSetThatGoesTakesItsObserverAlong() async throws {
        let (state, set) = await Self.servingState()
        #expect(set.view.publishObserverCount == 1)
        weak let served = state.current.sets["default"]
        state.replace(ServingState(sets: [:], access: state.current.access, policy: .standard, server: ServerConfig(), auditEnabled: false))
        #expect(served == nil, "the observer does not keep the set")
        #expect(set.view.publishObserverCount == 0, "and leaves with it")
        let next = testCredentials(key: "ASIATESTKEY000000002", expiresIn: 6 * 3600, now: Date())
        await set.adopt(next, servedExpiration: next.expiration)  // a new generation with no observer left
        #expect(set.view.served?.credentials.accessKeyId == "ASIATESTKEY000000002")
    }
}
