import CaseModel

/// What an organisation of the federation is: a region's contact centre (by its
/// region code) or a federal fund.
public enum OrganisationKind: String, Sendable, CaseIterable, Decodable {
    case region
    case fund
}

/// The federal funds a topology may name, by their organisation ids.
public enum Fund {
    public static let ids: [String] = ["pension", "social-insurance", "employment", "mse"]
}

/// A node's role within its organisation; it decides the links the node gets.
public enum NodeRole: String, Sendable, CaseIterable {
    /// A region's main node: replicates with the region's offices and, scoped, with other organisations.
    case regionalCentre = "regional-centre"
    /// A region's office: replicates with the nodes of its own region only.
    case remoteOffice = "remote-office"
    /// A fund's node: replicates with the fund's other nodes and, scoped, with regional centres.
    case fund
}

/// A replication link between two nodes, derived from their organisations and roles.
public struct ReplicationLink: Hashable, Sendable, CustomStringConvertible {
    public enum Scope: String, Sendable {
        /// Two nodes of one organisation: everything.
        case organisation
        /// Two organisations: only tickets transferred between them, only the fields in
        /// the transfer's scope, as each sender decides from the peer's certificate.
        case transfers
    }
    /// The two ends, in id order.
    public let a: String
    public let b: String
    public let scope: Scope
    public var description: String { "\(a) ↔ \(b) (\(scope.rawValue))" }
}

/// One thing wrong with a topology, with where and what to do about it.
public struct TopologyProblem: Hashable, Sendable, CustomStringConvertible {
    /// The node or organisation concerned (or "topology").
    public let subject: String
    public let message: String
    /// A node refuses to start on it (`Topology.load`): ids, organisations, numbering.
    public let blocksStart: Bool
    public init(_ subject: String, _ message: String, blocksStart: Bool = false) {
        self.subject = subject
        self.message = message
        self.blocksStart = blocksStart
    }
    public var description: String { "\(subject): \(message)" }
}

extension Topology {
    /// Every organisation: the declared ones, or, in a file without `organisations`,
    /// one per code its nodes name (a fund by its id, every other code a region).
    public var organisationList: [OrganisationEntry] {
        if let organisations { return organisations }
        var seen: [String] = []
        for n in nodes where !seen.contains(n.organisationID) { seen.append(n.organisationID) }
        return seen.map { OrganisationEntry(id: $0, kind: Fund.ids.contains($0) ? .fund : .region) }
    }

    public func organisation(_ id: String) -> OrganisationEntry? { organisationList.first { $0.id == id } }

    /// The code readable ticket numbers of `entry`'s organisation start with.
    public func numbering(of entry: NodeEntry) -> String {
        organisation(entry.organisationID)?.numberingCode ?? entry.organisationID
    }

    /// The links every node gets: each organisation's nodes with each other; each
    /// regional centre with every other regional centre and every fund node; a fund's
    /// nodes with every regional centre. Remote offices reach other organisations only
    /// through their centre.
    public var links: [ReplicationLink] {
        var out: [ReplicationLink] = []
        func role(_ n: NodeEntry) -> NodeRole? { n.role.flatMap(NodeRole.init(rawValue:)) }
        func gateway(_ n: NodeEntry) -> Bool { role(n) == .regionalCentre || role(n) == .fund }
        for (i, x) in nodes.enumerated() {
            for y in nodes[(i + 1)...] {
                let (a, b) = x.id < y.id ? (x.id, y.id) : (y.id, x.id)
                if x.organisationID == y.organisationID {
                    out.append(ReplicationLink(a: a, b: b, scope: .organisation))
                } else if gateway(x) && gateway(y) && !(role(x) == .fund && role(y) == .fund) {
                    out.append(ReplicationLink(a: a, b: b, scope: .transfers))
                }
            }
        }
        return out
    }

