import NIOCore
import NIOHTTP1

/// One HTTP exchange at a time: for HTTP/1.1 the connection (NIO's pipelining
/// helper keeps requests in order), for HTTP/2 one stream (behind NIO's
/// HTTP/2-to-HTTP/1 codec). Bodies are bounded: an oversized one is answered
/// with 413 as soon as it is known and never buffered.
final class HTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let api: OperatorAPI
    private var head: HTTPRequestHead?
    private var body: ByteBuffer?
    private var rejected = false

    init(api: OperatorAPI) { self.api = api }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
            body = nil
            rejected = false
            if let len = h.headers.first(name: "content-length").flatMap(Int.init), len > api.maxBodyBytes {
                reject(context, h)
            } else if h.headers.first(name: "expect")?.lowercased() == "100-continue" {
                // The client waits for this before it sends the body (RFC 9110 §10.1.1).
                let interim = HTTPResponseHead(version: h.version, status: .continue)
                context.writeAndFlush(wrapOutboundOut(.head(interim)), promise: nil)
            }
        case .body(var chunk):
            guard !rejected, let h = head else { return }
            if (body?.readableBytes ?? 0) + chunk.readableBytes > api.maxBodyBytes {
                body = nil
                reject(context, h)
            } else if body == nil {
                body = chunk
            } else {
                body!.writeBuffer(&chunk)
            }
        case .end:
            guard let h = head, !rejected else { head = nil; return }
            let request = APIRequest(method: h.method, uri: h.uri, headers: h.headers, body: body,
                                     // an HTTP/2 stream answers with its connection's address; its parent only if not
                                     remote: context.channel.remoteAddress ?? context.channel.parent?.remoteAddress)
            head = nil
            body = nil
            switch api.access.lookup(h.headers, now: api.store.configuration.wallClock()) {
            case .ready(let caller):
                dispatch(request, caller, h, context)
            case .verify(let token):
                // A token not seen before: its signature is checked off the event loop's
                // critical path (jwt-kit's key collection is an actor), then the request runs.
                let verifier = api.access.verifier
                let now = api.store.configuration.wallClock()
                context.eventLoop.makeFutureWithTask { await verifier.verify(token, now: now) }
                    .assumeIsolated().whenSuccess { [self] result in
                        switch result {
                        case .success(let p): dispatch(request, .principal(p), h, context)
                        case .failure(let e): dispatch(request, .refused(e), h, context)
                        }
                    }
            }
        }
    }

    private func dispatch(_ request: APIRequest, _ caller: Caller, _ h: HTTPRequestHead, _ context: ChannelHandlerContext) {
        switch api.handle(request, caller: caller, on: context.eventLoop) {
        case .now(let r):
            write(r, for: h, context: context)
        case .later(let future):
            future.assumeIsolated().whenComplete { [self] result in
                switch result {
                case .success(let r): write(r, for: h, context: context)
                case .failure(let e):
                    write(.error(APIError(status: .internalServerError, code: "internal", message: "\(e)", field: nil)),
                          for: h, context: context)
                }
            }
        }
    }

    private func reject(_ context: ChannelHandlerContext, _ h: HTTPRequestHead) {
        rejected = true
        let e = APIError(status: .payloadTooLarge, code: "body_too_large",
                         message: "the body exceeds \(api.maxBodyBytes) bytes", field: nil)
        api.count(route: "error", status: .payloadTooLarge)
        // HTTP/1.1: the rest of the body would be read as the next request; close instead.
        write(.error(e), for: h, context: context, forceClose: h.version.major == 1)
    }

    private func write(_ r: APIResponse, for h: HTTPRequestHead, context: ChannelHandlerContext, forceClose: Bool = false) {
        let http1 = h.version.major == 1
        let close = http1 && (forceClose || !h.isKeepAlive)
        var headers = r.headers
        headers.replaceOrAdd(name: "content-length", value: String(r.body.readableBytes))
        if close { headers.replaceOrAdd(name: "connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: h.version, status: r.status, headers: headers))), promise: nil)
        if r.body.readableBytes > 0 {
            context.write(wrapOutboundOut(.body(.byteBuffer(r.body))), promise: nil)
        }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if close {
            done.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}
