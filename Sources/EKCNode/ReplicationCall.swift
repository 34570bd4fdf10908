import CaseModel
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import NIOSSL
#if canImport(Glibc)
import Glibc
#endif

/// A mutually authenticated HTTP/2 connection to a peer's replication port: TLS with
/// this node's certificate, the peer's certificate checked to name the peer, then
/// HTTP/2 (the pull stream and anti-entropy calls open streams on it).
enum ReplicationConnection {
    /// How long the TLS handshake may take after the TCP connection (as the server's).
    static let handshakeTimeout: TimeAmount = .seconds(10)

    /// Connects and returns once the TLS handshake has shown the server to be `peer.node`.
    ///
    /// The whole pipeline, HTTP/2 included, is built in the channel initializer, before
    /// the channel is active: the server sends its HTTP/2 preface (SETTINGS) right after
    /// its handshake, a few milliseconds after the TCP connection, and whatever handler is
    /// not there by then does not see it. This used to add the HTTP/2 handler later, from
    /// this task, once the connection was up; when the task resumed after the handshake
    /// (a loaded machine: 34 nodes on 2 cores), the server's SETTINGS had reached the
    /// pipeline's tail and been dropped. NIOHTTP2 then took the server's SETTINGS ACK for
    /// a missing preface and answered GOAWAY, but the connection stayed open and every
    /// frame after was refused alike: the pull heard nothing until its 15 s idle timeout,
    /// the anti-entropy call had no answer within 30 s (issue "links stall at start").
    ///
    /// Nothing the caller writes goes out before the identity check: NIOSSL holds writes
    /// (here: our HTTP/2 preface) until the handshake is done and `NodeIdentityHandler`
    /// has seen it, and the caller gets the connection, to open streams on, only after.
    /// A connection whose HTTP/2 layer fails is closed (`CloseOnError`), so a stream on it
    /// ends at once instead of waiting out its timeout.
    static func open(_ peer: PeerAddress, tls: NIOSSLContext, group: EventLoopGroup,
                     handshakeTimeout: TimeAmount = ReplicationConnection.handshakeTimeout)
        async throws -> (NIOCore.Channel, NIOHTTP2Handler.StreamMultiplexer) {
        let (channel, multiplexer, identified) = try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(5))
            .connect(host: peer.host, port: peer.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    let identified = channel.eventLoop.makePromise(of: NodeID.self)
                    try sync.addHandler(NIOSSLClientHandler(context: tls, serverHostname: nil))
                    try sync.addHandler(NodeIdentityHandler(expecting: peer.node, identified: identified))
                    let multiplexer = try sync.configureHTTP2Pipeline(
                        mode: .client, connectionConfiguration: ReplicationWindows.connection, streamConfiguration: ReplicationWindows.stream
                    ) { $0.eventLoop.makeSucceededVoidFuture() }
                    try sync.addHandler(CloseOnError())
                    return (channel, multiplexer, identified.futureResult)
                }
            }
        let timedOut = NIOLockedValueBox(false)
        let deadline = channel.eventLoop.scheduleTask(in: handshakeTimeout) {
            timedOut.withLockedValue { $0 = true }
            channel.close(promise: nil)
        }
        do {
            _ = try await identified.get()
            deadline.cancel()
            return (channel, multiplexer)
        } catch {
            deadline.cancel()
            channel.close(promise: nil)
            if timedOut.withLockedValue({ $0 }) { throw ReplicationCallError.noHandshake(handshakeTimeout) }
            throw error
        }
    }

    /// One request and its whole response on a new stream: the status and at most
    /// `maxBytes` of body (more, or no answer within `timeout`, fails the call).
    static func call(_ multiplexer: NIOHTTP2Handler.StreamMultiplexer, on channel: NIOCore.Channel, peer: PeerAddress, path: String,
                     body: [UInt8], maxBytes: Int = 64 << 20, timeout: TimeAmount = .seconds(30)) async throws -> (Int, [UInt8]) {
        let promise = channel.eventLoop.makePromise(of: (Int, [UInt8]).self)
        let stream: NIOCore.Channel
        do {
            stream = try await multiplexer.createStreamChannel { stream in
                stream.eventLoop.makeCompletedFuture {
                    try stream.pipeline.syncOperations.addHandlers([
                        ResponseStatusCheck(), HTTP2FramePayloadToHTTP1ClientCodec(httpProtocol: .https),
                        UnaryCall(host: "\(peer.host):\(peer.port)", path: path, body: body, maxBytes: maxBytes, promise: promise),
                    ])
                }
            }.get()
        } catch {
            // No stream (the connection went): the promise is completed all the same.
            promise.fail(error)
            throw error
        }
        let deadline = channel.eventLoop.scheduleTask(in: timeout) {
            promise.fail(ReplicationCallError.timedOut(path))
            stream.close(promise: nil)
        }
        defer { deadline.cancel() }
        return try await promise.futureResult.get()
    }
}

