import ArgumentParser
import CaseStore
import Foundation

struct StoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store", abstract: "Inspect a node's LMDB store directly.", subcommands: [Stats.self])

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
}
