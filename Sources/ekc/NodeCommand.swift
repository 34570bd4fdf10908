import ArgumentParser
import CaseModel
import EKCNode
import Foundation
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

        func validate() throws {
            if (tlsCert == nil) != (tlsKey == nil) { throw ValidationError("--tls-cert and --tls-key go together") }
            if let nodeId, !NodeID.isValid(nodeId) {
                throw ValidationError("--node-id \(nodeId): use 1-63 lower-case letters, digits and hyphens")
            }
            if let region, !RegionCode.isValid(region) { throw ValidationError("--region \(region): use 2-8 digits or lower-case letters") }
            if let utcOffset, !(-720...840).contains(utcOffset) { throw ValidationError("--utc-offset must be within -720…840 minutes") }
            if let numberSeries, !(0...99).contains(numberSeries) { throw ValidationError("--number-series must be 0 to 99") }
            if Logger.Level(rawValue: logLevel) == nil { throw ValidationError("--log-level \(logLevel) is not a level") }
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
