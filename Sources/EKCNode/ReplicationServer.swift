import CaseModel
import CaseStore
import Logging
import Metrics
import NIOCore
import NIOHTTP2
import NIOPosix
import NIOSSL

/// Counters of the replication protocol, on /metrics.
public struct ReplicationMetrics: Sendable {
    let recordsSent = Counter(label: "ekc_replication_records_sent_total")
    let recordsReceived = Counter(label: "ekc_replication_records_received_total")
    let bytesSent = Counter(label: "ekc_replication_bytes_sent_total")
    let bytesReceived = Counter(label: "ekc_replication_bytes_received_total")
    let streamsServed = Counter(label: "ekc_replication_streams_served_total")
    let rejectedWrites = Counter(label: "ekc_replication_rejected_writes_total")
    let quarantinedStamps = Counter(label: "ekc_replication_quarantined_stamps_total")
    public init() {}
}

/// The replication listener: HTTP/2 over TLS 1.3 with client certificates from the
/// federation CA. The peer's node id comes from its certificate, never from the
/// request; only nodes listed as this node's peers are served.
public final class ReplicationServer: Sendable {
    let channel: NIOCore.Channel
    public let port: Int

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
                    let identity = NodeIdentityHandler()
                    try sync.addHandler(identity)
                    _ = try sync.configureHTTP2Pipeline(
                        mode: .server, connectionConfiguration: .init(), streamConfiguration: .init()
                    ) { stream in
                        stream.eventLoop.makeCompletedFuture {
                            // Streams open only after the TLS handshake identified the peer.
                            let peer = identity.peer ?? NodeID(trusted: "unidentified")
                            try stream.pipeline.syncOperations.addHandlers([
                                HTTP2FramePayloadToHTTP1ServerCodec(),
                                FeedSender(store: store, peer: peer, allowed: identity.peer != nil && peers.contains(peer),
                                           metrics: metrics, logger: logger),
                            ])
                        }
                    }
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
