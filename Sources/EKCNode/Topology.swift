import CaseModel
import Foundation

/// The federation's topology file (cluster/*.json): every node with its region or
/// fund, role and addresses. `ekc node start --config FILE --node-id ID` runs one
/// of them. Relative paths are taken from the working directory.
public struct Topology: Decodable, Sendable {
    public struct NodeEntry: Decodable, Sendable {
        public var id: String
        /// Region code (`38`) or a fund's code (`sfr`).
        public var region: String
        public var role: String?
        public var utcOffsetMinutes: Int?
        public var listen: String?
        public var data: String?
        public var tls: TLSFiles?
        /// `HOST:PORT` of the replication listener (HTTP/2, mutual TLS).
        public var replication: String?
        /// The node's certificate from the federation CA, its key, and the CA.
        public var identity: TLSFiles?
        /// Nodes to pull from and serve; absent: every other node of the same region or fund.
        public var peers: [String]?
        /// Numbering series within the region (0–99), distinct for each node of a region.
        public var numberSeries: Int?
    }

    public struct TLSFiles: Decodable, Sendable {
        public var cert: String
        public var key: String
        public var ca: String?
    }

    public var federation: String?
    public var nodes: [NodeEntry]

    public static func load(_ path: String) throws -> Topology {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw ConfigurationError("cannot read \(path): \(error.localizedDescription)")
        }
        let topology: Topology
        do {
            topology = try JSONDecoder().decode(Topology.self, from: data)
        } catch let DecodingError.keyNotFound(key, ctx) {
            throw ConfigurationError("\(path): missing \"\(key.stringValue)\" at \(ctx.codingPath.map(\.stringValue).joined(separator: "."))")
        } catch let DecodingError.typeMismatch(_, ctx) {
            throw ConfigurationError("\(path): wrong type at \(ctx.codingPath.map(\.stringValue).joined(separator: "."))")
        } catch {
            throw ConfigurationError("\(path) is not a valid topology file: \(error)")
        }
        var seen = Set<String>()
        for n in topology.nodes {
            guard NodeID.isValid(n.id) else { throw ConfigurationError("\(path): node id \"\(n.id)\" must be lower-case letters, digits and hyphens") }
            guard RegionCode.isValid(n.region) else { throw ConfigurationError("\(path): node \(n.id) has an invalid region \"\(n.region)\"") }
            guard seen.insert(n.id).inserted else { throw ConfigurationError("\(path): node \(n.id) is listed twice") }
            guard (0...99).contains(n.numberSeries ?? 0) else {
                throw ConfigurationError("\(path): node \(n.id) has numberSeries \(n.numberSeries!); use 0 to 99")
            }
        }
        // Two nodes of one region numbering in the same series would issue the same numbers.
        var series: [String: String] = [:]
        for n in topology.nodes {
            let key = "\(n.region)/\(n.numberSeries ?? 0)"
            if let other = series[key] {
                throw ConfigurationError("\(path): nodes \(other) and \(n.id) of region \(n.region) share numberSeries \(n.numberSeries ?? 0); give each its own")
            }
            series[key] = n.id
        }
        return topology
    }

    /// Every node's organisation (region or fund code), for admitting remote writes.
    public var directory: [NodeID: String] {
        Dictionary(uniqueKeysWithValues: nodes.compactMap { n in NodeID(n.id).map { ($0, n.region) } })
    }

    /// The nodes `entry` replicates with, and where they listen for replication.
    public func peers(of entry: NodeEntry) throws -> [(NodeID, String?)] {
        let names = entry.peers ?? nodes.filter { $0.id != entry.id && $0.region == entry.region }.map(\.id)
        return try names.map { name in
            let peer = try node(name)
            return (NodeID(peer.id)!, peer.replication)
        }
    }

    public func node(_ id: String) throws -> NodeEntry {
        guard let n = nodes.first(where: { $0.id == id }) else {
            throw ConfigurationError("node \(id) is not in the topology; it lists: \(nodes.map(\.id).joined(separator: ", "))")
        }
        return n
    }
}

public struct ConfigurationError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

/// Everything one node process needs, after flags and the topology file are combined.
public struct NodeSettings: Sendable {
    public var node: NodeID
    public var region: String
    public var utcOffsetMinutes: Int
    public var dataDirectory: String
    public var host: String
    public var port: Int
    public var tlsCertificate: String?
    public var tlsKey: String?
    /// Replication: where to listen, the node's identity, whom to pull from, who is who.
    public var replicationHost: String?
    public var replicationPort: Int?
    public var identity: Topology.TLSFiles?
    public var peers: [PeerAddress] = []
    public var directory: [NodeID: String] = [:]
    public var numberSeries: UInt64 = 0

    public init(node: NodeID, region: String, utcOffsetMinutes: Int, dataDirectory: String, host: String, port: Int,
                tlsCertificate: String?, tlsKey: String?) {
        self.node = node
        self.region = region
        self.utcOffsetMinutes = utcOffsetMinutes
        self.dataDirectory = dataDirectory
        self.host = host
        self.port = port
        self.tlsCertificate = tlsCertificate
        self.tlsKey = tlsKey
    }

    /// `HOST:PORT`, `[v6]:PORT` or `:PORT`.
    public static func parseListen(_ s: String) throws -> (String, Int) {
        guard let colon = s.lastIndex(of: ":"), let port = Int(s[s.index(after: colon)...]), (0...65535).contains(port) else {
            throw ConfigurationError("--listen \(s): expected HOST:PORT, e.g. 127.0.0.1:8400")
        }
        var host = String(s[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host.isEmpty ? "127.0.0.1" : host, port)
    }
}
