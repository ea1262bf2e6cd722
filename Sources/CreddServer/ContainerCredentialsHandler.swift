// The request path: validate, check access, write the prepared answer. Handlers only read state.
import CreddCore
import Foundation
import Logging
import NIOCore
import NIOHTTP1

/// Limits and context shared by every connection of a listener.
public struct ListenerContext: Sendable {
    public enum Transport: Sendable { case unix, tcp }
    public var transport: Transport
    public var state: ServingStateBox
    public var audit: AuditLog
    public var statusProvider: @Sendable () -> StatusDocument
    public var metricsProvider: (@Sendable () -> String)?
    public var metrics: CreddMetrics? = nil  // metrics: request counters (Metrics.swift)
    public var connections: ConnectionCounter
    public var logger: Logger

    public init(
        transport: Transport, state: ServingStateBox, audit: AuditLog, statusProvider: @escaping @Sendable () -> StatusDocument,
        metricsProvider: (@Sendable () -> String)? = nil, connections: ConnectionCounter, logger: Logger
    ) {
        self.transport = transport
        self.state = state
        self.audit = audit
        self.statusProvider = statusProvider
        self.metricsProvider = metricsProvider
        self.connections = connections
        self.logger = logger
    }
}

/// `struct ucred` (SO_PEERCRED); Glibc hides it without _GNU_SOURCE.
struct PeerCredentials: Sendable {
    var pid: Int32 = 0
    var uid: UInt32 = 0
    var gid: UInt32 = 0
}

/// Largest request head accepted (431 above).
let maximumHeaderBytes = 8 * 1024

/// The request headers the hygiene checks read, recognised without allocating (names are ASCII, case-insensitive).
enum CheckedHeader {
    case host, authorization, origin, contentLength, transferEncoding

    init?(_ name: String) {
        switch name.utf8.count {
        case 4 where Self.equalsLowercased(name, "host"): self = .host
        case 6 where Self.equalsLowercased(name, "origin"): self = .origin
        case 13 where Self.equalsLowercased(name, "authorization"): self = .authorization
        case 14 where Self.equalsLowercased(name, "content-length"): self = .contentLength
        case 17 where Self.equalsLowercased(name, "transfer-encoding"): self = .transferEncoding
        default: return nil
        }
    }

    /// `name` equals `lowercase` when ASCII capitals are folded; both have the same length here.
    static func equalsLowercased(_ name: String, _ lowercase: StaticString) -> Bool {
        var index = 0
        let expected = lowercase.utf8Start
        for byte in name.utf8 {
            guard index < lowercase.utf8CodeUnitCount else { return false }
            let folded = byte >= 0x41 && byte <= 0x5A ? byte | 0x20 : byte
            guard folded == expected[index] else { return false }
            index += 1
        }
        return index == lowercase.utf8CodeUnitCount
    }
}

/// What credd makes of a request head before reading any state: the hygiene verdict, the route, the values the
/// access check needs. A function of the head alone, so a request repeated byte for byte is not decoded again.
struct RequestFacts {
    let keepAlive: Bool
    let isHead: Bool
    let authorization: String?
    private(set) var outcome: Result<Route, HTTPError>
    private(set) var rejectionKeepsAlive: Bool
    private(set) var metricsRoute: MetricsRoute
    /// The Host value, when it named loopback (the handler remembers it to skip the check next time).
    private(set) var loopbackHost: String?

