import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOHTTP2
import NIOTLS
import Testing
@testable import EKCNode

/// The operator port's per-connection clock, without sockets: which deadline applies
/// after each event, and that the handler closes an overdue connection.
@Suite struct ConnectionGuardTests {
    static let t0 = NIODeadline.uptimeNanoseconds(1_000_000_000_000)
    static func at(_ seconds: Double) -> NIODeadline { t0 + .milliseconds(Int64(seconds * 1000)) }

    var limits: ConnectionLimits {
        var l = ConnectionLimits()
        l.handshakeTimeout = .seconds(10)
        l.headerTimeout = .seconds(10)
        l.bodyTimeout = .seconds(30)
        l.idleTimeout = .seconds(60)
        return l
    }

    func deadline(_ c: ConnectionClock) -> (ConnectionClock.Reason, Double)? {
        c.deadline.map { ($0.reason, Double($0.time.uptimeNanoseconds - Self.t0.uptimeNanoseconds) / 1e9) }
    }

    @Test func aFreshConnectionIsIdleUntilItsFirstByte() {
        let c = ConnectionClock(limits: limits, tls: false, now: Self.t0)
        #expect(deadline(c)! == (.idle, 60))
    }

    @Test func headThenBodyThenAnswerThenIdle() {
        var c = ConnectionClock(limits: limits, tls: false, now: Self.t0)
        c.bytesReceived(now: Self.at(5))
        #expect(deadline(c)! == (.header, 15))
        c.bytesReceived(now: Self.at(9))  // more of the same head: no extension (slowloris)
        #expect(deadline(c)! == (.header, 15))
        c.requestHead(now: Self.at(9))
        #expect(deadline(c)! == (.body, 39))
        c.bytesReceived(now: Self.at(20))  // body bytes do not restart anything
        #expect(deadline(c)! == (.body, 39))
        c.requestEnd()
        #expect(deadline(c) == nil)  // the node is answering: not the client's time
        c.responseEnd(now: Self.at(21))
        #expect(deadline(c)! == (.idle, 81))
        c.bytesReceived(now: Self.at(50))  // keep-alive: the next request
        #expect(deadline(c)! == (.header, 60))
    }

    @Test func tlsHandshakeIsTimedFromAccept() {
        var c = ConnectionClock(limits: limits, tls: true, now: Self.t0)
        #expect(deadline(c)! == (.handshake, 10))
        c.bytesReceived(now: Self.at(1))  // handshake bytes are not a request
        #expect(deadline(c)! == (.handshake, 10))
        c.handshakeCompleted(now: Self.at(2))
        #expect(deadline(c)! == (.idle, 62))
    }

    @Test func pipelinedRequestsKeepTheConnectionBusyUntilAllAreAnswered() {
        var c = ConnectionClock(limits: limits, tls: false, now: Self.t0)
        c.bytesReceived(now: Self.at(1))
        c.requestHead(now: Self.at(1))
        c.requestEnd()
        c.requestHead(now: Self.at(1))
        c.requestEnd()
        #expect(c.unanswered == 2)
        c.responseEnd(now: Self.at(2))
        #expect(deadline(c) == nil)
        // A third request arrives half while the second is answered: its head is timed.
        c.bytesReceived(now: Self.at(3))
        #expect(deadline(c)! == (.header, 13))
        c.responseEnd(now: Self.at(4))
        #expect(deadline(c)! == (.header, 13))
    }

    @Test func aResponseBeforeTheBodyEnds() {
        // 413 is sent as soon as Content-Length is known; the body keeps its own deadline.
        var c = ConnectionClock(limits: limits, tls: false, now: Self.t0)
        c.bytesReceived(now: Self.at(1))
        c.requestHead(now: Self.at(1))
        c.responseEnd(now: Self.at(1))
        #expect(deadline(c)! == (.body, 31))
        c.requestEnd()
        #expect(c.unanswered == 0)
        #expect(deadline(c)! == (.idle, 61))
    }

