import Metrics
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOTLS

/// How long an operator-port client may take at each step, and how many may be
/// connected at once. A slow or silent client must not hold a connection, a file
/// descriptor or buffered bytes for longer than these (issue 9).
public struct ConnectionLimits: Sendable, Equatable {
    /// Connections open at once; the next one is closed as soon as it is accepted.
    public var maxConnections: Int = 8192
    /// From accept to the end of the TLS handshake (TLS only).
    public var handshakeTimeout: Duration = .seconds(10)
    /// From a request's first byte to the end of its head (slowloris).
    public var headerTimeout: Duration = .seconds(10)
    /// From a request's head to the end of its body.
    public var bodyTimeout: Duration = .seconds(30)
    /// Without a request in progress (HTTP/2: without an open stream); also a fresh
    /// connection that sends nothing.
    public var idleTimeout: Duration = .seconds(60)

    public init() {}
}

/// The oldest TLS version the operator port accepts.
public enum APITLSVersion: String, Sendable, CaseIterable {
    /// TLS 1.2 with ECDHE and AEAD suites only, or TLS 1.3.
    case v1_2 = "1.2"
    case v1_3 = "1.3"
}

/// When a connection (or an HTTP/2 stream) must have made progress by, from what it
/// has done so far. Pure: every event carries the time, so it is tested without sockets.
///
/// The client's side (`reading`) and the server's side (`unanswered`) are kept apart:
/// a request being read is bounded by the header or body timeout, a request being
/// answered by nothing (that is the node's work), and a connection with neither by
/// the idle timeout.
struct ConnectionClock: Sendable, Equatable {
    enum Reason: String, Sendable, CaseIterable {
        case handshake, header, body, idle
    }

    struct Deadline: Sendable, Equatable {
        var reason: Reason
        var time: NIODeadline
    }

    enum Reading: Sendable, Equatable {
        case idle
        case head(since: NIODeadline)
        case body(since: NIODeadline)
    }

    private let handshakeTimeout: TimeAmount
    private let headerTimeout: TimeAmount
    private let bodyTimeout: TimeAmount
    private let idleTimeout: TimeAmount
    private let openedAt: NIODeadline
    private(set) var handshaking: Bool
    /// HTTP/2: bytes are frames, requests are streams.
    private(set) var framed = false
    private(set) var reading: Reading = .idle
    /// Requests received in full and not yet answered (HTTP/2: open streams).
    private(set) var unanswered = 0
    /// A response ended before its request did (413 before the body's end).
    private var answeredEarly = false
    private var quietSince: NIODeadline

    init(limits: ConnectionLimits, tls: Bool, now: NIODeadline) {
        handshakeTimeout = TimeAmount(limits.handshakeTimeout)
        headerTimeout = TimeAmount(limits.headerTimeout)
        bodyTimeout = TimeAmount(limits.bodyTimeout)
        idleTimeout = TimeAmount(limits.idleTimeout)
        openedAt = now
        quietSince = now
        handshaking = tls
    }

    var deadline: Deadline? {
        if handshaking { return Deadline(reason: .handshake, time: openedAt + handshakeTimeout) }
        switch reading {
        case .head(let since): return Deadline(reason: .header, time: since + headerTimeout)
        case .body(let since): return Deadline(reason: .body, time: since + bodyTimeout)
        case .idle: return unanswered == 0 ? Deadline(reason: .idle, time: quietSince + idleTimeout) : nil
        }
    }

    mutating func handshakeCompleted(now: NIODeadline) {
        guard handshaking else { return }
        handshaking = false
        quietSince = now
    }

    /// Bytes arrived: between requests, they begin the next request's head.
    mutating func bytesReceived(now: NIODeadline) {
        guard !handshaking, !framed, reading == .idle else { return }
        reading = .head(since: now)
    }

    mutating func requestHead(now: NIODeadline) {
        reading = .body(since: now)
    }

    mutating func requestEnd() {
        reading = .idle
        if answeredEarly { answeredEarly = false } else { unanswered += 1 }
    }

