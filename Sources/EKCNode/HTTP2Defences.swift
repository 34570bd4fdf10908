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
