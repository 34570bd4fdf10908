import Logging
import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import NIOSSL
import NIOTLS

/// The node's HTTP listener: one port speaking HTTP/1.1 and HTTP/2. In cleartext
/// the first bytes decide (the HTTP/2 connection preface means prior-knowledge h2);
/// with a certificate, TLS with ALPN offering h2 and http/1.1.
public final class HTTPServer: Sendable {
    let group: MultiThreadedEventLoopGroup
    let channel: Channel
    public let port: Int
    public let scheme: String

    public static func start(api: OperatorAPI, host: String, port: Int, tls: NIOSSLContext?,
                             limits: ConnectionLimits = ConnectionLimits(),
                             threads: Int = System.coreCount, logger: Logger) async throws -> HTTPServer {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let gate = ConnectionGate(limit: limits.maxConnections)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 512)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { channel in
                // Beyond the cap: closed before it is registered, no TLS, no handlers.
                guard gate.admit() else { return channel.eventLoop.makeFailedFuture(ConnectionRefused()) }
                channel.closeFuture.whenComplete { _ in gate.release() }
                return channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    let connectionGuard = ConnectionGuard(limits: limits, tls: tls != nil, gate: gate)
                    if let tls {
                        // The guard sits after TLS: it times the handshake by its completion
                        // event and sees the plaintext bytes of requests.
                        try sync.addHandler(NIOSSLServerHandler(context: tls))
                        try sync.addHandler(connectionGuard)
                        try sync.addHandler(ApplicationProtocolNegotiationHandler { result, channel in
                            channel.eventLoop.makeCompletedFuture {
                                if case .negotiated("h2") = result {
                                    try HTTPServer.configureHTTP2(channel, api: api)
                                } else {
                                    try HTTPServer.configureHTTP1(channel, api: api)
                                }
                            }
                        })
                    } else {
                        try sync.addHandler(connectionGuard)
                        try sync.addHandler(ProtocolSniffer(api: api))
                    }
                }
            }
        do {
            let channel = try await bootstrap.bind(host: host, port: port).get()
            let bound = channel.localAddress?.port ?? port
            logger.info("listening", metadata: ["host": "\(host)", "port": "\(bound)", "tls": "\(tls != nil)"])
            return HTTPServer(group: group, channel: channel, port: bound, scheme: tls == nil ? "http" : "https")
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    private init(group: MultiThreadedEventLoopGroup, channel: Channel, port: Int, scheme: String) {
        self.group = group
        self.channel = channel
        self.port = port
        self.scheme = scheme
    }

    /// Stops accepting connections; open connections keep being served.
    public func closeListener() async {
        try? await channel.close()
    }

    /// Closes every connection and stops the event loops.
    public func stop() async {
        try? await channel.close()
        try? await group.shutdownGracefully()
    }

    /// Appends the HTTP/1.1 handlers (the sniffer, when present, is the only handler before them).
    static func configureHTTP1(_ channel: Channel, api: OperatorAPI) throws {
        let sync = channel.pipeline.syncOperations
        let handler = HTTPHandler(api: api)
        try sync.configureHTTPServerPipeline(position: .last, withPipeliningAssistance: true, withErrorHandling: true)
        // Right after the decoder: requests are seen as they arrive, before pipelining holds them back.
        if let connectionGuard = try? sync.handler(type: ConnectionGuard.self) {
            let decoder = try sync.handler(type: ByteToMessageHandler<HTTPRequestDecoder>.self)
            try sync.addHandler(HTTP1Watch(connectionGuard), position: .after(decoder))
        }
        try sync.addHandler(handler)
    }

    static func configureHTTP2(_ channel: Channel, api: OperatorAPI) throws {
        var connection = NIOHTTP2Handler.ConnectionConfiguration()
        // Each open stream may hold a body of up to maxBodyBytes until its StreamGuard
        // resets it; 100 (RFC 9113's recommended minimum) bounds that per connection.
        connection.initialSettings = [
            HTTP2Setting(parameter: .maxConcurrentStreams, value: 100),
            HTTP2Setting(parameter: .maxHeaderListSize, value: 64 * 1024),
            HTTP2Setting(parameter: .initialWindowSize, value: 1 << 20),
        ]
        HTTP2Defences.apply(to: &connection)
        var stream = NIOHTTP2Handler.StreamConfiguration()
        HTTP2Defences.apply(to: &stream)
        let sync = channel.pipeline.syncOperations
        let connectionGuard = try? sync.handler(type: ConnectionGuard.self)
        connectionGuard?.becameHTTP2()
        let limits = connectionGuard?.limits
        let gate = connectionGuard?.gate
        _ = try sync.configureHTTP2Pipeline(
            mode: .server, connectionConfiguration: connection, streamConfiguration: stream,
            streamDelegate: connectionGuard.map { HTTP2StreamWatch($0, eventLoop: channel.eventLoop) }, position: .last
        ) { stream in
            stream.eventLoop.makeCompletedFuture {
                let sync = stream.pipeline.syncOperations
                try sync.addHandler(HTTP2FramePayloadToHTTP1ServerCodec())
                if let limits { try sync.addHandler(StreamGuard(limits: limits, gate: gate)) }
                try sync.addHandler(HTTPHandler(api: api))
            }
        }
        // Right after NIOHTTP2Handler: the PINGs that tell a StreamGuard when to reset an early response.
        try sync.addHandler(ReadReceipts())
        // After a connection error NIOHTTP2 sends GOAWAY; the TCP connection must then close (RFC 9113 §5.4.1).
        try sync.addHandler(CloseOnError())
    }
}

/// Closes a connection whose protocol handler reported an error.
final class CloseOnError: ChannelInboundHandler {
    typealias InboundIn = Any
    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}

/// Tells HTTP/2 with prior knowledge from HTTP/1.1 by the first bytes of a
/// cleartext connection, installs the matching pipeline, and steps aside.
final class ProtocolSniffer: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    static let preface: [UInt8] = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    private let api: OperatorAPI
    private var buffered: ByteBuffer?

    init(api: OperatorAPI) { self.api = api }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var chunk = unwrapInboundIn(data)
        if buffered == nil { buffered = chunk } else { buffered!.writeBuffer(&chunk) }
        let bytes = buffered!.readableBytesView
        let n = min(bytes.count, ProtocolSniffer.preface.count)
        let matches = bytes.prefix(n).elementsEqual(ProtocolSniffer.preface.prefix(n))
        if matches && n < ProtocolSniffer.preface.count { return }  // wait for more bytes
        do {
            if matches {
                try HTTPServer.configureHTTP2(context.channel, api: api)
            } else {
                try HTTPServer.configureHTTP1(context.channel, api: api)
            }
        } catch {
            context.close(promise: nil)
            return
        }
        let data = buffered!
        buffered = nil
        context.fireChannelRead(wrapInboundOut(data))
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}