    init(_ head: HTTPRequestHead, knownLoopbackHost: String?) {
        let keepAlive = head.isKeepAlive
        self.keepAlive = keepAlive
        if case .HEAD = head.method { isHead = true } else { isHead = false }
        // Request hygiene first: size, body, duplicate or hostile headers.
        var headerBytes = head.uri.utf8.count + 16
        var hosts = 0
        var authorizations = 0
        var host: String?
        var authorization: String?
        var hasOrigin = false
        var hasBody = false
        for (name, value) in head.headers {
            headerBytes += name.utf8.count + value.utf8.count + 4
            switch CheckedHeader(name) {
            case .host:
                hosts += 1
                host = value
            case .authorization:
                authorizations += 1
                authorization = value
            case .origin: hasOrigin = true
            case .contentLength: hasBody = hasBody || value != "0"
            case .transferEncoding: hasBody = true
            case nil: break
            }
        }
        self.authorization = authorization
        loopbackHost = nil
        metricsRoute = .other
        rejectionKeepsAlive = keepAlive
        if headerBytes > maximumHeaderBytes {
            outcome = .failure(HTTPError(.requestHeaderFieldsTooLarge, "HeadersTooLarge", "the request headers exceed \(maximumHeaderBytes) bytes.", close: true))
            rejectionKeepsAlive = false
            return
        }
        if hasBody {
            outcome = .failure(HTTPError(.badRequest, "UnexpectedBody", "requests to credd carry no body.", close: true))
            rejectionKeepsAlive = false
            return
        }
        if hosts > 1 || authorizations > 1 {
            outcome = .failure(HTTPError(.badRequest, "DuplicateHeader", "the request repeats the \(hosts > 1 ? "Host" : "Authorization") header.", close: true))
            rejectionKeepsAlive = false
            return
        }
        if hasOrigin {
            outcome = .failure(HTTPError(.forbidden, "ForbiddenOrigin", "requests with an Origin header (browsers) are refused."))
            return
        }
        if let host, host != knownLoopbackHost {
            guard AccessPolicy.isLoopbackHost(host) else {
                outcome = .failure(HTTPError(.forbidden, "ForbiddenHost", "the Host header must name a loopback address (127.0.0.1, ::1 or localhost)."))
                return
            }
            loopbackHost = host
        }
        let route: Route
        if case .GET = head.method, head.uri == "/v1/credentials" {
            route = .credentials(set: "default")  // what Router.route answers, for the request nearly every SDK sends
        } else {
            switch Router.route(method: head.method, uri: head.uri) {
            case .success(let r): route = r
            case .failure(let e):
                outcome = .failure(e)
                return
            }
        }
        outcome = .success(route)
        metricsRoute = MetricsRoute(route)
    }
}

/// The last request a connection sent alone in one read (its bytes, the head the decoder made of them, and
/// the facts). The same bytes again, read at a message boundary, are the same request.
/// A class: taking it for a repeated request costs one retain, not one per field.
final class RepeatedRequest {
    let bytes: ByteBuffer
    let head: HTTPRequestHead
    let facts: RequestFacts
    init(bytes: ByteBuffer, head: HTTPRequestHead, facts: RequestFacts) {
        self.bytes = bytes
        self.head = head
        self.facts = facts
    }
}

/// What a repeated credentials request was answered from: the set and its prepared answer, and the policy of
/// the serving state whose access check allowed the request's very bytes, with the replacement counts of both
/// as read before them. While both counts stay the same, so does the answer (servability aside: the clock).
/// A class: taking it costs one retain.
final class HotAnswer {
    let request: RepeatedRequest
    let stateReplacements: UInt64
    let set: ServedSet
    let setReplacements: UInt64
    let prepared: ServedSet.Prepared
    let policy: RefreshPolicy
    let auditEnabled: Bool
    init(
        request: RepeatedRequest, stateReplacements: UInt64, set: ServedSet, setReplacements: UInt64, prepared: ServedSet.Prepared,
        policy: RefreshPolicy, auditEnabled: Bool
    ) {
        self.request = request
        self.stateReplacements = stateReplacements
        self.set = set
        self.setReplacements = setReplacements
        self.prepared = prepared
        self.policy = policy
        self.auditEnabled = auditEnabled
    }
}