    /// Everything wrong with the topology's structure: ids, organisations, roles,
    /// addresses, numbering series. Certificates are checked apart (`CertificateCheck`).
    public var problems: [TopologyProblem] {
        var p: [TopologyProblem] = []
        let organisations = organisationList
        var byID: [String: OrganisationEntry] = [:]
        // Organisations.
        for o in organisations {
            if byID[o.id] != nil { p.append(.init(o.id, "the organisation is listed twice")) }
            byID[o.id] = byID[o.id] ?? o
            switch o.kind {
            case .region:
                if !(o.id.count == 2 && o.id.allSatisfy(\.isASCII) && o.id.allSatisfy(\.isNumber)) {
                    p.append(.init(o.id, "a region is named by its two-digit code (38 Irkutsk oblast, 52 Nizhny Novgorod oblast, 77 Moscow)"))
                }
            case .fund:
                if !Fund.ids.contains(o.id) {
                    p.append(.init(o.id, "a fund is one of \(Fund.ids.joined(separator: ", "))"))
                }
            }
            // Seconds a token's exp and nbf are stretched by (`now + leeway × 1000`): bounded,
            // or a value from the file overflowed on every token checked.
            if let l = o.identityProvider?.leewaySeconds, !(0...3600).contains(l) {
                p.append(.init(o.id, "identityProvider.leewaySeconds \(l) must be 0 to 3600", blocksStart: true))
            }
            if !RegionCode.isValid(o.numberingCode) {
                p.append(.init(o.id, "numbering code \"\(o.numberingCode)\" must be 2–8 lower-case letters or digits (it starts readable ticket numbers)"))
            }
        }
        var numbering: [String: String] = [:]
        for o in organisations {
            if let other = numbering[o.numberingCode], other != o.id {
                p.append(.init(o.id, "numbering code \"\(o.numberingCode)\" is also \(other)'s; ticket numbers would collide"))
            }
            numbering[o.numberingCode] = o.id
        }
        // Nodes.
        var ids = Set<String>()
        var addresses: [String: String] = [:]
        var series: [String: String] = [:]
        var centres: [String: [String]] = [:]
        for n in nodes {
            if !NodeID.isValid(n.id) {
                p.append(.init(n.id, "a node id is 1–63 lower-case letters, digits and hyphens", blocksStart: true))
            }
            if !ids.insert(n.id).inserted { p.append(.init(n.id, "the node is listed twice", blocksStart: true)) }
            guard OrganisationID.isValid(n.organisationID) else {
                p.append(.init(n.id, "names no valid organisation (\"organisation\": a region's code like 38, or a fund: \(Fund.ids.joined(separator: ", ")))",
                               blocksStart: true))
                continue
            }
            guard let org = byID[n.organisationID] else {
                p.append(.init(n.id, "organisation \"\(n.organisationID)\" is not among the organisations (\(organisations.map(\.id).joined(separator: ", ")))",
                               blocksStart: true))
                continue
            }
            switch n.role.flatMap(NodeRole.init(rawValue:)) {
            case nil:
                p.append(.init(n.id, "role \"\(n.role ?? "")\" must be one of \(NodeRole.allCases.map(\.rawValue).joined(separator: ", "))"))
            case .regionalCentre?, .remoteOffice?:
                if org.kind != .region { p.append(.init(n.id, "a \(n.role!) belongs to a region, and \(org.id) is a fund; use role fund")) }
                if n.role == NodeRole.regionalCentre.rawValue { centres[org.id, default: []].append(n.id) }
            case .fund?:
                if org.kind != .fund { p.append(.init(n.id, "role fund is for a fund's nodes, and \(org.id) is a region; use regional-centre or remote-office")) }
            }
            for (what, address) in [("listen", n.listen), ("replication", n.replication)] {
                guard let address else { continue }
                do {
                    let (host, port) = try NodeSettings.parseListen(address)
                    let key = "\(host):\(port)"
                    if let other = addresses[key] {
                        p.append(.init(n.id, "\(what) address \(key) is also \(other); give each listener its own port"))
                    }
                    addresses[key] = "\(n.id)'s \(what) address"
                } catch {
                    p.append(.init(n.id, "\(what) \"\(address)\" is not HOST:PORT"))
                }
            }
            if n.replication != nil && (n.identity == nil || n.identity?.ca == nil) {
                p.append(.init(n.id, "a replication address needs an identity {cert, key, ca} from the federation CA"))
            }
            let s = n.numberSeries ?? 0
            if !(0...99).contains(s) {
                p.append(.init(n.id, "numberSeries \(s) must be 0 to 99", blocksStart: true))
            } else if let other = series["\(org.id)/\(s)"] {
                p.append(.init(n.id, "numberSeries \(s) is also \(other)'s in \(org.id); give each node of an organisation its own",
                               blocksStart: true))
            } else {
                series["\(org.id)/\(s)"] = n.id
            }
            // Zone offsets are UTC−12…UTC+14, as `--utc-offset`; the node multiplies them into
            // milliseconds for ticket numbers and deadlines, where a value from the file overflowed.
            if let o = n.utcOffsetMinutes, !(-720...840).contains(o) {
                p.append(.init(n.id, "utcOffsetMinutes \(o) must be -720 to 840 (UTC−12 to UTC+14)", blocksStart: true))
            }
            if n.peers != nil {
                p.append(.init(n.id, "peers are derived from organisations and roles; remove the hand-written list"))
            }
        }
        for o in organisations where o.kind == .region {
            let c = centres[o.id] ?? []
            let members = nodes.filter { $0.organisationID == o.id }
            if !members.isEmpty && c.count != 1 {
                p.append(.init(o.id, c.isEmpty ? "the region has no regional-centre node; give one node that role"
                                   : "the region has \(c.count) regional centres (\(c.joined(separator: ", "))); it has one, the others are remote offices"))
            }
        }
        for o in organisations where !nodes.contains(where: { $0.organisationID == o.id }) {
            p.append(.init(o.id, "the organisation has no node"))
        }
        // Links: every node that replicates must have an address for each of its links.
        for l in links {
            for (from, to) in [(l.a, l.b), (l.b, l.a)] {
                if let f = nodes.first(where: { $0.id == from }), f.replication != nil,
                   let t = nodes.first(where: { $0.id == to }), t.replication == nil {
                    p.append(.init(from, "its link to \(to) has no address: \(to) has no replication address"))
                }
            }
        }
        return p
    }
}
