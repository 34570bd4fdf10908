import ArgumentParser
import EKCNode
import Foundation

struct ClusterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster", abstract: "Operations across the federation.", subcommands: [Health.self, Check.self, Repair.self])

    struct Health: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Every node of a topology: up or not, its store, each replication link's state and lag, conflicts waiting, overdue transfers, and whether each link's replica digests agree.",
            discussion: "Exits 2 when a node is down, 3 when a node gives no details (no ops token), 4 when a link's digests differ although both pulls are caught up (diverged replicas: `ekc cluster repair`).")
        @Option(help: "Topology file (cluster/*.json).") var config: String
        @Flag var json = false

        // Each node is asked with an `ops` token of its organisation, as `ekc login --role ops --org ORG` saves it.
        func run() async throws {
            let topology: Topology
            do { topology = try Topology.load(config) } catch let e as ConfigurationError { throw CLIError(e.description) }
            var report: [[String: Any]] = []
            var nodeRows: [[String]] = []
            var linkRows: [[String]] = []
            var down = 0
            var refused = 0
            var problems: [String] = []
            var overdueNodes = 0
            var detailed: [LinkDigests.Node] = []
            for n in topology.nodes {
                let url = "http://\(n.listen ?? "127.0.0.1:8400")"
                let api = APIClient(base: url, organisation: n.organisationID)
                do {
                    _ = try await api.anonymous("GET", "/v1/health")
                } catch {
                    down += 1
                    nodeRows.append([n.id, "DOWN", url, "-", "-", "-", "-", "-"])
                    report.append(["node": n.id, "up": false, "error": "\(error)"])
                    continue
                }
                do {
                    let (health, _) = try await api.call("GET", "/v1/health")
                    let (repl, _) = try await api.call("GET", "/v1/replication")
                    let store = (health as? [String: Any])?["store"] as? [String: Any] ?? [:]
                    let peers = (repl as? [String: Any])?["peers"] as? [[String: Any]] ?? []
                    let conflicts = (health as? [String: Any])?["conflicts"] as? Int ?? 0
                    let transfers = (health as? [String: Any])?["transfers"] as? [String: Any] ?? [:]
                    let overdueIn = transfers["overdueIncoming"] as? Int ?? 0, overdueOut = transfers["overdueOutgoing"] as? Int ?? 0
                    // The counts are the node's answer: not added (2^63 − 1 and 1 trapped the CLI).
                    let overdue = overdueIn > 0 || overdueOut > 0
                    if overdue { overdueNodes += 1 }
                    let release = (health as? [String: Any])?["release"] as? [String: Any]
                    nodeRows.append([n.id, "up", url, release.map { text($0["name"]) } ?? "-", text(store["tickets"]),
                                     text(store["lastSequence"]), String(conflicts),
                                     overdue ? "OVERDUE \(overdueIn) in, \(overdueOut) out" : "-"])
                    for p in peers {
                        let resync = (p["resync"] as? [String: Any]).map { "\(text($0["reason"])) \(text($0["checkpointSequence"]))→\(text($0["resumedAfter"]))" }
                        let refused = (p["rejected"] as? [String: Any]).flatMap { r -> String? in
                            guard let n = r["records"] as? Int, n > 0 else { return nil }
                            let reasons = (r["byReason"] as? [String: Int] ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }
                            return "\(n): " + reasons.joined(separator: ", ")
                        }
                        linkRows.append([n.id, text(p["node"]), (p["connected"] as? Bool) == true ? "connected" : "down",
                                         protocolShown(p),
                                         "\(text(p["appliedSequence"]))/\(text(p["peerSequence"]))", text(p["lagRecords"]),
                                         text(p["lagSeconds"]), (p["clockOffsetMillis"] as? Int).map { "\($0) ms" } ?? "-",
                                         resync ?? "-", refused ?? "-", shorten(text(p["lastError"]), 50)])
                    }
                    report.append(["node": n.id, "up": true, "health": health, "replication": repl, "conflicts": conflicts])
                    detailed.append(.init(id: n.id, organisation: n.organisationID, api: api, replication: repl as? [String: Any] ?? [:]))
                } catch {
                    // Up, but its details need an ops token of its organisation.
                    refused += 1
                    nodeRows.append([n.id, "up, NO DETAILS", url, "-", "-", "-", "-", "-"])
                    report.append(["node": n.id, "up": true, "error": "\(error)"])
                    problems.append("\(n.id): \(error)")
                }
            }
            let digests = await LinkDigests.rows(detailed)
            if json {
                printJSON(try JSONSerialization.data(withJSONObject: ["nodes": report, "digests": digests.map(\.json)] as [String: Any]))
            } else {
                printTable(["NODE", "STATE", "API", "RELEASE", "TICKETS", "SEQUENCE", "CONFLICTS", "TRANSFERS"], nodeRows)
                for p in problems { print(p) }
                if overdueNodes > 0 {
                    print("\n\(overdueNodes) node(s) hold unaccepted transfers past their due time: `ekc transfer inbox --overdue` on the receiving side")
                }
                print("")
                printTable(["NODE", "PULLS FROM", "LINK", "PROTOCOL", "APPLIED/PEER", "LAG RECORDS", "LAG S", "CLOCK OFFSET", "LAST RESYNC",
                            "REFUSED", "LAST ERROR"],
                           linkRows)
                print("")
                printTable(["LINK", "", "SCOPE", "DIGESTS", "RECORDS", "LAST COMPARISON"],
                           digests.map { [$0.a, $0.b, $0.scope, $0.state, $0.records, shorten($0.lastRepair, 60)] })
                let diverged = digests.filter(\.diverged).count
                if diverged > 0 {
                    print("\n\(diverged) link(s) hold diverged replicas: `ekc cluster repair --config \(config)` pulls what differs")
                }
            }
            if down > 0 { throw ExitCode(2) }
            if refused > 0 { throw ExitCode(3) }
            if digests.contains(where: \.diverged) { throw ExitCode(4) }
        }
    }

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate a topology file: organisations, nodes and roles, addresses, numbering series, certificates, and the links they give.",
            discussion: "Exits 1 and lists every problem (with what to do) when there is one; 0 when the topology is sound.")
        @Option(help: "Topology file (cluster/*.json).") var config: String
        @Flag(help: "Print the links every node gets.") var links = false
        @Flag var json = false

        func run() throws {
            let topology: Topology
            do { topology = try Topology.read(config) } catch let e as ConfigurationError { throw CLIError(e.description) }
            let problems = topology.problems + CertificateCheck.problems(topology, now: Date())
            let derived = topology.links
            if json {
                let out: [String: Any] = [
                    "organisations": topology.organisationList.count, "nodes": topology.nodes.count,
                    "links": derived.map { ["a": $0.a, "b": $0.b, "scope": $0.scope.rawValue] },
                    "problems": problems.map { ["subject": $0.subject, "message": $0.message] },
                ]
                printJSON(try JSONSerialization.data(withJSONObject: out))
            } else {
                let orgs = topology.organisationList
                let regions = orgs.filter { $0.kind == .region }.count
                let scoped = derived.filter { $0.scope == .transfers }.count
                print("\(config): \(regions) regions, \(orgs.count - regions) funds, \(topology.nodes.count) nodes, "
                      + "\(derived.count - scoped) links within organisations, \(scoped) between them (scoped to transfers)")
                if links {
                    print("")
                    printTable(["NODE", "NODE", "SCOPE"], derived.map { [$0.a, $0.b, $0.scope.rawValue] })
                }
                if !problems.isEmpty {
                    print("")
                    printTable(["WHERE", "PROBLEM"], problems.map { [$0.subject, $0.message] })
                }
            }
            if !problems.isEmpty {
                if !json { FileHandle.standardError.write(Data("\(problems.count) problem(s) in \(config)\n".utf8)) }
                throw ExitCode(1)
            }
            if !json { print("ok") }
        }
    }
}

/// A link's protocol as the health table shows it: the version, and what it speaks beyond
/// the base protocol ("v2", "v2 +retention"); "-" before its first stream. A node of a
/// release before capabilities does not report them: its links speak the base protocol.
func protocolShown(_ link: [String: Any]) -> String {
    guard let v = link["protocolVersion"] as? Int else { return "-" }
    let capabilities = link["capabilities"] as? [String] ?? []
    return capabilities.isEmpty ? "v\(v)" : "v\(v) +" + capabilities.joined(separator: ",")
}