extension ReplicationConnection {
    /// Whether connecting failed because the peer's host refused it (ECONNREFUSED on every
    /// address tried): its node is not listening yet, rather than unreachable or broken.
    static func refused(_ error: Error) -> Bool {
        if let e = error as? IOError { return e.errnoCode == ECONNREFUSED }
        if let e = error as? NIOConnectionError {
            return !e.connectionErrors.isEmpty && e.connectionErrors.allSatisfy { refused($0.error) }
        }
        return false
    }
}

enum ReplicationCallError: Error, CustomStringConvertible {
    case timedOut(String)
    case tooLarge(String, Int)
    case closed(String)
    case refused(String, Int, String)
    case noHandshake(TimeAmount)

    var description: String {
        switch self {
        case .timedOut(let p): return "\(p): no answer in time"
        case .tooLarge(let p, let n): return "\(p): answer larger than \(n) bytes"
        case .closed(let p): return "\(p): stream closed before the answer ended"
        case .refused(let p, let status, let why): return "\(p): \(status) \(why)"
        case .noHandshake(let t): return "no TLS handshake within \(t.nanoseconds / 1_000_000_000) s"
        }
    }
}

/// Sends one request when the stream opens and gathers the response.
private final class UnaryCall: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    let host: String
    let path: String
    let body: [UInt8]
    let maxBytes: Int
    let promise: EventLoopPromise<(Int, [UInt8])>
    private var status = 0
    private var received: [UInt8] = []
    private var finished = false

    init(host: String, path: String, body: [UInt8], maxBytes: Int, promise: EventLoopPromise<(Int, [UInt8])>) {
        self.host = host
        self.path = path
        self.body = body
        self.maxBytes = maxBytes
        self.promise = promise
    }

    func channelActive(context: ChannelHandlerContext) {
        var headers: HTTPHeaders = ["content-type": "application/x-protobuf", "content-length": String(body.count)]
        headers.add(name: "host", value: host)
        context.write(wrapOutboundOut(.head(HTTPRequestHead(version: .http2, method: .POST, uri: path, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: body)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !finished else { return }
        switch unwrapInboundIn(data) {
        case .head(let h):
            status = Int(h.status.code)
        case .body(let chunk):
            guard received.count + chunk.readableBytes <= maxBytes else {
                finish(context, .failure(ReplicationCallError.tooLarge(path, maxBytes)))
                return
            }
            received += chunk.readableBytesView
        case .end:
            // Both sides have ended the stream: it closes by itself. Closing it here would
            // reset it (RST_STREAM CANCEL), and a round of a few hundred calls would trip
            // the peer's rapid-reset limit and lose the connection.
            finished = true
            promise.succeed((status, received))
        }
    }

    /// Ends the call early: the stream is reset.
    private func finish(_ context: ChannelHandlerContext, _ result: Result<(Int, [UInt8]), Error>) {
        finished = true
        promise.completeWith(result)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !finished {
            finished = true
            promise.fail(ReplicationCallError.closed(path))
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        guard !finished else { return }
        finish(context, .failure(error))
    }
}
