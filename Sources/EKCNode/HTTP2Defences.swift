import NIOCore
import NIOHTTP2

/// The denial-of-service limits of every HTTP/2 connection the node serves (operator port,
/// replication port) or dials (replication), written out rather than left to NIOHTTP2's
/// defaults, so that a dependency upgrade cannot loosen them unseen. The values are
/// swift-nio-http2 1.46's defaults, each checked by an attack in
/// tests/integration/test_hostile_h2.py, where a peer beyond them gets GOAWAY (mostly
/// ENHANCE_YOUR_CALM) and the connection is closed.
enum HTTP2Defences {
    /// The sliding window of the rate limits below.
    static let rateWindow: TimeAmount = .seconds(30)
    /// RST_STREAM frames a peer may send per window: rapid reset (CVE-2023-44487).
    static let resetFrames = 200
    /// Stream errors a peer may provoke per window (the server made to reset streams:
    /// WINDOW_UPDATE 0, a stream window past 2^31-1, ...).
    static let streamErrors = 200
    /// PING, SETTINGS, PRIORITY, ALTSVC and ORIGIN frames a peer may send per window: each
    /// costs work and PING and SETTINGS an answer.
    static let controlFrames = 200
    /// PINGs the node itself sends a peer per window (`ReadReceipts`, after an early
    /// response): the peer's acks count as its control frames, so at most half of them.
    static let readReceiptPings = controlFrames / 2
    /// Control-frame answers (PING and SETTINGS acks) held for a peer that does not read.
    static let bufferedControlFrames = 10_000
    /// Empty DATA frames in a row (no END_STREAM, no HEADERS between them).
    static let sequentialEmptyDataFrames = 1
    /// CONTINUATION frames after one HEADERS (CVE-2024-27316 family); the header block's
    /// size is bounded apart from this by SETTINGS_MAX_HEADER_LIST_SIZE.
    static let sequentialContinuationFrames = 5
    /// Streams remembered after a reset, so that frames still in flight for them are
    /// not taken for a protocol error.
    static let recentlyResetStreams = 32
    /// Suspicious events (RFC-allowed but abusive) per connection before it is closed.
    static let glitches = 200

    static func apply(to c: inout NIOHTTP2Handler.ConnectionConfiguration) {
        c.headerBlockValidation = .enabled
        c.contentLengthValidation = .enabled
        c.maximumSequentialEmptyDataFrames = sequentialEmptyDataFrames
        c.maximumBufferedControlFrames = bufferedControlFrames
        c.maximumSequentialContinuationFrames = sequentialContinuationFrames
        c.maximumRecentlyResetStreams = recentlyResetStreams
        c.maximumConnectionGlitches = glitches
        c.controlFrameRateLimit.maximumCount = controlFrames
        c.controlFrameRateLimit.windowLength = rateWindow
    }

    static func apply(to s: inout NIOHTTP2Handler.StreamConfiguration) {
        s.streamResetFrameRateLimit.maximumCount = resetFrames
        s.streamResetFrameRateLimit.windowLength = rateWindow
        s.streamErrorRateLimit.maximumCount = streamErrors
        s.streamErrorRateLimit.windowLength = rateWindow
    }
}

/// A peer's answer whose `:status` is not three digits: refused on its stream.
struct InvalidResponseStatus: Error, CustomStringConvertible {
    let value: String
    var description: String { ":status \"\(value.prefix(40))\" is not a three-digit HTTP status" }
}

/// Checks `:status` of every response HEADERS a peer sends on a stream this node opened
/// (a pull, an anti-entropy call), before NIOHTTP2's HTTP/1 codec reads it: the codec
/// takes any decimal integer to `HTTPResponseStatus(statusCode:)`, whose `UInt(code)`
/// traps on a negative one, so a peer answering `:status: -1` crashed the node. A status
/// that is not three digits (100–999) is an error on the stream, which is then closed.
final class ResponseStatusCheck: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTP2Frame.FramePayload
    typealias InboundOut = HTTP2Frame.FramePayload

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .headers(let h) = unwrapInboundIn(data), let status = h.headers.first(name: ":status"),
           !ResponseStatusCheck.isThreeDigits(status) {
            context.fireErrorCaught(InvalidResponseStatus(value: status))
            context.close(promise: nil)
            return
        }
        context.fireChannelRead(data)
    }

    static func isThreeDigits(_ s: String) -> Bool {
        let u = Array(s.utf8)
        return u.count == 3 && (0x31...0x39).contains(u[0]) && (0x30...0x39).contains(u[1]) && (0x30...0x39).contains(u[2])
    }
}