    mutating func responseEnd(now: NIODeadline) {
        if unanswered > 0 {
            unanswered -= 1
        } else if reading != .idle {
            answeredEarly = true
        }
        if unanswered == 0 { quietSince = now }
    }

    /// The connection speaks HTTP/2 from now on: idle means no open stream.
    mutating func becameHTTP2(now: NIODeadline) {
        framed = true
        reading = .idle
        unanswered = 0
        answeredEarly = false
        quietSince = now
    }

    mutating func streamOpened() {
        unanswered += 1
    }

    mutating func streamClosed(now: NIODeadline) {
        unanswered = max(0, unanswered - 1)
        if unanswered == 0 { quietSince = now }
    }
}

/// Counts open operator connections against the cap, and what was cut short, as
/// `ekc_http_connections_open`, `ekc_http_connections_refused_total` and
/// `ekc_http_connections_timed_out_total{phase}`.
final class ConnectionGate: Sendable {
    let limit: Int
    private let open = NIOLockedValueBox(0)
    private let openGauge = Gauge(label: "ekc_http_connections_open")
    private let refused = Counter(label: "ekc_http_connections_refused_total")
    private let timedOut: [String: Counter]

    static let phases = ConnectionClock.Reason.allCases.map(\.rawValue)
        + ConnectionClock.Reason.allCases.filter { $0 != .handshake }.map { "stream_\($0.rawValue)" }

    init(limit: Int) {
        self.limit = limit
        timedOut = Dictionary(uniqueKeysWithValues: ConnectionGate.phases.map {
            ($0, Counter(label: "ekc_http_connections_timed_out_total", dimensions: [("phase", $0)]))
        })
        openGauge.record(0)
    }

    /// Takes a place for a new connection; false (and counted) when all are taken.
    func admit() -> Bool {
        let admitted = open.withLockedValue { n -> Bool in
            guard n < limit else { return false }
            n += 1
            openGauge.record(n)
            return true
        }
        if !admitted { refused.increment() }
        return admitted
    }

    func release() {
        open.withLockedValue { n in
            n = max(0, n - 1)
            openGauge.record(n)
        }
    }

    var openConnections: Int { open.withLockedValue { $0 } }

    func timedOut(_ phase: String) {
        timedOut[phase]?.increment()
    }
}

/// A timer that is moved earlier when needed but never later: when it fires early
/// the owner looks again and re-arms it. Keeps keep-alive traffic from cancelling
/// and scheduling a task on every event.
struct LazyTimer {
    private var task: Scheduled<Void>?
    private var at: NIODeadline?

    mutating func arm(by deadline: NIODeadline, on loop: EventLoop, _ fire: @escaping () -> Void) {
        if let at, at <= deadline { return }
        task?.cancel()
        at = deadline
        task = loop.assumeIsolated().scheduleTask(deadline: deadline, fire)
    }

    mutating func fired() {
        task = nil
        at = nil
    }

    mutating func cancel() {
        task?.cancel()
        fired()
    }
}

