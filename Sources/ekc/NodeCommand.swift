import ArgumentParser
import CaseModel
import EKCNode
import Foundation
import Identity
import Logging
import Metrics
import Prometheus
import ServiceLifecycle

struct NodeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node", abstract: "Run a federation node.", subcommands: [Start.self])

    struct Start: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Start a node. With no flags: a standalone development node, data in ./.ekc/, on 127.0.0.1:8400.")

        @Option(help: "Topology file (cluster/*.json); with --node-id picks that node's settings.") var config: String?
        @Option(help: "This node's id (lower-case letters, digits, hyphens).") var nodeId: String?
        @Option(help: "Data directory (LMDB environment).") var data: String?
        @Option(help: "HOST:PORT to listen on.") var listen: String?
        @Option(help: "Region code for ticket numbers (38 = Irkutsk oblast).") var region: String?
        @Option(help: "Local time offset from UTC in minutes (480 = Irkutsk).") var utcOffset: Int?
        @Option(help: "PEM certificate chain: serve HTTPS with ALPN h2 and http/1.1.") var tlsCert: String?
        @Option(help: "PEM private key for --tls-cert.") var tlsKey: String?
        @Option(help: "Numbering series within the region (0-99), distinct per node of a region.") var numberSeries: Int?
        @Option(help: "debug, info, notice, warning, error") var logLevel: String = "info"
        @Option(help: "Operators' identity provider: the issuer its tokens name (with --idp-jwks).") var idpIssuer: String?
        @Option(help: "Operators' identity provider: JWKS file with its public keys (re-read on change or SIGHUP).") var idpJwks: String?
        @Option(help: "Audience tokens must name (repeatable; default ekc).") var idpAudience: [String] = []
        @Option(help: "Dotted path to the roles in a token (default realm_access.roles, as Keycloak).") var idpRolesClaim: String?
        @Option(help: "Development identity provider directory, used when no provider is configured.") var devIdp: String?
        @Option(help: "A host name operators reach the API by (repeatable); Host and Origin must name one.") var apiHostName: [String] = []
        @Option(help: "Operator connections open at once; more are closed on accept (default 8192).") var maxConnections: Int?
        @Option(help: "Seconds an operator connection may stay without a request (default 60).") var apiIdleTimeout: Int?
        @Option(help: "Seconds a request's headers may take from its first byte (default 10).") var apiHeaderTimeout: Int?
        @Option(help: "Seconds a request's body may take after its headers (default 30).") var apiBodyTimeout: Int?
        @Option(help: "Seconds the operator port's TLS handshake may take (default 10).") var apiHandshakeTimeout: Int?
        @Option(help: "Oldest TLS version the operator port accepts: 1.2 (AEAD suites only) or 1.3 (default 1.2).") var apiTlsMin: String?
        @Option(help: "Seconds between digest comparisons with each peer (anti-entropy; default 300; 0: only on demand).")
        var antiEntropyInterval: Int?
        @Option(help: "Seconds between checks of the store's digests against its records (default 86400; also at start).")
        var digestScrubInterval: Int?
        @Option(help: ArgumentHelp("For fault testing only: a file holding signed milliseconds added to the wall clock (re-read every 200 ms).",
                                   visibility: .hidden)) var wallClockOffsetFile: String?

        func validate() throws {
            if (tlsCert == nil) != (tlsKey == nil) { throw ValidationError("--tls-cert and --tls-key go together") }
            if let nodeId, !NodeID.isValid(nodeId) {
                throw ValidationError("--node-id \(nodeId): use 1-63 lower-case letters, digits and hyphens")
            }
            if let region, !RegionCode.isValid(region) { throw ValidationError("--region \(region): use 2-8 digits or lower-case letters") }
            if let utcOffset, !(-720...840).contains(utcOffset) { throw ValidationError("--utc-offset must be within -720…840 minutes") }
            if let numberSeries, !(0...99).contains(numberSeries) { throw ValidationError("--number-series must be 0 to 99") }
            if Logger.Level(rawValue: logLevel) == nil { throw ValidationError("--log-level \(logLevel) is not a level") }
            if (idpIssuer == nil) != (idpJwks == nil) { throw ValidationError("--idp-issuer and --idp-jwks go together") }
            if idpJwks != nil && devIdp != nil { throw ValidationError("--dev-idp and --idp-jwks exclude each other") }
            if let maxConnections, !(1...1_000_000).contains(maxConnections) {
                throw ValidationError("--max-connections \(maxConnections): use 1 to 1000000 (each connection is a file descriptor)")
            }
            for (flag, value) in [("--api-idle-timeout", apiIdleTimeout), ("--api-header-timeout", apiHeaderTimeout),
                                  ("--api-body-timeout", apiBodyTimeout), ("--api-handshake-timeout", apiHandshakeTimeout)] {
                if let value, !(1...86_400).contains(value) { throw ValidationError("\(flag) \(value): use 1 to 86400 seconds") }
            }
            if let antiEntropyInterval, !(0...604_800).contains(antiEntropyInterval) {
                throw ValidationError("--anti-entropy-interval \(antiEntropyInterval): use 0 (only on demand) to 604800 seconds")
            }
            if let digestScrubInterval, !(60...2_592_000).contains(digestScrubInterval) {
                throw ValidationError("--digest-scrub-interval \(digestScrubInterval): use 60 to 2592000 seconds")
            }
            if let apiTlsMin, APITLSVersion(rawValue: apiTlsMin) == nil {
                throw ValidationError("--api-tls-min \(apiTlsMin): use 1.2 or 1.3 (older versions are not offered)")
            }
        }

        func settings() throws -> NodeSettings {
            var entry: Topology.NodeEntry? = nil
            var topology: Topology? = nil
            if let config {
                let topology_ = try Topology.load(config)
                topology = topology_
                let topology = topology_
                guard let id = nodeId ?? (topology.nodes.count == 1 ? topology.nodes[0].id : nil) else {
                    throw ConfigurationError("--config lists several nodes; say which with --node-id (one of \(topology.nodes.map(\.id).joined(separator: ", ")))")
                }
                entry = try topology.node(id)
            }
            let id = nodeId ?? entry?.id ?? "irk-dev"
            let (host, port) = try NodeSettings.parseListen(listen ?? entry?.listen ?? "127.0.0.1:8400")
            var settings = NodeSettings(
                node: NodeID(id)!, region: region ?? entry.map { topology!.numbering(of: $0) } ?? "38",
                utcOffsetMinutes: utcOffset ?? entry?.utcOffsetMinutes ?? 480,
                dataDirectory: data ?? entry?.data ?? ".ekc/\(id)", host: host, port: port,
                tlsCertificate: tlsCert ?? entry?.tls?.cert, tlsKey: tlsKey ?? entry?.tls?.key)
            settings.numberSeries = UInt64(numberSeries ?? entry?.numberSeries ?? 0)
            settings.apiHostNames = apiHostName + (entry?.apiHostNames ?? [])
            if let maxConnections { settings.apiLimits.maxConnections = maxConnections }
            if let apiIdleTimeout { settings.apiLimits.idleTimeout = .seconds(apiIdleTimeout) }
            if let apiHeaderTimeout { settings.apiLimits.headerTimeout = .seconds(apiHeaderTimeout) }
            if let apiBodyTimeout { settings.apiLimits.bodyTimeout = .seconds(apiBodyTimeout) }
            if let apiHandshakeTimeout { settings.apiLimits.handshakeTimeout = .seconds(apiHandshakeTimeout) }
            if let apiTlsMin { settings.apiTLSMinimum = APITLSVersion(rawValue: apiTlsMin)! }
            if let antiEntropyInterval { settings.antiEntropyInterval = antiEntropyInterval == 0 ? nil : .seconds(antiEntropyInterval) }
            if let digestScrubInterval { settings.digestScrubInterval = .seconds(digestScrubInterval) }
            if let wallClockOffsetFile { settings.wallClock = WallClockOffset(path: wallClockOffsetFile).clock }
            let organisation = entry?.organisationID ?? settings.region
            if let idpIssuer, let idpJwks {
                settings.operatorIdentity = .provider(IdentityProvider(
                    organisation: organisation, issuer: idpIssuer,
                    audiences: idpAudience.isEmpty ? [IdentityProvider.defaultAudience] : idpAudience, jwksPath: idpJwks,
                    rolesClaim: idpRolesClaim ?? IdentityProvider.defaultRolesClaim))
            } else if let devIdp {
                settings.operatorIdentity = .development(directory: devIdp)
            } else if let topology, let entry {
                guard let idp = topology.organisation(entry.organisationID)?.identityProvider else {
                    throw ConfigurationError("organisation \(entry.organisationID) names no identityProvider in \(config!): give its issuer and JWKS file (or {\"development\": DIR} for a development key)")
                }
                settings.operatorIdentity = try idp.resolve(organisation: entry.organisationID)
            }
            if let topology, let entry {
                settings.directory = topology.directory
                if let r = entry.replication {
                    guard let identity = entry.identity, identity.ca != nil else {
                        throw ConfigurationError("node \(entry.id) has a replication address but no identity {cert, key, ca}")
                    }
                    let (rh, rp) = try NodeSettings.parseListen(r)
                    settings.replicationHost = rh
                    settings.replicationPort = rp
                    settings.identity = identity
                    settings.peers = try topology.peers(of: entry).map { node, address in
                        guard let address else {
                            throw ConfigurationError("peer \(node) of \(entry.id) has no replication address")
                        }
                        let (ph, pp) = try NodeSettings.parseListen(address)
                        return PeerAddress(node: node, host: ph, port: pp)
                    }
                }
            }
            return settings
        }

        func run() async throws {
            let settings: NodeSettings
            do { settings = try self.settings() } catch let e as ConfigurationError { throw CLIError(e.description) }
            let level = Logger.Level(rawValue: logLevel)!
            let node = settings.node.value
            LoggingSystem.bootstrap { label in
                var h = StreamLogHandler.standardError(label: label)
                h.logLevel = level
                h.metadata = ["node": "\(node)"]
                return h
            }
            let registry = PrometheusCollectorRegistry()
            MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
            let logger = Logger(label: "ekc.node")
            try FileManager.default.createDirectory(atPath: settings.dataDirectory, withIntermediateDirectories: true)
            let service = NodeService(settings: settings, logger: logger, registry: registry) { url in
                print("ekc node \(node) listening on \(url) (data: \(settings.dataDirectory))")
                fflush(nil)
            }
            let group = ServiceGroup(configuration: .init(
                services: [.init(service: service)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
            do {
                try await group.run()
            } catch let e as ConfigurationError {
                throw CLIError(e.description)
            }
        }
    }
}
