import ArgumentParser
import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix

/// The yardstick for the API benchmark: a bare NIO HTTP/2 (prior knowledge) endpoint
/// with the same pipeline shape as the node (HTTP/2 → HTTP/1 codec → handler) that
/// answers every GET with a fixed ticket-sized JSON body and every POST with 201.
struct BareServer: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bare-server", abstract: "Bare NIO HTTP/2 endpoint.")
    @Option var port = 18480
    @Option var bodyBytes = 650

    func run() async throws {
        let body = ByteBuffer(string: "{\"pad\":\"" + String(repeating: "x", count: max(0, bodyBytes - 10)) + "\"}")
        let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 512)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    _ = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
                        mode: .server, connectionConfiguration: .init(), streamConfiguration: .init()
                    ) { stream in
                        stream.eventLoop.makeCompletedFuture {
                            try stream.pipeline.syncOperations.addHandlers([
                                HTTP2FramePayloadToHTTP1ServerCodec(), FixedResponder(body: body),
                            ])
                        }
                    }
                }
            }
            .bind(host: "127.0.0.1", port: port).get()
        print("bare NIO HTTP/2 endpoint on http://127.0.0.1:\(port)")
        try await channel.closeFuture.get()
    }
}

final class FixedResponder: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let body: ByteBuffer
    var method: HTTPMethod = .GET
    init(body: ByteBuffer) { self.body = body }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h): method = h.method
        case .body: break
        case .end:
            let head = HTTPResponseHead(version: .http2, status: method == .POST ? .created : .ok,
                                        headers: ["content-type": "application/json", "content-length": String(body.readableBytes)])
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        }
    }
}