/// Answers container-credentials requests on one connection, in order, with keep-alive.
final class ContainerCredentialsHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = ByteBuffer

    private let listener: ListenerContext
    private let activity: ConnectionActivity
    private var peer: Peer = .tcp(remote: "?")
    private var unit: String?
    private var needsFlush = false
    private var closeAfterFlush = false
    /// A request waiting for a set's first credentials; later pipelined parts queue behind it.
    private var waiting = false
    private var queued: [HTTPServerRequestPart] = []
    private var discardingBody = false
    private var metricsRoute = MetricsRoute.other  // metrics: the route label of the answer being written
    /// The last Host value found to name loopback: a client repeats its own on every request.
    private var loopbackHost: String?
    /// The last credential request allowed on this connection: under the same state, for the same set and the
    /// same Authorization value (one the policy accepted), the answer is the same. Any change checks again.
    private var allowed: (snapshot: ServingStateBox.Snapshot, set: ServedSet, authorization: String?)?
    /// The answer to this connection's repeated credentials request, while nothing it came from was replaced.
    private var hot: HotAnswer?
    /// The request counters of the set this connection asked for last.
    private var requestCounters: CreddMetrics.SetRequestCounters?
    /// This event loop's audit batch, when audit lines bypass the logger, and this connection's line.
    private var auditBatch: AuditBatch?
    private var auditTemplate: AuditLineTemplate?

    init(listener: ListenerContext, activity: ConnectionActivity) {
        self.listener = listener
        self.activity = activity
    }

    func handlerAdded(context: ChannelHandlerContext) {
        auditBatch = listener.audit.batch(on: context.eventLoop)
        activity.responder = self
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        activity.responder = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        switch listener.transport {
        case .tcp:
            peer = .tcp(remote: context.channel.remoteAddress.map { "\($0.ipAddress ?? "?"):\($0.port ?? 0)" } ?? "?")
        case .unix:
            // Unknown until SO_PEERCRED answers: nobody, whom no rule allows. On the channel's own loop the
            // option is read synchronously, before any request.
            peer = .unix(uid: UInt32.max, gid: UInt32.max, pid: 0, groups: [])
            if let provider = context.channel as? any SocketOptionProvider {
                provider.unsafeGetSocketOption(level: .socket, name: NIOBSDSocket.Option(rawValue: SO_PEERCRED))
                    .assumeIsolated()
                    .whenSuccess { (cred: PeerCredentials) in
                        self.peer = .unix(uid: cred.uid, gid: cred.gid, pid: cred.pid, groups: Self.supplementaryGroups(pid: cred.pid))
                        self.unit = AuditLog.unitOf(pid: cred.pid)
                        self.auditTemplate = nil
                        self.allowed = nil
                        self.hot = nil
                    }
            }
        }
        context.fireChannelActive()
    }

    /// The caller's supplementary groups, for `allow_gids` (SO_PEERCRED carries only the primary group).
    static func supplementaryGroups(pid: Int32) -> [UInt32] {
        guard pid > 0, let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return [] }
        for line in text.split(separator: "\n") where line.hasPrefix("Groups:") {
            return line.dropFirst("Groups:".count).split(whereSeparator: { $0 == " " || $0 == "\t" }).compactMap { UInt32($0) }
        }
        return []
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        activity.notePart(part)
        if waiting || closeAfterFlush {
            if !closeAfterFlush { queued.append(part) }
            return
        }
        handle(part, context: context)
    }

    private func handle(_ part: HTTPServerRequestPart, context: ChannelHandlerContext) {
        switch part {
        case .head(let head):
            activity.receiving = false
            respond(to: head, context: context)
        case .body:
            break
        case .end:
            discardingBody = false
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flushIfNeeded(context: context)
        activity.rearmIfReceiving()
        context.fireChannelReadComplete()
    }

    private func flushIfNeeded(context: ChannelHandlerContext) {
        if needsFlush {
            needsFlush = false
            if closeAfterFlush {
                context.writeAndFlush(wrapOutboundOut(ByteBuffer()), promise: nil)
                context.close(promise: nil)
            } else {
                context.flush()
            }
        }
    }

    private func write(_ buffer: ByteBuffer, context: ChannelHandlerContext, close: Bool) {
        context.write(wrapOutboundOut(buffer), promise: nil)
        listener.metrics?.answered(metricsRoute, response: buffer)  // metrics
        needsFlush = true
        if close { closeAfterFlush = true }
    }

    private func fail(_ error: HTTPError, keepAlive: Bool, context: ChannelHandlerContext) {
        let answer = ResponseBytes.error(error, keepAlive: keepAlive)
        // A HEAD answer has no body, errors included, or a kept-alive connection would read it as the next answer.
        write(answeringHead ? ResponseBytes.headOnly(answer) : answer, context: context, close: !keepAlive || error.closeConnection)
    }

    /// Whether the request being answered is a HEAD.
    private var answeringHead = false

    private func respond(to head: HTTPRequestHead, context: ChannelHandlerContext) {
        let facts = RequestFacts(head, knownLoopbackHost: loopbackHost)
        activity.noteHead(head, facts: facts)
        if let host = facts.loopbackHost { loopbackHost = host }
        answer(facts, head: head, context: context)
    }

    /// Answers a request whose bytes repeat, exactly, the last request this connection sent alone in one
    /// read: the decoder would make the same head of them, so what credd made of it holds (`RequestFacts`).
    /// The answer is written on `front`, the context of the handler that recognised the bytes (first in the
    /// pipeline: the write goes straight to the socket's end), and goes out with `flushAnswers(front:)`.
    ///
    /// A repeat of the request answered from `hot` with nothing changed since gets the same answer without
    /// the state's lock, the access check or the set's lookup: only its servability (the clock), the audit
    /// line, the metrics and the write.
    func answerRepeated(_ request: RepeatedRequest, front: ChannelHandlerContext) {
        let stateReplacements = listener.state.replacements
        if let hot, hot.request === request, hot.stateReplacements == stateReplacements,
            hot.set.replacements == hot.setReplacements,
            hot.policy.isServable(expiration: hot.prepared.servedExpiration, now: Date())
        {
            audit(set: hot.set.name, status: 200, key: hot.prepared.keySuffix, auditEnabled: hot.auditEnabled)
            write(hot.prepared.response, context: front, close: false)
            return
        }
        hot = nil
        answer(request.facts, head: request.head, context: front, repeated: (request, stateReplacements))
    }

    /// Sends what `answerRepeated` wrote, at the end of a read the decoder and this handler never saw.
    func flushAnswers(front: ChannelHandlerContext) {
        flushIfNeeded(context: front)
    }

    /// Whether a read may be answered from `RepeatedRequest` now: nothing waits or queues before it. Asked
    /// through `activity.responder`, which is set only while this handler is in an open connection's pipeline.
    var readyForRepeat: Bool { !waiting && !closeAfterFlush && queued.isEmpty }

    private func answer(
        _ facts: RequestFacts, head: HTTPRequestHead, context: ChannelHandlerContext,
        repeated: (request: RepeatedRequest, stateReplacements: UInt64)? = nil
    ) {
        let keepAlive = facts.keepAlive
        answeringHead = facts.isHead
        metricsRoute = .other  // metrics
        let route: Route
        switch facts.outcome {
        case .failure(let error): return fail(error, keepAlive: facts.rejectionKeepsAlive, context: context)
        case .success(let r): route = r
        }
        let authorization = facts.authorization
        metricsRoute = facts.metricsRoute  // metrics
        let state = listener.state.snapshot
        switch route {
        case .credentials(let name):
            let set: ServedSet
            if let allowed, allowed.snapshot === state, allowed.set.name == name, allowed.authorization == authorization {
                set = allowed.set  // allowed before on this connection, by this policy, with this very value
            } else {
                guard let named = state.sets[name] else {
                    return fail(HTTPError(.notFound, "UnknownSet", "no credential set named \"\(name)\" is configured."), keepAlive: keepAlive, context: context)
                }
                if let denied = state.access.check(set: name, peer: peer, authorization: authorization) {
                    audit(set: name, status: denied.reason == .missingToken ? 401 : 403, key: nil, auditEnabled: state.auditEnabled)
                    return fail(HTTPError(denied), keepAlive: keepAlive, context: context)
                }
                set = named
                allowed = (state, named, authorization)
            }
            answerCredentials(set: set, state: state, head: head, keepAlive: keepAlive, context: context, mayWait: true, repeated: repeated)
        case .health:
            answerHealth(state: state, head: head, keepAlive: keepAlive, context: context)
        case .status:
            if let denied = state.access.check(set: nil, peer: peer, authorization: authorization) {
                return fail(HTTPError(denied), keepAlive: keepAlive, context: context)
            }
            let doc = listener.statusProvider()
            let body = (try? StatusDocument.encoder().encode(doc)) ?? Data()
            write(maybeHead(ResponseBytes.ok(body: body, keepAlive: keepAlive), head), context: context, close: !keepAlive)
        case .metrics:
            if let denied = state.access.check(set: nil, peer: peer, authorization: authorization) {
                return fail(HTTPError(denied), keepAlive: keepAlive, context: context)
            }
            guard let metrics = listener.metricsProvider else {
                return fail(HTTPError(.notFound, "NotFound", "metrics are not enabled."), keepAlive: keepAlive, context: context)
            }
            let text = Array(metrics().utf8)
            write(maybeHead(ResponseBytes.ok(body: text, contentType: "text/plain; version=0.0.4; charset=utf-8", keepAlive: keepAlive), head), context: context, close: !keepAlive)
        }
    }

    private func maybeHead(_ buffer: ByteBuffer, _ head: HTTPRequestHead) -> ByteBuffer {
        if case .HEAD = head.method { return ResponseBytes.headOnly(buffer) }
        return buffer
    }

    private func audit(set: String, status: UInt, key: String?, auditEnabled: Bool) {
        if let metrics = listener.metrics {  // metrics
            if requestCounters?.name != set { requestCounters = metrics.requestCounters(set: set) }
            requestCounters?.count(status: status)
        }
        guard auditEnabled else { return }
        if let auditBatch {
            if auditTemplate == nil { auditTemplate = auditBatch.template(peer: peer, unit: unit) }
            auditBatch.append(auditTemplate!, set: set, status: status, keySuffix: key)
        } else {
            listener.audit.record(peer: peer, unit: unit, set: set, status: status, keySuffix: key)
        }
    }

    private func answerCredentials(
        set: ServedSet, state: ServingStateBox.Snapshot, head: HTTPRequestHead, keepAlive: Bool, context: ChannelHandlerContext, mayWait: Bool,
        repeated: (request: RepeatedRequest, stateReplacements: UInt64)? = nil
    ) {
        let policy = state.policy
        let setReplacements = set.replacements  // before the answer: a replacement after it makes the count differ
        if let prepared = set.current, policy.isServable(expiration: prepared.servedExpiration, now: Date()) {
            let auditEnabled = state.auditEnabled
            audit(set: set.name, status: 200, key: prepared.keySuffix, auditEnabled: auditEnabled)
            if case .GET = head.method, keepAlive, head.version.minor == 1 {
                if let (request, stateReplacements) = repeated {
                    hot = HotAnswer(
                        request: request, stateReplacements: stateReplacements, set: set, setReplacements: setReplacements,
                        prepared: prepared, policy: policy, auditEnabled: auditEnabled)
                }
                write(prepared.response, context: context, close: false)  // the hot path: bytes prepared once
            } else {
                var buffer = prepared.response
                if !keepAlive || head.version.minor == 0 {
                    buffer = Self.withConnectionHeader(prepared.response, keepAlive: keepAlive)
                }
                write(maybeHead(buffer, head), context: context, close: !keepAlive)
            }
            return
        }
        // No servable credentials: at a cold start wait briefly for the first fetch, else 503.
        if mayWait {
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            let eventLoop = context.eventLoop
            let fired = NIOLoopBoundBox(false, eventLoop: eventLoop)
            let resume: @Sendable () -> Void = {
                eventLoop.execute {
                    guard !fired.value else { return }
                    fired.value = true
                    let (handler, ctx) = loopBound.value
                    handler.resumeAfterWait(set: set, head: head, keepAlive: keepAlive, context: ctx)
                }
            }
            if set.view.waitForFirstResult(resume) {
                waiting = true
                eventLoop.scheduleTask(in: .nanoseconds(Int64(timeInterval(state.server.coldStartWait) * 1e9))) { resume() }
                return
            }
        }
        let error = HTTPError.unavailable(set: set.name, status: set.view.status)
        audit(set: set.name, status: 503, key: nil, auditEnabled: state.auditEnabled)
        fail(error, keepAlive: keepAlive, context: context)
    }

    private func resumeAfterWait(set: ServedSet, head: HTTPRequestHead, keepAlive: Bool, context: ChannelHandlerContext) {
        guard context.channel.isActive else { return }
        waiting = false
        answerCredentials(set: set, state: listener.state.snapshot, head: head, keepAlive: keepAlive, context: context, mayWait: false)
        // Requests pipelined behind the waiting one, in order.
        while !queued.isEmpty && !waiting && !closeAfterFlush {
            handle(queued.removeFirst(), context: context)
        }
        flushIfNeeded(context: context)
    }

    static func withConnectionHeader(_ response: ByteBuffer, keepAlive: Bool) -> ByteBuffer {
        var out = ByteBufferAllocator().buffer(capacity: response.readableBytes + 24)
        let view = response.readableBytesView
        guard let firstLineEnd = view.firstRange(of: [0x0D, 0x0A]) else { return response }
        let split = firstLineEnd.upperBound - view.startIndex
        out.writeBytes(view.prefix(split))
        out.writeString(keepAlive ? "Connection: keep-alive\r\n" : "Connection: close\r\n")
        out.writeBytes(view.dropFirst(split))
        return out
    }

    private func answerHealth(state: ServingStateBox.Snapshot, head: HTTPRequestHead, keepAlive: Bool, context: ChannelHandlerContext) {
        guard let set = state.sets["default"] else {
            return fail(HTTPError(.serviceUnavailable, "NoDefaultSet", "no credential set named \"default\" is configured.", retryAfter: 30), keepAlive: keepAlive, context: context)
        }
        if let prepared = set.current, state.policy.isServable(expiration: prepared.servedExpiration, now: Date()) {
            let seconds = Int(prepared.servedExpiration.timeIntervalSinceNow)
            let body = Array("{\"status\":\"ok\",\"set\":\"default\",\"expiresInSeconds\":\(seconds)}".utf8)
            write(maybeHead(ResponseBytes.ok(body: body, keepAlive: keepAlive), head), context: context, close: !keepAlive)
        } else {
            fail(HTTPError.unavailable(set: "default", status: set.view.status), keepAlive: keepAlive, context: context)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let parserError = error as? HTTPParserError {
            let e: HTTPError
            switch parserError {
            case .headerOverflow:
                e = HTTPError(.requestHeaderFieldsTooLarge, "HeadersTooLarge", "the request headers are too large.", close: true)
            case .invalidMethod, .invalidVersion, .invalidURL, .invalidConstant, .unknown:
                e = HTTPError(.badRequest, "MalformedRequest", "the request line is not valid HTTP/1.1.", close: true)
            default:
                e = HTTPError(.badRequest, "MalformedRequest", "the request is not valid HTTP/1.1 (\(parserError)).", close: true)
            }
            context.writeAndFlush(wrapOutboundOut(ResponseBytes.error(e, keepAlive: false)), promise: nil)
        }
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        queued.removeAll()
        activity.responder = nil
        context.fireChannelInactive()
    }
}

/// Per-connection timing for slowloris and idle limits, fed by `ActivityTracker` before the decoder.
final class ConnectionActivity {
    var receiving = false
    var since = NIODeadline.now()
    var lastActivity = NIODeadline.now()
    private let headerTimeout: TimeAmount
    private let idleTimeout: TimeAmount
    private var check: Scheduled<Void>?
    private var checkAt: NIODeadline = .distantFuture
    private var channel: (any Channel)?

    /// The connection's handler, while it is in the pipeline (set and cleared by the handler).
    var responder: ContainerCredentialsHandler?
    /// The last request sent alone in one read, and whether the decoder stands between two messages now.
    private var repeated: RepeatedRequest?
    private var atBoundary = true
    /// What the decoder passed on during the current read.
    private var headsThisRead = 0
    private var endsThisRead = 0
    private var lastPartWasEnd = false
    private var headThisRead: (head: HTTPRequestHead, facts: RequestFacts)?

    init(headerTimeout: TimeAmount, idleTimeout: TimeAmount) {
        self.headerTimeout = headerTimeout
        self.idleTimeout = idleTimeout
    }

    func start(channel: any Channel) {
        self.channel = channel
        receiving = true  // the first request's head is due within headerTimeout of connecting
        since = .now()
        lastActivity = since
        schedule(at: since + headerTimeout)
    }

    func stop() {
        check?.cancel()
        check = nil
        channel = nil
        repeated = nil
        headThisRead = nil
    }

    func notePart(_ part: HTTPServerRequestPart) {
        switch part {
        case .head:
            headsThisRead += 1
            lastPartWasEnd = false
        case .body:
            lastPartWasEnd = false
        case .end:
            endsThisRead += 1
            lastPartWasEnd = true
        }
    }

    func noteHead(_ head: HTTPRequestHead, facts: RequestFacts) {
        headThisRead = (head, facts)
    }

    /// The request `bytes` repeat, when they are byte for byte the last request sent alone in one read and the
    /// decoder is between two messages: a pure function of the bytes, it would decode to the same head.
    func repeatedRequest(_ bytes: ByteBuffer) -> RepeatedRequest? {
        guard atBoundary, let repeated, repeated.bytes == bytes else { return nil }
        return repeated
    }

    func beginRead() {
        headsThisRead = 0
        endsThisRead = 0
        lastPartWasEnd = false
        headThisRead = nil
    }

    /// After the decoder and the handler went through `bytes`: does the decoder stand between two messages (the
    /// read ended with a whole message, and a head only ends at its empty line: credd refuses bodies), and was
    /// this read one whole request, worth remembering?
    func endRead(_ bytes: ByteBuffer) {
        let wasAtBoundary = atBoundary
        let endsWithEmptyLine = bytes.readableBytes >= 4
            && bytes.getInteger(at: bytes.writerIndex - 4, as: UInt32.self) == 0x0D0A_0D0A
        atBoundary = lastPartWasEnd && endsWithEmptyLine && (responder?.readyForRepeat ?? false)
        if atBoundary && wasAtBoundary && headsThisRead == 1 && endsThisRead == 1, let (head, facts) = headThisRead,
            bytes.readableBytes <= maximumHeaderBytes, repeated?.bytes != bytes
        {
            var copy = ByteBufferAllocator().buffer(capacity: bytes.readableBytes)
            copy.writeImmutableBuffer(bytes)  // not the read buffer itself: NIO reuses it when no one holds it
            repeated = RepeatedRequest(bytes: copy, head: head, facts: facts)
        }
        headThisRead = nil
    }

    /// After a read that left a request head incomplete, make sure the check comes in time.
    func rearmIfReceiving() {
        if receiving && checkAt > since + headerTimeout { schedule(at: since + headerTimeout) }
    }

    private func schedule(at deadline: NIODeadline) {
        guard let channel else { return }
        check?.cancel()
        checkAt = deadline
        let bound = NIOLoopBound(self, eventLoop: channel.eventLoop)
        check = channel.eventLoop.scheduleTask(deadline: deadline) { bound.value.fire() }
    }

    private func fire() {
        guard let channel else { return }
        let now = NIODeadline.now()
        if receiving && now - since >= headerTimeout {
            channel.close(promise: nil)  // slowloris: the head did not complete in time
            return
        }
        if !receiving && now - lastActivity >= idleTimeout {
            channel.close(promise: nil)
            return
        }
        schedule(at: receiving ? since + headerTimeout : lastActivity + idleTimeout)
    }
}

/// The connection's first handler: notes when a request starts arriving (before the HTTP decoder sees a whole
/// head), and answers a request that repeats the last one byte for byte itself, so that its bytes never reach
/// the decoder.
///
/// A read made only of such repeats (an SDK asking again on a kept-alive connection: the hot path) ends here
/// too: the answers are written and flushed on this context, next to the socket's end of the pipeline, the
/// read-complete event stops here (the decoder and the handler behind it saw nothing to complete), and the
/// next read is asked for from here. Otherwise NIO asks for it from the pipeline's tail, through every handler;
/// when the answers filled the outbound buffer it still does, and the `BackPressureHandler` behind this one
/// holds that read until the peer takes its answers.
final class ActivityTracker: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    private let activity: ConnectionActivity
    private let counter: ConnectionCounter
    private var counted = false
    /// Since the last read-complete: whether a read went on to the decoder, and whether one was answered here.
    private var passedOn = false
    private var answered = false
    /// The channel's writability, as its events report it (asking the channel costs more on the hot path).
    private var writable = true

    init(activity: ConnectionActivity, counter: ConnectionCounter) {
        self.activity = activity
        self.counter = counter
    }

    func channelActive(context: ChannelHandlerContext) {
        if !counter.open() {
            context.close(promise: nil)
            return
        }
        counted = true
        activity.start(channel: context.channel)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if counted { counter.close(on: context.eventLoop) }
        counted = false
        activity.stop()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let bytes = unwrapInboundIn(data)
        if !activity.receiving, let responder = activity.responder, responder.readyForRepeat,
            let repeated = activity.repeatedRequest(bytes)
        {
            // The same request again (SDKs repeat theirs on a kept-alive connection): answered as before.
            activity.lastActivity = .now()
            answered = true
            responder.answerRepeated(repeated, front: context)
            return
        }
        passedOn = true
        if !activity.receiving {
            activity.receiving = true
            activity.since = .now()
            activity.lastActivity = activity.since
        }
        activity.beginRead()
        context.fireChannelRead(data)
        activity.endRead(bytes)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        guard answered && !passedOn else {
            passedOn = false
            answered = false
            context.fireChannelReadComplete()
            return
        }
        answered = false
        activity.responder?.flushAnswers(front: context)
        if writable {
            context.read()
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        writable = context.channel.isWritable
        context.fireChannelWritabilityChanged()
    }
}