/// The first handler of every operator connection (after TLS, which it times):
/// sees every plaintext byte, so it knows when a request begins even before the
/// HTTP/1 decoder or the protocol sniffer has a whole head, and closes the
/// connection when the `ConnectionClock` says it is overdue. The HTTP/1 watch and
/// the HTTP/2 stream delegate report requests, responses and streams to it.
final class ConnectionGuard: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    let limits: ConnectionLimits
    let gate: ConnectionGate?
    private let tls: Bool
    private var clock: ConnectionClock
    private var timer = LazyTimer()
    private var context: ChannelHandlerContext?
    private var openStreams = Set<HTTP2StreamID>()
    private var lastStream = HTTP2StreamID.rootStream

    init(limits: ConnectionLimits, tls: Bool, gate: ConnectionGate?) {
        self.limits = limits
        self.tls = tls
        self.gate = gate
        clock = ConnectionClock(limits: limits, tls: tls, now: .now())
    }

    var state: ConnectionClock { clock }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        clock = ConnectionClock(limits: limits, tls: tls, now: context.eventLoop.now)
        update()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer.cancel()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer.cancel()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        clock.bytesReceived(now: context.eventLoop.now)
        context.fireChannelRead(data)
        update()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? TLSUserEvent, case .handshakeCompleted = e {
            clock.handshakeCompleted(now: context.eventLoop.now)
            update()
        }
        context.fireUserInboundEventTriggered(event)
    }

    // --- reported by the protocol handlers ---

    func requestHead() { change { $0.requestHead(now: $1) } }
    func requestEnd() { change { c, _ in c.requestEnd() } }
    func responseEnd() { change { $0.responseEnd(now: $1) } }
    func becameHTTP2() { change { $0.becameHTTP2(now: $1) } }

    func streamOpened(_ id: HTTP2StreamID) {
        guard openStreams.insert(id).inserted else { return }
        lastStream = max(lastStream, id)
        change { c, _ in c.streamOpened() }
    }

    func streamClosed(_ id: HTTP2StreamID) {
        guard openStreams.remove(id) != nil else { return }
        change { $0.streamClosed(now: $1) }
    }

    private func change(_ f: (inout ConnectionClock, NIODeadline) -> Void) {
        guard let context else { return }
        f(&clock, context.eventLoop.now)
        update()
    }

    private func update() {
        guard let context, let d = clock.deadline else { return }
        timer.arm(by: d.time, on: context.eventLoop) { [weak self] in self?.fire() }
    }

    private func fire() {
        timer.fired()
        guard let context, let d = clock.deadline else { return }
        if d.time > context.eventLoop.now { return update() }
        gate?.timedOut(d.reason.rawValue)
        if clock.framed {
            // HTTP/2: say so with GOAWAY (RFC 9113 §6.8) before closing. Written from
            // the channel's tail so that NIOHTTP2Handler frames it.
            let goAway = HTTP2Frame(streamID: .rootStream,
                                    payload: .goAway(lastStreamID: lastStream, errorCode: .noError, opaqueData: nil))
            context.channel.writeAndFlush(goAway, promise: nil)
        }
        // Closing fails whatever could not be written yet: a client that does not
        // read cannot keep the connection open either.
        context.close(promise: nil)
    }
}

/// Between the HTTP/1 decoder and the rest: tells the connection's guard when a
/// request's head and end have been decoded and when a response has been written.
final class HTTP1Watch: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private let connection: ConnectionGuard

    init(_ connection: ConnectionGuard) { self.connection = connection }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head: connection.requestHead()
        case .end: connection.requestEnd()
        case .body: break
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { connection.responseEnd() }
        context.write(data, promise: promise)
    }
}

/// Tells the connection's guard which HTTP/2 streams are open (idle = none is).
final class HTTP2StreamWatch: NIOHTTP2StreamDelegate {
    private let connection: NIOLoopBound<ConnectionGuard>

    init(_ connection: ConnectionGuard, eventLoop: EventLoop) {
        self.connection = NIOLoopBound(connection, eventLoop: eventLoop)
    }

    func streamCreated(_ id: HTTP2StreamID, channel: Channel) {
        connection.value.streamOpened(id)
    }

    func streamClosed(_ id: HTTP2StreamID, channel: Channel) {
        connection.value.streamClosed(id)
    }
}