    @Test func http2IsIdleOnlyWithoutOpenStreams() {
        var c = ConnectionClock(limits: limits, tls: false, now: Self.t0)
        c.bytesReceived(now: Self.at(1))  // the preface, before the sniffer has it all
        #expect(deadline(c)! == (.header, 11))
        c.becameHTTP2(now: Self.at(1))
        #expect(deadline(c)! == (.idle, 61))
        c.bytesReceived(now: Self.at(2))  // frames are not request heads
        #expect(deadline(c)! == (.idle, 61))
        c.streamOpened()
        c.streamOpened()
        #expect(deadline(c) == nil)  // each stream has its own StreamGuard
        c.streamClosed(now: Self.at(40))
        #expect(deadline(c) == nil)
        c.streamClosed(now: Self.at(45))
        #expect(deadline(c)! == (.idle, 105))
        c.streamClosed(now: Self.at(46))  // not below zero
        #expect(c.unanswered == 0)
    }

    @Test func gateCountsAndRefuses() {
        let gate = ConnectionGate(limit: 2)
        #expect(gate.admit() && gate.admit())
        #expect(!gate.admit())
        #expect(gate.openConnections == 2)
        gate.release()
        #expect(gate.admit())
        gate.release()
        gate.release()
        gate.release()
        #expect(gate.openConnections == 0)
    }

    // --- the handler on an embedded channel (virtual time) ---

    func channel(tls: Bool = false) throws -> (EmbeddedChannel, ConnectionGuard) {
        let channel = EmbeddedChannel()
        let g = ConnectionGuard(limits: limits, tls: tls, gate: nil)
        try channel.pipeline.syncOperations.addHandler(g)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return (channel, g)
    }

    @Test func halfAHeadIsClosedAtTheHeaderTimeout() throws {
        let (channel, _) = try channel()
        channel.embeddedEventLoop.advanceTime(by: .seconds(3))
        try channel.writeInbound(ByteBuffer(string: "GET / HT"))
        channel.embeddedEventLoop.advanceTime(by: .seconds(9))
        try channel.writeInbound(ByteBuffer(string: "TP/1.1\r\n"))
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        #expect(!channel.isActive)
    }

    @Test func aSilentConnectionIsClosedAtTheIdleTimeout() throws {
        let (channel, _) = try channel()
        channel.embeddedEventLoop.advanceTime(by: .seconds(59))
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        #expect(!channel.isActive)
    }

    @Test func reportedRequestsMoveTheDeadline() throws {
        let (channel, g) = try channel()
        try channel.writeInbound(ByteBuffer(string: "POST / HTTP/1.1\r\n\r\n"))
        g.requestHead()
        channel.embeddedEventLoop.advanceTime(by: .seconds(29))  // past the header timeout, within the body's
        #expect(channel.isActive)
        g.requestEnd()
        channel.embeddedEventLoop.advanceTime(by: .seconds(300))  // answering takes as long as it takes
        #expect(channel.isActive)
        g.responseEnd()
        channel.embeddedEventLoop.advanceTime(by: .seconds(59))
        #expect(channel.isActive)
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        #expect(!channel.isActive)
    }

    @Test func tlsHandshakeTimeoutAndCompletion() throws {
        let (slow, _) = try channel(tls: true)
        slow.embeddedEventLoop.advanceTime(by: .seconds(10))
        #expect(!slow.isActive)

        let (done, _) = try channel(tls: true)
        done.embeddedEventLoop.advanceTime(by: .seconds(9))
        done.pipeline.fireUserInboundEventTriggered(TLSUserEvent.handshakeCompleted(negotiatedProtocol: "h2"))
        done.embeddedEventLoop.advanceTime(by: .seconds(59))
        #expect(done.isActive)
        done.embeddedEventLoop.advanceTime(by: .seconds(1))
        #expect(!done.isActive)
    }

