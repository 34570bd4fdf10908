import ArgumentParser
import CaseModel
import CaseStore
import EKCNode
import Replication
import Foundation

struct StoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store", abstract: "Inspect a node's LMDB store directly.", subcommands: [Stats.self, Verify.self])

    struct Stats: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Sizes and entry counts of every database in a store.")
        @Option(help: "The node's data directory.") var data: String = ".ekc/irk-dev"
        @Flag var json = false

        func run() throws {
            guard FileManager.default.fileExists(atPath: data + "/data.mdb") else {
                throw CLIError("\(data) holds no store (no data.mdb); pass --data DIR of a node")
            }
            let (info, tables) = try CaseStore.inspect(path: data)
            // The file's own counts: a damaged one that adds up past Int is named, not trapped on.
            let pages = try tables.map { t -> Int in
                guard let p = t.1.pages else { throw CLIError("\(data): database \(t.0) is damaged: its page counts add up past \(Int.max)") }
                return p
            }
            if json {
                let obj: [String: Any] = [
                    "path": data, "mapSizeBytes": info.mapSize, "usedBytes": info.usedBytes,
                    "lastTransaction": info.lastTransactionID, "readers": info.readersInUse,
                    "databases": Dictionary(uniqueKeysWithValues: zip(tables, pages).map { ($0.0.0, ["entries": $0.0.1.entries, "depth": $0.0.1.depth,
                        "pages": $0.1]) }),
                ]
                printJSON(try JSONSerialization.data(withJSONObject: obj))
                return
            }
            print("store \(data): map \(info.mapSize >> 20) MiB, used \(info.usedBytes >> 10) KiB, last txn \(info.lastTransactionID), readers \(info.readersInUse)")
            printTable(["DATABASE", "ENTRIES", "DEPTH", "PAGES"], zip(tables, pages).map {
                [$0.0.0, String($0.0.1.entries), String($0.0.1.depth), String($0.1)]
            })
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check a store's invariants: feed, records, views, indexes, transfers, purges.",
            discussion: """
            Reads the whole store in one read transaction (a running node may keep writing).
            Exit status: 0 clean, 1 a rule is broken (each violation is listed), 2 the store
            cannot be read. With --config and --node-id the node's data directory and its
            organisation come from the topology; with --data alone the node is the one the
            store records, and rules that need organisations assume none is known.
            """)
        @Option(help: "The node's data directory (default: the topology's, with --config).") var data: String?
        @Option(help: "Topology file (cluster/*.json).") var config: String?
        @Option(help: "The node's id in the topology.") var nodeId: String?
        @Option(help: "Violations listed at most.") var limit: Int = 100
        @Flag var json = false

        func run() throws {
            var directory: [NodeID: String] = [:]
            var entry: Topology.NodeEntry?
            if let config {
                let topology: Topology
                do { topology = try Topology.load(config) } catch let e as ConfigurationError { throw CLIError(e.description) }
                guard let nodeId else { throw CLIError("--config needs --node-id: one of \(topology.nodes.map(\.id).joined(separator: ", "))") }
                do { entry = try topology.node(nodeId) } catch let e as ConfigurationError { throw CLIError(e.description) }
                directory = topology.directory
            }
            guard let path = data ?? entry?.data else { throw CLIError("say which store: --data DIR, or --config FILE --node-id ID") }
            guard (1...10_000).contains(limit) else { throw CLIError("--limit must be 1 to 10000, not \(limit)") }
            guard FileManager.default.fileExists(atPath: path + "/data.mdb") else {
                throw CLIError("\(path) holds no store (no data.mdb); pass --data DIR of a node")
            }
            let result: StoreVerification
            do {
                guard let owner = try CaseStore.owningNode(path: path), let node = NodeID(owner) else {
                    throw CLIError("\(path) is not a case store (no node id in its meta table)")
                }
                if let nodeId, nodeId != owner { throw CLIError("\(path) is the store of node \(owner), not \(nodeId)") }
                let region = directory[node] ?? "unknown"
                if directory[node] == nil { directory[node] = region }
                var c = StoreConfiguration(node: node, region: region, directory: Directory(directory))
                c.environment.initialMapSize = 0
                let store = try CaseStore(path: path, configuration: c)
                defer { store.close() }
                result = try store.verify(limit: limit)
            } catch let e as CLIError {
                throw e
            } catch {
                FileHandle.standardError.write(Data("ekc store verify: \(path): \(error)\n".utf8))
                throw ExitCode(2)
            }
            if json {
                let obj: [String: Any] = [
                    "path": path, "clean": result.isClean, "feedEntries": result.feedEntries, "records": result.records,
                    "tickets": result.tickets, "transfers": result.transfers, "more": result.more,
                    "violations": result.violations.map { ["rule": $0.rule, "detail": $0.detail] },
                ]
                printJSON(try JSONSerialization.data(withJSONObject: obj))
            } else {
                print("store \(path): \(result.feedEntries) feed entries, \(result.records) records, \(result.tickets) tickets, \(result.transfers) transfers")
                for v in result.violations { print("  \(v.rule): \(v.detail)") }
                if result.more > 0 { print("  … and \(result.more) more") }
                print(result.isClean ? "every rule holds" : "\(result.violations.count + result.more) violations")
            }
            if !result.isClean { throw ExitCode(1) }
        }
    }
}
