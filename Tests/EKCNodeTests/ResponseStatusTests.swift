import NIOCore
import NIOEmbedded
import NIOHPACK
import NIOHTTP1
import NIOHTTP2
import Testing
@testable import EKCNode

/// A peer's answer to a call this node made (a pull, an anti-entropy call) reaches the
/// node through the handlers Replicator and ReplicationConnection.call put on the stream:
/// `ResponseStatusCheck`, then NIOHTTP2's HTTP/1 codec. The codec takes any decimal
/// `:status` to `HTTPResponseStatus(statusCode:)`, which traps on a negative one.
@Suite struct ResponseStatusTests {
    func stream() throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandlers([
            ResponseStatusCheck(), HTTP2FramePayloadToHTTP1ClientCodec(httpProtocol: .https),
        ])
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9410)).wait()
        // The request this node sends first: a response comes to a request only.
        try channel.writeOutbound(HTTPClientRequestPart.head(HTTPRequestHead(
            version: .http2, method: .POST, uri: "/replication/v2/pull", headers: ["host": "127.0.0.1:9410"])))
        _ = try channel.readOutbound(as: HTTP2Frame.FramePayload.self)
        return channel
    }

    func headers(_ status: String) -> HTTP2Frame.FramePayload {
        .headers(.init(headers: HPACKHeaders([(":status", status), ("content-type", "application/x-ekc-frames")])))
    }

    @Test("a :status that is not three digits is an error on the stream, which closes; never a trap",
          arguments: ["-1", "-200", "+200", "2000", "20", "099", "abc", "٢٠٠", ""])
    func refused(status: String) throws {
        let channel = try stream()
        #expect(throws: InvalidResponseStatus.self) { try channel.writeInbound(headers(status)) }
        #expect(try channel.readInbound(as: HTTPClientResponsePart.self) == nil)
        #expect(!channel.isActive)
    }

    @Test("three digits pass to the codec as they are")
    func passed() throws {
        for (status, expected) in [("200", HTTPResponseStatus.ok), ("404", .notFound), ("599", .custom(code: 599, reasonPhrase: ""))] {
            let channel = try stream()
            try channel.writeInbound(headers(status))
            guard case .head(let h)? = try channel.readInbound(as: HTTPClientResponsePart.self) else {
                Issue.record("no response head for \(status)")
                continue
            }
            #expect(h.status.code == expected.code)
            _ = try channel.finish()
        }
    }
}