/// One HTTP/2 stream's clock: its request must be complete within the header and
/// body timeouts, and once answered the stream must be gone within the idle timeout
/// (a client that never reads the response or never ends its body would otherwise
/// keep the stream, its buffered body and the connection). Overdue: RST_STREAM.
///
/// A response that ends before its request did (413 for a body over the limit, a
/// refused pull) ends the stream with RST_STREAM(NO_ERROR) (RFC 9113 §8.1): the client
/// stops sending the rest. Without it the stream stayed open for the body the handler
/// no longer wanted, and the node granted it window, read and dropped it until the body
/// timeout (about 90 MB in 3 s on loopback; on the replication port, which had no
/// timeout, for ever).
///
/// The reset waits until the client has read the response: `ReadReceipts` sends a PING
/// once the response's END_STREAM is written and the reset follows its ack, or
/// `earlyResetGrace` after the END_STREAM for a client that does not answer. Sent right
/// after the END_STREAM, the reset reached a client that was busy uploading in the same
/// read as the response, and curl 7.88.1 (Debian 12's) then met the closed stream on its
/// sending side before the response reached the transfer and failed the request with
/// "(92) Stream error in the HTTP/2 framing layer" and no status (7 of 40 runs of the two
/// curl tests on a 2-core machine).
///
/// Sits right after `HTTP2FramePayloadToHTTP1ServerCodec` in the stream's pipeline.
final class StreamGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    /// How long an early response's reset waits for the client to acknowledge the PING
    /// sent after it: a client that does not answer (RFC 9113 §6.7 says it must) has its
    /// refused body read and dropped, at most, for this long. Long enough for a client on
    /// a loaded machine to have read the response before the reset arrives.
    static let earlyResetGrace: TimeAmount = .milliseconds(250)

    private let limits: ConnectionLimits
    private let gate: ConnectionGate?
    private var clock: ConnectionClock
    private var timer = LazyTimer()
    private var context: ChannelHandlerContext?
    /// Set once an early response's END_STREAM is written: the grace's end.
    private var earlyReset: Scheduled<Void>?
    private var resetSent = false

    init(limits: ConnectionLimits, gate: ConnectionGate?) {
        self.limits = limits
        self.gate = gate
        clock = ConnectionClock(limits: limits, tls: false, now: .now())
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        let now = context.eventLoop.now
        clock = ConnectionClock(limits: limits, tls: false, now: now)
        clock.bytesReceived(now: now)  // a stream exists once its HEADERS began
        update()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer.cancel()
        earlyReset?.cancel()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer.cancel()
        earlyReset?.cancel()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let now = context.eventLoop.now
        switch unwrapInboundIn(data) {
        case .head: clock.requestHead(now: now)
        case .end: clock.requestEnd()
        case .body: break
        }
        context.fireChannelRead(data)
        update()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard case .end = unwrapOutboundIn(data) else { return context.write(data, promise: promise) }
        let early = clock.reading != .idle  // the request is not complete
        clock.responseEnd(now: context.eventLoop.now)
        update()
        guard early else { return context.write(data, promise: promise) }
        let written = promise ?? context.eventLoop.makePromise()
        context.write(data, promise: written)
        // Succeeds once the END_STREAM has left NIOHTTP2's buffers for the socket: what
        // is written to the connection after it goes on the wire after it.
        written.futureResult.assumeIsolated().whenSuccess { [weak self] in self?.answeredEarly() }
    }

    /// The END_STREAM of a response that came before its request's end is written: reset
    /// the stream once the client has read it, or after the grace.
    private func answeredEarly() {
        guard let context, context.channel.isActive, earlyReset == nil else { return }
        earlyReset = context.eventLoop.assumeIsolated().scheduleTask(in: StreamGuard.earlyResetGrace) { [weak self] in
            self?.resetAfterEarlyResponse()
        }
        let receipts = try? context.channel.parent?.pipeline.syncOperations.handler(type: ReadReceipts.self)
        receipts?.whenRead { [weak self] in self?.resetAfterEarlyResponse() }
    }

    private func resetAfterEarlyResponse() {
        guard let task = earlyReset, !resetSent else { return }
        task.cancel()
        resetSent = true
        // Below the codec, which carries HTTP/1 parts only: the stream channel takes frame payloads.
        // A stream the client has meanwhile ended (curl does once it reads the answer) is closed
        // and refuses the write: nothing to stop then.
        guard let context, context.channel.isActive, let codec = try? context.pipeline.syncOperations.context(
            handlerType: HTTP2FramePayloadToHTTP1ServerCodec.self) else { return }
        codec.writeAndFlush(NIOAny(HTTP2Frame.FramePayload.rstStream(.noError)), promise: nil)
    }

    private func update() {
        guard let context, let d = clock.deadline else { return }
        timer.arm(by: d.time, on: context.eventLoop) { [weak self] in self?.fire() }
    }

    private func fire() {
        timer.fired()
        guard let context, let d = clock.deadline else { return }
        if d.time > context.eventLoop.now { return update() }
        gate?.timedOut("stream_\(d.reason.rawValue)")
        context.close(promise: nil)  // RST_STREAM; the stream's buffers go with it
    }
}