    @Test func http1WatchReportsDecodedRequestsAndWrittenResponses() throws {
        let channel = EmbeddedChannel()
        let g = ConnectionGuard(limits: limits, tls: false, gate: nil)
        try channel.pipeline.syncOperations.addHandlers([g, ByteToMessageHandler(HTTPRequestDecoder()), HTTP1Watch(g)])
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try channel.writeInbound(ByteBuffer(string: "POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nab"))
        #expect(g.state.reading != .idle && g.state.unanswered == 0)
        if case .body = g.state.reading {} else { Issue.record("expected the body phase, got \(g.state.reading)") }
        try channel.writeInbound(ByteBuffer(string: "cd"))
        #expect(g.state.reading == .idle && g.state.unanswered == 1)
        try channel.writeOutbound(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: .ok)))
        #expect(g.state.unanswered == 1)
        try channel.writeOutbound(HTTPServerResponsePart.end(nil))
        #expect(g.state.unanswered == 0)
        _ = try? channel.finish()
    }

    // --- ReadReceipts: the PINGs after which an early response's stream is reset ---

    func receipts() throws -> (EmbeddedChannel, ReadReceipts) {
        let channel = EmbeddedChannel()
        let r = ReadReceipts()
        try channel.pipeline.syncOperations.addHandler(r)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        return (channel, r)
    }

    /// The PING the handler wrote, if any.
    func sentPing(_ channel: EmbeddedChannel) throws -> HTTP2PingData? {
        guard let frame = try channel.readOutbound(as: HTTP2Frame.self) else { return nil }
        guard frame.streamID == .rootStream, case .ping(let data, ack: false) = frame.payload else {
            Issue.record("not a PING: \(frame)")
            return nil
        }
        return data
    }

    func ack(_ channel: EmbeddedChannel, _ data: HTTP2PingData) throws {
        try channel.writeInbound(HTTP2Frame(streamID: .rootStream, payload: .ping(data, ack: true)))
        // the ack goes on down the pipeline
        let passed = try channel.readInbound(as: HTTP2Frame.self)
        #expect(passed != nil)
    }

    @Test func aStreamIsToldOnceThePingAfterItsAnswerIsAcknowledged() throws {
        let (channel, r) = try receipts()
        var told = 0
        #expect(r.whenRead { told += 1 })
        let ping = try #require(try sentPing(channel))
        // the client's own PING acks and an ack of other data tell nobody
        try ack(channel, HTTP2PingData(withInteger: 42))
        #expect(told == 0)
        try ack(channel, ping)
        #expect(told == 1)
        try ack(channel, ping)  // a second ack of the same PING
        #expect(told == 1)
        #expect(try sentPing(channel) == nil)
    }

    @Test func whoAsksWhileAPingIsUnansweredWaitsForTheNextOne() throws {
        let (channel, r) = try receipts()
        var told: [String] = []
        #expect(r.whenRead { told.append("a") })
        let first = try #require(try sentPing(channel))
        #expect(r.whenRead { told.append("b") })  // written after the first PING: its ack proves nothing for b
        #expect(r.whenRead { told.append("c") })
        #expect(try sentPing(channel) == nil)      // one PING at a time
        try ack(channel, first)
        #expect(told == ["a"])
        let second = try #require(try sentPing(channel))  // for b and c together
        #expect(second != first)
        try ack(channel, second)
        #expect(told == ["a", "b", "c"])
    }

    @Test func aClientThatLeavesAPingUnansweredIsNotAskedAgain() throws {
        let (channel, r) = try receipts()
        var told = 0
        #expect(r.whenRead { told += 1 })
        let ping = try #require(try sentPing(channel))
        channel.embeddedEventLoop.advanceTime(by: StreamGuard.earlyResetGrace + .milliseconds(1))
        #expect(!r.whenRead { told += 1 })
        try ack(channel, ping)  // too late: its streams were reset at their grace's end
        #expect(told == 0)
        #expect(!r.whenRead { told += 1 })
        #expect(try sentPing(channel) == nil)
    }

    @Test func pingsStayWithinHalfTheClientsControlFrameBudget() throws {
        let (channel, r) = try receipts()
        for _ in 0..<HTTP2Defences.readReceiptPings {
            #expect(r.whenRead {})
            try ack(channel, try #require(try sentPing(channel)))
        }
        #expect(!r.whenRead {})
        #expect(try sentPing(channel) == nil)
        channel.embeddedEventLoop.advanceTime(by: HTTP2Defences.rateWindow)
        #expect(r.whenRead {})
        #expect(try sentPing(channel) != nil)
    }
}
