import CaseModel
import CaseStore
import Foundation
import Logging
import Metrics
import NIOPosix
import NIOSSL
import Replication
import Prometheus
import ServiceLifecycle

/// One node process: the case store and the HTTP listener, started together and
/// stopped gracefully (SIGTERM/SIGINT through swift-service-lifecycle): the
/// listener closes first, then queued edits commit, then the store closes.
public struct NodeService: Service {
    public let settings: NodeSettings
    public let logger: Logger
    public let registry: PrometheusCollectorRegistry
    /// Called with the base URL once the node listens.
    public let onListening: @Sendable (String) -> Void

    public init(settings: NodeSettings, logger: Logger, registry: PrometheusCollectorRegistry,
                onListening: @escaping @Sendable (String) -> Void) {
        self.settings = settings
        self.logger = logger
        self.registry = registry
        self.onListening = onListening
    }

    public func run() async throws {
        var directory = settings.directory
        // A node without a topology is an organisation of its own numbering code.
        if directory[settings.node] == nil { directory[settings.node] = settings.region }
        var configuration = StoreConfiguration(node: settings.node, region: settings.region,
                                               utcOffsetMinutes: settings.utcOffsetMinutes, directory: Directory(directory))
        configuration.numberSeries = settings.numberSeries
        let store = try CaseStore(path: settings.dataDirectory, configuration: configuration)
        logger.info("store open", metadata: ["path": "\(settings.dataDirectory)", "store_id": "\(store.storeID)",
                                             "last_sequence": "\(store.lastSequence)"])
        var tls: NIOSSLContext? = nil
        if let cert = settings.tlsCertificate, let key = settings.tlsKey {
            var config = TLSConfiguration.makeServerConfiguration(
                certificateChain: try NIOSSLCertificate.fromPEMFile(cert).map { .certificate($0) },
                privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)))
            config.applicationProtocols = ["h2", "http/1.1"]
            config.minimumTLSVersion = .tlsv12
            tls = try NIOSSLContext(configuration: config)
        }
        // Replication: a mutually authenticated listener, and one pull stream per peer.
        var replicationServer: ReplicationServer? = nil
        var replicator: Replicator? = nil
        var certificateExpiry: Date? = nil
        let replicationGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        if let identity = settings.identity, let host = settings.replicationHost, let port = settings.replicationPort {
            do {
                let nodeTLS = try NodeTLS(certificate: identity.cert, key: identity.key, ca: identity.ca ?? "",
                                          expected: settings.node)
                certificateExpiry = nodeTLS.notValidAfter
                let metrics = ReplicationMetrics()
                replicationServer = try await ReplicationServer.start(
                    store: store, tls: nodeTLS, host: host, port: port, peers: Set(settings.peers.map(\.node)),
                    group: replicationGroup, metrics: metrics, logger: logger)
                replicator = try Replicator(store: store, tls: nodeTLS, peers: settings.peers, group: replicationGroup,
                                            metrics: metrics, logger: logger)
            } catch {
                store.close()
                try? await replicationGroup.shutdownGracefully()
                throw ConfigurationError("cannot start replication on \(host):\(port): \(error)")
            }
        }
        let api = OperatorAPI(store: store, registry: registry, replicator: replicator,
                              certificateNotValidAfter: certificateExpiry)
        let server: HTTPServer
        do {
            server = try await HTTPServer.start(api: api, host: settings.host, port: settings.port, tls: tls, logger: logger)
        } catch {
            await replicator?.stop()
            await replicationServer?.close()
            try? await replicationGroup.shutdownGracefully()
            store.close()
            throw ConfigurationError("cannot listen on \(settings.host):\(settings.port): \(error)")
        }
        let host = settings.host.contains(":") ? "[\(settings.host)]" : settings.host
        replicator?.start()
        onListening("\(server.scheme)://\(host):\(server.port)")
        try? await gracefulShutdown()
        logger.info("shutting down")
        await replicator?.stop()
        await replicationServer?.close()
        // Stop accepting, then let queued edits commit and be answered while the
        // event loops still run; requests arriving meanwhile get 503; then close all.
        await server.closeListener()
        // What each peer has been sent, so that after a restart a puller that is up to
        // date resumes where it is instead of being sent the feed again.
        await store.persistServed()
        store.close()
        await server.stop()
        try? await replicationGroup.shutdownGracefully()
        logger.info("stopped", metadata: ["last_sequence": "\(store.lastSequence)"])
    }
}
