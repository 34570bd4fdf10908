import CaseModel
import Foundation
import Identity

/// The federation's topology file (cluster/*.json): every node with its region or
/// fund, role and addresses. `ekc node start --config FILE --node-id ID` runs one
/// of them. Relative paths are taken from the working directory.
public struct Topology: Decodable, Sendable {
    /// An organisation: a region by its two-digit code, or a fund (`pension`,
    /// `social-insurance`, `employment`, `mse`).
    public struct OrganisationEntry: Decodable, Sendable {
        public var id: String
        public var kind: OrganisationKind
        public var name: String?
        /// The code its readable ticket numbers start with (2–8 letters or digits); the
        /// id when absent (a region's code).
        public var numbering: String?
        /// Whose tokens the organisation's nodes accept from its operators.
        public var identityProvider: IdentityProviderEntry?
        public init(id: String, kind: OrganisationKind, name: String? = nil, numbering: String? = nil) {
            self.id = id
            self.kind = kind
            self.name = name
            self.numbering = numbering
        }
        public var numberingCode: String { numbering ?? id }
    }

    public struct NodeEntry: Decodable, Sendable {
        public var id: String
        /// The organisation the node belongs to (`organisations[].id`).
        public var organisation: String?
        /// The organisation, as files before organisations named it.
        public var region: String?
        /// `regional-centre`, `remote-office` or `fund`: decides the node's links.
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
        /// Numbering series within the organisation (0–99), distinct for each of its nodes.
        public var numberSeries: Int?
        /// Host names operators reach the API by (Host and Origin are checked against them).
        public var apiHostNames: [String]?

        public var organisationID: String { organisation ?? region ?? "" }
    }

    /// An organisation's identity provider (e.g. its Keycloak realm): the issuer its
    /// tokens name, the JWKS file with its public keys (kept up to date by the
    /// deployment; re-read on change or SIGHUP), the audience tokens must name for the
    /// federation's nodes, and where the roles are. Or, for development only,
    /// `{"development": DIR}`: a key per organisation created in DIR, as `ekc login` uses.
    public struct IdentityProviderEntry: Decodable, Sendable {
        public var issuer: String?
        public var jwks: String?
        public var audiences: [String]?
        public var rolesClaim: String?
        public var subjectClaim: String?
        public var leewaySeconds: Int?
        public var development: String?
    }

    public struct TLSFiles: Decodable, Sendable {
        public var cert: String
        public var key: String
        public var ca: String?
    }

    public var federation: String?
    /// Absent in older files: then each code the nodes name is an organisation.
    public var organisations: [OrganisationEntry]?
    public var nodes: [NodeEntry]

    /// The topology for running a node: read, and refused on the first of its problems
    /// that would make a node misbehave (ids, organisations, numbering series); the
    /// others are `ekc cluster check`'s to list.
    public static func load(_ path: String) throws -> Topology {
        let topology = try read(path)
        if let p = topology.problems.first(where: \.blocksStart) { throw ConfigurationError("\(path): \(p)") }
        return topology
    }

    /// The file's contents, checked for shape only (`ekc cluster check` lists the rest).
    public static func read(_ path: String) throws -> Topology {
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
        return topology
    }

    /// Every node's organisation, for admitting remote writes.
    public var directory: [NodeID: String] {
        Dictionary(uniqueKeysWithValues: nodes.compactMap { n in NodeID(n.id).map { ($0, n.organisationID) } })
    }

    /// The nodes `entry` replicates with, and where they listen for replication: its
    /// links (`links`), within its organisation and, scoped by the sender, with other
    /// organisations. A hand-written `peers` list (tests) overrides.
    public func peers(of entry: NodeEntry) throws -> [(NodeID, String?)] {
        let names = entry.peers ?? links.filter { $0.a == entry.id || $0.b == entry.id }
            .map { $0.a == entry.id ? $0.b : $0.a }
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

/// Where a node gets its operators' identity provider from.
public enum OperatorIdentity: Sendable {
    case provider(IdentityProvider)
    /// A development provider with its key in DIR/ORG (created when missing).
    case development(directory: String)
}

extension Topology.IdentityProviderEntry {
    /// The provider the entry describes for `organisation`; a missing field is an error
    /// a person can act on.
    public func resolve(organisation: String) throws -> OperatorIdentity {
        if let dir = development { return .development(directory: dir) }
        guard let issuer, let jwks else {
            throw ConfigurationError("organisation \(organisation): identityProvider needs issuer and jwks (or development: DIR for a development key)")
        }
        return .provider(IdentityProvider(
            organisation: organisation, issuer: issuer, audiences: audiences ?? [IdentityProvider.defaultAudience],
            jwksPath: jwks, rolesClaim: rolesClaim ?? IdentityProvider.defaultRolesClaim,
            subjectClaim: subjectClaim ?? "sub", leewaySeconds: leewaySeconds ?? 60))
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
    /// Whose tokens the operator API accepts.
    public var operatorIdentity: OperatorIdentity = .development(directory: ".ekc/dev-idp")
    /// Host names besides the listen address's own that the API answers to.
    public var apiHostNames: [String] = []
    /// The operator port's connection cap and timeouts (slow, idle and too many clients).
    public var apiLimits = ConnectionLimits()
    /// The oldest TLS version the operator port accepts when it serves TLS.
    public var apiTLSMinimum: APITLSVersion = .v1_2
    /// The node's wall clock (epoch milliseconds) for stamps, deadlines and token times;
    /// nil: the system's. Fault tests shift it (`--wall-clock-offset-file`).
    public var wallClock: (@Sendable () -> Millis)? = nil
    /// How often each link's digests are compared (anti-entropy); nil: only on demand
    /// (`POST /v1/digest/repair`, `ekc cluster repair`).
    public var antiEntropyInterval: Duration? = .seconds(300)
    /// How often the store's digests are checked against its records (also at start).
    public var digestScrubInterval: Duration = .seconds(86_400)

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
