import ArgumentParser
import CaseModel
import CaseStore
import EKCNode
import Replication
import Foundation

struct StoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store", abstract: "Inspect a node's LMDB store directly.", subcommands: [Stats.self, Verify.self, Backup.self, Restore.self, Migrate.self])

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
        @Option(help: "A backup file (ekc store backup): checked against its manifest, then by the same rules.") var backup: String?
        @Option(help: "Topology file (cluster/*.json).") var config: String?
        @Option(help: "The node's id in the topology.") var nodeId: String?
        @Option(help: "Violations listed at most.") var limit: Int = 100
        @Flag var json = false

        func run() throws {
            var (entry, directory) = try topologyEntry(config: config, nodeId: nodeId)
            guard (1...10_000).contains(limit) else { throw CLIError("--limit must be 1 to 10000, not \(limit)") }
            if let backup {
                guard data == nil else { throw CLIError("--backup and --data name two stores: give one") }
                return try verifyBackup(backup, directory: directory)
            }
            guard let path = data ?? entry?.data else { throw CLIError("say which store: --data DIR, or --config FILE --node-id ID") }
            try verifyStore(path, directory: directory)
        }

        /// The manifest's word first (size, SHA-256, the store's meta); then the store's
        /// rules, on a copy in a temporary directory, since opening a store may write to it.
        func verifyBackup(_ file: String, directory: [NodeID: String]) throws {
            let checked: (manifest: BackupManifest, problems: [String])
            do { checked = try CaseStore.checkBackup(file) } catch { throw CLIError("ekc store verify: \(error)") }
            guard checked.problems.isEmpty else {
                if json {
                    printJSON(try JSONSerialization.data(withJSONObject: [
                        "backup": file, "clean": false, "violations": checked.problems.map { ["rule": "manifest", "detail": $0] }]))
                } else {
                    print("backup \(file): it is not the copy its manifest describes")
                    for p in checked.problems { print("  manifest: \(p)") }
                }
                throw ExitCode(1)
            }
            if !json { print("backup \(file): \(checked.manifest.bytes) bytes, SHA-256 and meta as its manifest says (node \(checked.manifest.node), sequence \(checked.manifest.lastSequence))") }
            let result = try Verify.rulesOfBackup(file, directory: directory, limit: limit)
            try report(result, shown: file)
        }

        /// The store's rules on a copy of the backup `file` in a temporary directory (opening
        /// a store may write to it, and a backup is only read).
        static func rulesOfBackup(_ file: String, directory: [NodeID: String], limit: Int) throws -> StoreVerification {
            let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("ekc-verify-\(UUID().uuidString)").path
            defer { try? FileManager.default.removeItem(atPath: scratch) }
            do {
                try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: false,
                                                        attributes: [.posixPermissions: 0o700])
                try FileManager.default.copyItem(atPath: file, toPath: scratch + "/data.mdb")
            } catch { throw CLIError("copying \(file) to \(scratch): \(error)") }
            return try rules(scratch, directory: directory, nodeId: nil, limit: limit, shown: file)
        }

        func verifyStore(_ path: String, directory: [NodeID: String]) throws {
            try report(try Verify.rules(path, directory: directory, nodeId: nodeId, limit: limit, shown: path), shown: path)
        }

        /// The store's rules on the store at `path`; `shown` names it in messages.
        static func rules(_ path: String, directory known: [NodeID: String], nodeId: String?, limit: Int,
                          shown: String) throws -> StoreVerification {
            var directory = known
            guard FileManager.default.fileExists(atPath: path + "/data.mdb") else {
                throw CLIError("\(path) holds no store (no data.mdb); pass --data DIR of a node")
            }
            do {
                guard let owner = try CaseStore.owningNode(path: path), let node = NodeID(owner) else {
                    throw CLIError("\(shown) is not a case store (no node id in its meta table)")
                }
                if let nodeId, nodeId != owner { throw CLIError("\(shown) is the store of node \(owner), not \(nodeId)") }
                let region = directory[node] ?? "unknown"
                if directory[node] == nil { directory[node] = region }
                var c = StoreConfiguration(node: node, region: region, directory: Directory(directory))
                c.environment.initialMapSize = 0
                let store = try CaseStore(path: path, configuration: c)
                defer { store.close() }
                return try store.verify(limit: limit)
            } catch let e as CLIError {
                throw e
            } catch {
                FileHandle.standardError.write(Data("ekc store verify: \(shown): \(error)\n".utf8))
                throw ExitCode(2)
            }
        }

        func report(_ result: StoreVerification, shown: String) throws {
            if json {
                printJSON(try JSONSerialization.data(withJSONObject: Verify.json(result, shown: shown)))
            } else {
                print("store \(shown): \(result.feedEntries) feed entries, \(result.records) records, \(result.tickets) tickets, \(result.transfers) transfers")
                for v in result.violations { print("  \(v.rule): \(v.detail)") }
                if result.more > 0 { print("  … and \(result.more) more") }
                print(result.isClean ? "every rule holds" : "\(result.violations.count + result.more) violations")
            }
            if !result.isClean { throw ExitCode(1) }
        }

        static func json(_ result: StoreVerification, shown: String) -> [String: Any] {
            [
                "path": shown, "clean": result.isClean, "feedEntries": result.feedEntries, "records": result.records,
                "tickets": result.tickets, "transfers": result.transfers, "more": result.more,
                "violations": result.violations.map { ["rule": $0.rule, "detail": $0.detail] },
            ]
        }
    }

    struct Backup: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Copy a store while its node serves: LMDB's compacting copy into FILE, and FILE.manifest.json beside it.",
            discussion: """
            The copy is taken from one read transaction (the node goes on writing) and is a
            store of its own, one file (mdb_stat -n FILE reads it). The manifest names the
            node, the store, its format and last sequence, and the file's size and SHA-256;
            `ekc store verify --backup FILE` checks both. Never overwrites: FILE and its
            manifest must not exist. Exit status 0 done, 1 refused or failed (nothing left
            under FILE's name).
            """)
        @Option(help: "The node's data directory.") var data: String
        @Option(help: "The backup file to write (must not exist).") var to: String
        @Flag var json = false

        func run() throws {
            let started = Date()
            let m: BackupManifest
            do {
                m = try CaseStore.backup(path: data, to: to, release: Release.name,
                                         now: Int64(started.timeIntervalSince1970 * 1000))
            } catch { throw CLIError("ekc store backup: \(error)") }
            let seconds = Date().timeIntervalSince(started)
            if json {
                printJSON(try JSONEncoder().encode(m))
            } else {
                print("backup of \(m.node) (store \(m.storeId), format \(m.storeFormat)) through sequence \(m.lastSequence): "
                      + "\(to), \(m.bytes) bytes in \(String(format: "%.2f", seconds)) s; manifest \(to)\(BackupManifest.suffix)")
            }
        }
    }

    struct Restore: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a backup the node's store again: a store of its own, in an empty data directory.",
            discussion: """
            Checks the backup (ekc store verify --backup: its manifest, then the store's
            rules) and copies it into DIR, which must be empty or missing. The restored
            store gets a new store id, so every peer resends what the backup lacks (the
            node's own writes since the backup included); readable numbers go on from the
            next million of each year's counter, so none issued since the backup is issued
            again; the node takes no local write (503 `restoring`) until it has caught up
            with every peer once, so that its clock is past every stamp of its own a peer
            holds; the access log goes on with an entry recording the restore.
            The copy is prepared beside DIR and renamed into place: a restore cut short
            leaves DIR as it was. Exit status 0 restored, 1 refused (nothing written to DIR).
            """)
        @Option(help: "The backup file (ekc store backup), with FILE.manifest.json beside it.") var backup: String
        @Option(help: "The data directory to restore into (empty or missing; default: the topology's, with --config).") var data: String?
        @Option(help: "Topology file (cluster/*.json): the node's organisation and data directory.") var config: String?
        @Option(help: "The node's id in the topology.") var nodeId: String?
        @Option(help: "Why the store is restored, for the access log (1-500 characters).") var reason: String
        @Option(help: "Who restores it, for the access log (default: the user running the command).") var by: String?
        @Flag var json = false

        func run() async throws {
            let why = reason.trimmingCharacters(in: .whitespacesAndNewlines)
            guard (1...500).contains(why.count) else { throw CLIError("--reason must be 1 to 500 characters: why the store is restored") }
            let subject = by ?? ProcessInfo.processInfo.environment["USER"] ?? "ops"
            guard (try? Actor.validate(user: subject, role: "ops", field: "by")) != nil else {
                throw CLIError("--by \(subject): a user name is 1 to 64 letters, digits, '.', '_', '-' or '@'")
            }
            var (entry, directory) = try topologyEntry(config: config, nodeId: nodeId)
            guard let target = data ?? entry?.data else { throw CLIError("say where to: --data DIR, or --config FILE --node-id ID") }
            // The backup as its manifest describes it, and sound by the store's rules.
            let manifest: BackupManifest
            do {
                let checked = try CaseStore.checkBackup(backup)
                guard checked.problems.isEmpty else {
                    throw CLIError("ekc store restore: \(backup) is not the copy its manifest describes: "
                                   + checked.problems.joined(separator: "; "))
                }
                manifest = checked.manifest
            } catch let e as BackupError { throw CLIError("ekc store restore: \(e)") }
            guard let node = NodeID(manifest.node) else { throw CLIError("ekc store restore: the backup names node \(manifest.node)") }
            if let nodeId, nodeId != manifest.node {
                throw CLIError("ekc store restore: \(backup) is a backup of node \(manifest.node), not \(nodeId)")
            }
            // An older backup is migrated when the restored store is opened; a newer one is
            // refused before anything is copied.
            guard manifest.storeFormat <= CaseStore.storeFormat else {
                throw CLIError("ekc store restore: the backup is store format \(manifest.storeFormat), written by release "
                               + "\(manifest.release); this build (release \(StoreFormats.release)) writes format \(CaseStore.storeFormat): "
                               + "restore it with release \(manifest.release) or later")
            }
            let rules = try Verify.rulesOfBackup(backup, directory: directory, limit: 20)
            guard rules.isClean else {
                throw CLIError("ekc store restore: \(backup) breaks the store's rules (ekc store verify --backup lists them): "
                               + rules.violations.prefix(3).map(\.description).joined(separator: "; "))
            }
            // Prepared beside the target, then renamed into place.
            let fm = FileManager.default
            let parent = ((target as NSString).standardizingPath as NSString).deletingLastPathComponent
            let staging = (parent.isEmpty ? "." : parent) + "/." + ((target as NSString).lastPathComponent) + ".restoring-\(UUID().uuidString.prefix(8))"
            do { try CaseStore.isEmptyRestoreTarget(target) } catch { throw CLIError("ekc store restore: \(error)") }
            let record: RestoreRecord
            do {
                try CaseStore.placeBackup(backup, into: staging)
                let organisation = directory[node] ?? entry?.organisationID ?? "unknown"
                if directory[node] == nil { directory[node] = organisation }
                var c = StoreConfiguration(node: node, region: organisation, utcOffsetMinutes: entry?.utcOffsetMinutes ?? 180,
                                           directory: Directory(directory))
                c.environment.initialMapSize = 0
                let store = try CaseStore(path: staging, configuration: c)
                defer { store.close() }
                record = try await store.markRestored(RestoreRequest(manifest: manifest, subject: subject, reason: why,
                                                                     organisation: organisation))
            } catch {
                try? fm.removeItem(atPath: staging)
                throw CLIError("ekc store restore: \(error)")
            }
            do {
                if fm.fileExists(atPath: target) { try fm.removeItem(atPath: target) }  // empty, checked above
                try fm.moveItem(atPath: staging, toPath: target)
            } catch {
                throw CLIError("ekc store restore: moving the restored store from \(staging) to \(target): \(error); "
                               + "it is complete in \(staging): move it there by hand")
            }
            if json {
                printJSON(try JSONEncoder().encode(record))
            } else {
                print("backup \(backup): as its manifest says, and every rule holds (\(rules.records) records, \(rules.tickets) tickets)")
                print("restored \(node.value) into \(target): store \(record.storeId) (was \(record.fromStoreId), backup through "
                      + "sequence \(record.backupSequence)); numbers of \(record.numbersYear) and before go on after \(record.numbersFrom); "
                      + "the node takes local writes once it has caught up with every peer")
            }
        }
    }

    struct Migrate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Bring a store of an older format to this build's, step by step; --dry-run says what would run.",
            discussion: """
            Each step is idempotent and commits in chunks, recording where it stands: a run
            killed at any point (kill -9 included) resumes where it stopped when run again,
            or when the node starts (a node migrates its store as it opens it). A store of a
            newer format than this build's is refused with the release that wrote it. The
            node must be stopped: the data directory's lock (ekc.lock) is taken while the
            migration runs. Exit status 0 done (or nothing to do), 1 refused.
            """)
        @Option(help: "The node's data directory.") var data: String
        @Flag(help: "Say what would run; write nothing.") var dryRun = false
        @Flag var json = false

        func run() throws {
            guard FileManager.default.fileExists(atPath: data + "/data.mdb") else {
                throw CLIError("\(data) holds no store (no data.mdb); pass --data DIR of a node")
            }
            let state: StoreFormatState
            do { state = try CaseStore.formatState(path: data) } catch { throw CLIError("ekc store migrate: \(data): \(error)") }
            var report: [String: Any] = ["path": data, "targetFormat": Int(CaseStore.storeFormat), "release": StoreFormats.release]
            switch state {
            case .refused(let why):
                throw CLIError("ekc store migrate: \(why)")
            case .new, .current:
                report["format"] = Int(CaseStore.storeFormat)
                report["steps"] = [String]()
                if json { printJSON(try JSONSerialization.data(withJSONObject: report)) } else {
                    print("store \(data): format \(CaseStore.storeFormat), this build's; nothing to migrate")
                }
                return
            case .migratable(let format, let steps, let resuming):
                report["format"] = Int(format)
                report["steps"] = steps
                report["resuming"] = resuming.map { Int($0) } as Any
                if !json {
                    print("store \(data): format \(format); this build (release \(StoreFormats.release)) writes format \(CaseStore.storeFormat)"
                          + (resuming.map { ": an interrupted migration resumes at step \($0) → \($0 + 1)" } ?? ""))
                    for s in steps { print("  step \(s)") }
                }
                if dryRun {
                    report["dryRun"] = true
                    if json { printJSON(try JSONSerialization.data(withJSONObject: report)) } else { print("dry run: nothing written") }
                    return
                }
            }
            let lock: DataDirectoryLock
            do { lock = try DataDirectoryLock(directory: data, holder: "ekc store migrate") } catch {
                throw CLIError("ekc store migrate: \(error)")
            }
            defer { lock.release() }
            let started = Date()
            do {
                guard let owner = try CaseStore.owningNode(path: data), let node = NodeID(owner) else {
                    throw CLIError("\(data) is not a case store (no node id in its meta table)")
                }
                var c = StoreConfiguration(node: node, region: "unknown", directory: Directory([node: "unknown"]))
                c.environment.initialMapSize = 0
                let quiet = json
                c.migrationProgress = { p in
                    if !quiet { print("  \(p.from) → \(p.to): \(p.finished ? "done" : "chunk \(p.chunks)")") }
                }
                let store = try CaseStore(path: data, configuration: c)
                store.close()
            } catch let e as CLIError {
                throw e
            } catch {
                throw CLIError("ekc store migrate: \(data): \(error) (run it again: the migration resumes where it stopped)")
            }
            let seconds = Date().timeIntervalSince(started)
            report["seconds"] = seconds
            if json { printJSON(try JSONSerialization.data(withJSONObject: report)) } else {
                print("store \(data): format \(CaseStore.storeFormat) in \(String(format: "%.2f", seconds)) s")
            }
        }
    }
}

/// With `--config FILE --node-id ID`: the node's entry and every node's organisation;
/// without `--config`, neither.
func topologyEntry(config: String?, nodeId: String?) throws -> (Topology.NodeEntry?, [NodeID: String]) {
    guard let config else { return (nil, [:]) }
    let topology: Topology
    do { topology = try Topology.load(config) } catch let e as ConfigurationError { throw CLIError(e.description) }
    guard let nodeId else { throw CLIError("--config needs --node-id: one of \(topology.nodes.map(\.id).joined(separator: ", "))") }
    do { return (try topology.node(nodeId), topology.directory) } catch let e as ConfigurationError { throw CLIError(e.description) }
}