/// On an HTTP/2 connection, right after `NIOHTTP2Handler`: tells a stream when the client
/// has read everything the node wrote to the connection before it asked, by a PING
/// (RFC 9113 §6.7: the client acknowledges each in turn, after the frames before it).
/// `StreamGuard` resets an early response's stream only then, so that the reset never
/// reaches the client together with the response (see there).
///
/// One PING at a time: whoever asks while one is unanswered waits for the next, sent when
/// the ack comes. The client's acks count against the connection's control-frame limit
/// (`HTTP2Defences.controlFrames` a window, acks included), so the node sends at most
/// `HTTP2Defences.readReceiptPings` a window; beyond it, and for a client that leaves a
/// PING unanswered longer than the grace, nobody is told and streams are reset when their
/// grace ends.
final class ReadReceipts: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTP2Frame
    typealias InboundOut = HTTP2Frame
    typealias OutboundOut = HTTP2Frame

    private var context: ChannelHandlerContext?
    /// The unanswered PING, when it was sent, and who waits for its ack.
    private var inFlight: (data: HTTP2PingData, sentAt: NIODeadline, waiters: [() -> Void])?
    /// Asked after `inFlight` was sent: they wait for the next PING.
    private var next: [() -> Void] = []
    private var sequence: UInt64 = 0
    private var windowStart: NIODeadline?
    private var sentInWindow = 0
    /// A PING went unanswered past the grace: this client is not asked again.
    private var unanswered = false

    /// The opaque data's high half: tells the node's own PINGs from anything else.
    static let tag: UInt64 = 0x454B_4352_0000_0000  // "EKCR"

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        inFlight = nil
        next = []
    }

    func channelInactive(context: ChannelHandlerContext) {
        inFlight = nil
        next = []
        context.fireChannelInactive()
    }

    /// Calls `done` once the client has acknowledged a PING written after this call;
    /// false (and `done` is never called) when the node does not ask this client.
    @discardableResult
    func whenRead(_ done: @escaping () -> Void) -> Bool {
        guard let context, context.channel.isActive, !unanswered else { return false }
        let now = context.eventLoop.now
        if let pending = inFlight {
            if now - pending.sentAt > StreamGuard.earlyResetGrace {
                unanswered = true
                inFlight = nil
                next = []
                return false
            }
            next.append(done)
            return true
        }
        return ping([done], now: now)
    }

    private func ping(_ waiters: [() -> Void], now: NIODeadline) -> Bool {
        guard let context else { return false }
        if let start = windowStart, now - start < HTTP2Defences.rateWindow {
            guard sentInWindow < HTTP2Defences.readReceiptPings else { return false }
        } else {
            windowStart = now
            sentInWindow = 0
        }
        sentInWindow += 1
        sequence &+= 1
        let data = HTTP2PingData(withInteger: ReadReceipts.tag | (sequence & 0xFFFF_FFFF))
        inFlight = (data, now, waiters)
        context.writeAndFlush(wrapOutboundOut(HTTP2Frame(streamID: .rootStream, payload: .ping(data, ack: false))),
                              promise: nil)
        return true
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        if case .ping(let echoed, ack: true) = frame.payload, let pending = inFlight, echoed == pending.data {
            inFlight = nil
            let waiting = next
            next = []
            // Over the budget, nobody is told: their grace resets them.
            if !waiting.isEmpty { _ = ping(waiting, now: context.eventLoop.now) }
            pending.waiters.forEach { $0() }
        }
        context.fireChannelRead(data)
    }
}

/// Thrown from the child channel initializer to drop a connection beyond the cap.
struct ConnectionRefused: Error {}
