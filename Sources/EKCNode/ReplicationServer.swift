import CaseModel
import CaseStore
import Logging
import Metrics
import NIOCore
import NIOHTTP2
import NIOPosix
import NIOSSL

/// HTTP/2 windows of replication connections: 4 MiB per stream and connection, so a
/// batch of about 1 MiB flows without a round trip per 64 KiB, while what a slow
/// puller leaves unread stays bounded by the window. The DoS limits are HTTP2Defences'.
enum ReplicationWindows {
    static let bytes = 4 << 20
    static var connection: NIOHTTP2Handler.ConnectionConfiguration {
        var c = NIOHTTP2Handler.ConnectionConfiguration()
        c.initialSettings = [
            HTTP2Setting(parameter: .maxConcurrentStreams, value: 16),
            HTTP2Setting(parameter: .initialWindowSize, value: bytes),
            HTTP2Setting(parameter: .maxFrameSize, value: 1 << 20),
        ]
        c.targetWindowSize = bytes
        HTTP2Defences.apply(to: &c)
        return c
    }
    static var stream: NIOHTTP2Handler.StreamConfiguration {
        var s = NIOHTTP2Handler.StreamConfiguration()
        s.targetWindowSize = bytes
        HTTP2Defences.apply(to: &s)
        return s
    }
}

/// Counters of the replication protocol, on /metrics.
public struct ReplicationMetrics: Sendable {
    let recordsSent = Counter(label: "ekc_replication_records_sent_total")
    let recordsReceived = Counter(label: "ekc_replication_records_received_total")
    let bytesSent = Counter(label: "ekc_replication_bytes_sent_total")
    let bytesReceived = Counter(label: "ekc_replication_bytes_received_total")
    let streamsServed = Counter(label: "ekc_replication_streams_served_total")
    let quarantinedStamps = Counter(label: "ekc_replication_quarantined_stamps_total")
    let duplicateNumbers = Counter(label: "ekc_replication_duplicate_numbers_total")
    public init() {}

    /// Feed entries left out of what `peer` was sent (`FeedPage.Skip`).
    func skipped(peer: NodeID, count: Int) {
        Counter(label: "ekc_replication_feed_skipped_total", dimensions: [("peer", peer.value)]).increment(by: count)
    }

    /// A record (or part of one) refused from `peer`, by reason.
    func rejected(peer: NodeID, reason: String) {
        Counter(label: "ekc_replication_rejected_records_total", dimensions: [("peer", peer.value), ("reason", reason)]).increment()
    }
}

/// The replication listener: HTTP/2 over TLS 1.3 with client certificates from the
/// federation CA. The peer's node id comes from its certificate, never from the
/// request; only nodes listed as this node's peers are served.
public final class ReplicationServer: Sendable {
    let channel: NIOCore.Channel
    public let port: Int

    /// A request (at most 64 KiB) must be whole within 10 s of its stream's opening, a
    /// refused one is reset at once, and a stream whose response ended must be gone within
    /// a minute; a pull being streamed has no deadline. Before, a peer with a valid
    /// certificate held unfinished requests, and pushed a refused one's body, for as long
    /// as it liked (StreamGuard, as on the operator port).
    /// A connection's TLS handshake must end within 10 s, and a connection without an open
    /// stream is closed (GOAWAY) after a minute; a puller's connection always has its pull
    /// stream. Before, a TCP connection that never said hello was held for ever, by
    /// anyone: file descriptors the operator port shares.
    static var connectionLimits: ConnectionLimits { ConnectionLimits() }

    static var streamLimits: ConnectionLimits {
        var limits = ConnectionLimits()
        limits.headerTimeout = .seconds(10)
        limits.bodyTimeout = .seconds(10)
        limits.idleTimeout = .seconds(60)
        return limits
    }

    public static func start(store: CaseStore, tls: NodeTLS, host: String, port: Int, peers: Set<NodeID>,
                             group: EventLoopGroup, metrics: ReplicationMetrics, logger: Logger) async throws -> ReplicationServer {
        let context = try tls.makeServerContext()
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 128)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(NIOSSLServerHandler(context: context))
                    // After TLS, as on the operator port: it times the handshake by its completion event.
                    let connectionGuard = ConnectionGuard(limits: ReplicationServer.connectionLimits, tls: true, gate: nil)
                    try sync.addHandler(connectionGuard)
                    connectionGuard.becameHTTP2()  // frames from the first byte: idle means no open stream
                    let identity = NodeIdentityHandler()
                    try sync.addHandler(identity)
                    _ = try sync.configureHTTP2Pipeline(
                        mode: .server, connectionConfiguration: ReplicationWindows.connection, streamConfiguration: ReplicationWindows.stream,
                        streamDelegate: HTTP2StreamWatch(connectionGuard, eventLoop: channel.eventLoop), position: .last
                    ) { stream in
                        stream.eventLoop.makeCompletedFuture {
                            // Streams open only after the TLS handshake identified the peer.
                            let peer = identity.peer
                            try stream.pipeline.syncOperations.addHandlers([
                                HTTP2FramePayloadToHTTP1ServerCodec(),
                                StreamGuard(limits: ReplicationServer.streamLimits, gate: nil),
                                FeedSender(store: store, peer: peer, allowed: peer.map { peers.contains($0) } ?? false,
                                           metrics: metrics, logger: logger),
                            ])
                        }
                    }
                    try sync.addHandler(ReadReceipts())  // as on the operator port: when a StreamGuard resets
                    try sync.addHandler(CloseOnError())
                }
            }
        let channel = try await bootstrap.bind(host: host, port: port).get()
        let bound = channel.localAddress?.port ?? port
        logger.info("replication listening", metadata: ["host": "\(host)", "port": "\(bound)", "node": "\(tls.node)"])
        return ReplicationServer(channel: channel, port: bound)
    }

    private init(channel: NIOCore.Channel, port: Int) {
        self.channel = channel
        self.port = port
    }

    public func close() async { try? await channel.close() }
}
