import CaseModel
import CaseStore
import Logging
import Metrics
import NIOSSL
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
        let store = try CaseStore(
            path: settings.dataDirectory,
            configuration: StoreConfiguration(node: settings.node, region: settings.region,
                                              utcOffsetMinutes: settings.utcOffsetMinutes))
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
        let api = OperatorAPI(store: store, registry: registry)
        let server: HTTPServer
        do {
            server = try await HTTPServer.start(api: api, host: settings.host, port: settings.port, tls: tls, logger: logger)
        } catch {
            store.close()
            throw ConfigurationError("cannot listen on \(settings.host):\(settings.port): \(error)")
        }
        let host = settings.host.contains(":") ? "[\(settings.host)]" : settings.host
        onListening("\(server.scheme)://\(host):\(server.port)")
        try? await gracefulShutdown()
        logger.info("shutting down")
        // Stop accepting, then let queued edits commit and be answered while the
        // event loops still run; requests arriving meanwhile get 503; then close all.
        await server.closeListener()
        store.close()
        await server.stop()
        logger.info("stopped", metadata: ["last_sequence": "\(store.lastSequence)"])
    }
}
