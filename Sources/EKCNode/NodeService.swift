import CaseModel
import CaseStore
import Identity
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
                                               utcOffsetMinutes: settings.utcOffsetMinutes, directory: Directory(directory),
                                               wallClock: settings.wallClock ?? CaseStore.systemMillis)
        configuration.numberSeries = settings.numberSeries
        configuration.linkedOrganisations = Set(settings.peers.compactMap { directory[$0.node] })
        // Test federations hold every commit to the store's invariants (StoreVerify.swift).
        configuration.verifyEachCommit = ProcessInfo.processInfo.environment["EKC_VERIFY_EACH_COMMIT"] == "1"
        try NodeService.restrictDataDirectory(settings.dataDirectory)
        // One writer per store: a second node on this directory, or `ekc store migrate`
        // while the node runs, is refused here (DataDirectoryLock.swift).
        let directoryLock: DataDirectoryLock
        do { directoryLock = try DataDirectoryLock(directory: settings.dataDirectory, holder: "ekc node \(settings.node.value)") } catch {
            throw ConfigurationError("data directory \(error)")
        }
        defer { directoryLock.release() }
        NodeService.raiseFileLimit(want: settings.apiLimits.maxConnections, logger: logger)
        let migrationLogger = logger
        configuration.migrationProgress = { p in
            if p.finished || p.chunks % 20 == 0 {
                migrationLogger.notice("store migration", metadata: [
                    "step": "\(p.from)→\(p.to)", "what": "\(p.summary)", "chunks": "\(p.chunks)", "finished": "\(p.finished)"])
            }
        }
        let store = try CaseStore(path: settings.dataDirectory, configuration: configuration)
        logger.info("store open", metadata: ["path": "\(settings.dataDirectory)", "store_id": "\(store.storeID)",
                                             "last_sequence": "\(store.lastSequence)"])
        var tls: NIOSSLContext? = nil
        if let cert = settings.tlsCertificate, let key = settings.tlsKey {
            var config = TLSConfiguration.makeServerConfiguration(
                certificateChain: try NIOSSLCertificate.fromPEMFile(cert).map { .certificate($0) },
                privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)))
            config.applicationProtocols = ["h2", "http/1.1"]
            config.minimumTLSVersion = settings.apiTLSMinimum == .v1_3 ? .tlsv13 : .tlsv12
            // TLS 1.2: forward secrecy and AEAD only (no CBC, no static RSA). TLS 1.3's
            // suites are all AEAD and not configurable here.
            config.cipherSuiteValues = [
                .TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, .TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                .TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, .TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                .TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, .TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
            ]
            tls = try NIOSSLContext(configuration: config)
        }
        // Replication: a mutually authenticated listener, and one pull stream per peer.
        var replicationServer: ReplicationServer? = nil
        var replicator: Replicator? = nil
        var antiEntropy: AntiEntropy? = nil
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
                let pulls = try Replicator(store: store, tls: nodeTLS, peers: settings.peers, group: replicationGroup,
                                           metrics: metrics, logger: logger)
                replicator = pulls
                let repairs = try AntiEntropy(store: store, tls: nodeTLS, peers: settings.peers, group: replicationGroup,
                                              replicator: pulls, interval: settings.antiEntropyInterval, logger: logger)
                antiEntropy = repairs
                pulls.onWanted.withLockedValue { $0 = { [weak repairs] node in repairs?.repairSoon(with: node) } }
            } catch {
                store.close()
                try? await replicationGroup.shutdownGracefully()
                throw ConfigurationError("cannot start replication on \(host):\(port): \(error)")
            }
        }
        // A start that fails after replication began undoes it before saying why.
        func abandon(_ message: String) async -> ConfigurationError {
            await replicator?.stop()
            await replicationServer?.close()
            try? await replicationGroup.shutdownGracefully()
            store.close()
            return ConfigurationError(message)
        }
        let organisation = directory[settings.node] ?? settings.region
        let access: OperatorAccess
        do {
            let verifier = try await TokenVerifier(provider: try settings.operatorIdentity.provider(for: organisation, logger: logger))
            access = OperatorAccess(verifier: verifier, hostNames: OperatorAccess.defaultHostNames(listenHost: settings.host) + settings.apiHostNames)
            logger.info("operators' identity provider", metadata: [
                "issuer": "\(verifier.provider.issuer)", "jwks": "\(verifier.provider.jwksPath)", "keys": "\(verifier.keyIDs)"])
        } catch {
            throw await abandon("\(error)")
        }
        let keyWatch = Task { await OperatorIdentityWatch(verifier: access.verifier, logger: logger).run() }
        defer { keyWatch.cancel() }
        let scrubber = DigestScrubber(store: store, interval: settings.digestScrubInterval, logger: logger)
        let api = OperatorAPI(store: store, access: access, registry: registry, replicator: replicator,
                              certificateNotValidAfter: certificateExpiry, antiEntropy: antiEntropy, scrubber: scrubber)
        let server: HTTPServer
        do {
            server = try await HTTPServer.start(api: api, host: settings.host, port: settings.port, tls: tls,
                                                limits: settings.apiLimits, logger: logger)
        } catch {
            throw await abandon("cannot listen on \(settings.host):\(settings.port): \(error)")
        }
        let host = settings.host.contains(":") ? "[\(settings.host)]" : settings.host
        replicator?.start()
        antiEntropy?.start()
        scrubber.start()
        onListening("\(server.scheme)://\(host):\(server.port)")
        try? await gracefulShutdown()
        logger.info("shutting down")
        await scrubber.stop()
        await antiEntropy?.stop()
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

extension NodeService {
    /// The data directory holds citizens' personal data: its owner only (0700),
    /// whoever created it and with whatever umask.
    static func restrictDataDirectory(_ path: String) throws {
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
            try FileManager.default.setAttributes([.posixPermissions: 0o700], ofItemAtPath: path)
        } catch {
            throw ConfigurationError("cannot make the data directory \(path) private to its owner (mode 0700): \(error.localizedDescription)")
        }
    }

    /// Every operator connection is a file descriptor: the soft limit (often 1024)
    /// is raised to the hard one so that `maxConnections` of them fit.
    static func raiseFileLimit(want connections: Int, logger: Logger) {
        var limit = rlimit()
        #if os(Linux)
        let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        #else
        let resource = RLIMIT_NOFILE
        #endif
        guard getrlimit(resource, &limit) == 0 else { return }
        let before = limit.rlim_cur
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            #if canImport(Darwin)
            raised.rlim_cur = min(limit.rlim_max, rlim_t(OPEN_MAX))  // Darwin refuses more than OPEN_MAX
            #endif
            if setrlimit(resource, &raised) == 0 { limit = raised }
        }
        let metadata: Logger.Metadata = ["soft": "\(limit.rlim_cur)", "hard": "\(limit.rlim_max)", "was": "\(before)",
                                         "max_connections": "\(connections)"]
        // Room for the store, replication and logs besides the operator connections.
        if limit.rlim_cur < rlim_t(connections + 256) {
            logger.warning("open file limit is below --max-connections; raise the hard limit (ulimit -Hn, LimitNOFILE=)",
                           metadata: metadata)
        } else {
            logger.info("open file limit", metadata: metadata)
        }
    }
}
