import ArgumentParser
import EKCNode
import Foundation

/// The replica digests of every link, as `ekc cluster health` shows them: each side's
/// digest of the scope the two share (`GET /v1/digest?scope=`), compared.
struct LinkDigests {
    struct Row {
        var a: String, b: String, scope: String
        var state: String
        var records: String
        var lastRepair: String
        /// Digests differ while both pulls are caught up: not replication in flight.
        var diverged: Bool
        var json: [String: Any]
    }

    /// A node that answered with details: its client, organisation and replication status.
    struct Node {
        var id: String
        var organisation: String
        var api: APIClient
        var replication: [String: Any]
    }

    static func rows(_ nodes: [Node]) async -> [Row] {
        let byID = Dictionary(nodes.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        var seen = Set<[String]>()
        var rows: [Row] = []
        for n in nodes.sorted(by: { $0.id < $1.id }) {
            for p in peers(n) {
                let pair = [n.id, p].sorted()
                guard seen.insert(pair).inserted, let other = byID[p] else { continue }
                rows.append(await row(n, other))
            }
        }
        return rows
    }

    static func peers(_ n: Node) -> [String] {
        (n.replication["peers"] as? [[String: Any]] ?? []).compactMap { $0["node"] as? String }
    }

    static func link(_ n: Node, to peer: String) -> [String: Any]? {
        (n.replication["peers"] as? [[String: Any]] ?? []).first { $0["node"] as? String == peer }
    }

    static func row(_ a: Node, _ b: Node) async -> Row {
        let scope = a.organisation == b.organisation ? a.organisation : "\(a.organisation)|\(b.organisation)"
        func digest(_ n: Node, _ scope: String) async -> [String: Any]? {
            let q = scope.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? scope
            return (try? await n.api.call("GET", "/v1/digest?scope=\(q)"))?.0 as? [String: Any]
        }
        let da = await digest(a, b.organisation), db = await digest(b, a.organisation)
        let caughtUp = [link(a, to: b.id), link(b, to: a.id)].allSatisfy { ($0?["lagRecords"] as? Int) == 0 && ($0?["connected"] as? Bool) == true }
        let repairs = [link(a, to: b.id), link(b, to: a.id)].compactMap { l -> String? in
            guard let r = l?["antiEntropy"] as? [String: Any] else { return nil }
            if let e = r["error"] as? String { return "failed: \(e)" }
            return (r["equal"] as? Bool) == true ? "equal" : "\(r["differingRecords"] ?? 0) differed, \(r["repaired"] ?? 0) repaired"
        }
        var state: String
        var diverged = false
        if let da, let db {
            let ra = da["root"] as? String, rb = db["root"] as? String
            if (da["ready"] as? Bool) != true || (db["ready"] as? Bool) != true {
                state = "building"
            } else if ra == rb {
                state = "equal"
            } else if caughtUp {
                state = "DIVERGED"
                diverged = true
            } else {
                state = "differs (replication in flight)"
            }
        } else {
            state = "unknown (no digest)"
        }
        let records = "\(da?["records"] ?? "-")/\(db?["records"] ?? "-")"
        return Row(a: a.id, b: b.id, scope: scope, state: state, records: records,
                   lastRepair: repairs.isEmpty ? "-" : repairs.joined(separator: "; "), diverged: diverged,
                   json: ["a": a.id, "b": b.id, "scope": scope, "state": state, "diverged": diverged,
                          "rootA": da?["root"] ?? NSNull(), "rootB": db?["root"] ?? NSNull(),
                          "recordsA": da?["records"] ?? NSNull(), "recordsB": db?["records"] ?? NSNull()])
    }
}

extension ClusterCommand {
    struct Repair: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Compare every link's digests now and pull what differs (anti-entropy on demand).",
            discussion: "Each node compares with each of its peers and pulls the records the peer holds differently. Needs `ops` tokens (ekc login --role ops --org ORG). Exits 1 when a round failed.")
        @Option(help: "Topology file (cluster/*.json).") var config: String
        @Option(help: "Only this node's links.") var node: String?
        @Flag var json = false

        func run() async throws {
            let topology: Topology
            do { topology = try Topology.load(config) } catch let e as ConfigurationError { throw CLIError(e.description) }
            var rows: [[String]] = []
            var out: [Any] = []
            var failed = 0
            for n in topology.nodes where node == nil || n.id == node {
                let api = APIClient(base: "http://\(n.listen ?? "127.0.0.1:8400")", organisation: n.organisationID)
                guard let (repl, _) = try? await api.call("GET", "/v1/replication"),
                      let peers = (repl as? [String: Any])?["peers"] as? [[String: Any]] else {
                    rows.append([n.id, "-", "unreachable or no ops token", "-", "-"])
                    failed += 1
                    continue
                }
                for p in peers.compactMap({ $0["node"] as? String }) {
                    do {
                        let (r, _) = try await api.call("POST", "/v1/digest/repair", body: ["peer": p])
                        let round = r as? [String: Any] ?? [:]
                        out.append(round)
                        let state = (round["equal"] as? Bool) == true ? "equal" : (round["ready"] as? Bool) == false ? "building" : "differed"
                        rows.append([n.id, p, state, "\(round["differingRecords"] ?? 0)", "\(round["repaired"] ?? 0)"])
                    } catch {
                        failed += 1
                        rows.append([n.id, p, "FAILED: \(error)", "-", "-"])
                    }
                }
            }
            if json { printJSON(try JSONSerialization.data(withJSONObject: out)) } else {
                printTable(["NODE", "PULLS FROM", "DIGESTS", "RECORDS DIFFERING", "REPAIRED"], rows)
            }
            if failed > 0 { throw ExitCode(1) }
        }
    }
}
