import Foundation
import LMDB

// Store formats and the steps between them (issue 19, item 3). A store records its format
// (meta `schema_version`) and the release that last opened it (meta `release`). Opening
// an older store runs the steps from its format up to this build's, in order; each step
// is idempotent and works in chunks of one transaction each, recording where it stands
// (meta `migration`: the step's format and the last key done), so that a kill -9 at any
// point resumes where the last committed chunk left off. A store newer than this build is
// refused with the release that wrote it; a store older than the first format a step
// starts from is refused with what to do.

/// The releases of this project and the store format each one writes, for messages:
/// the first release that writes each format.
public enum StoreFormats {
    /// This build's release (EKCNode's `Release.name` is this).
    public static let release = "0.19.0-dev"
    public static let firstRelease: [UInt32: String] = [2: "0.18.0", 3: "0.19.0"]
    /// The oldest format a step starts from: format 1 held whole-ticket replicas.
    public static let oldestMigratable: UInt32 = 2
}

/// One step from format `from` to `from + 1`.
struct MigrationStep: Sendable {
    let from: UInt32
    /// What the step does, for `ekc store migrate` and the log.
    let summary: String
    /// One chunk in `txn`: at most `budget` items after `after` (nil: the first chunk).
    /// Returns where it stopped, or nil once the step is complete. Rerunning a chunk
    /// (after a crash before its commit) must give the same store.
    let chunk: @Sendable (_ txn: WriteTransaction, _ schema: Schema, _ after: [UInt8]?, _ budget: Int) throws -> [UInt8]?
}

/// Where a migration stands, reported after every chunk.
public struct MigrationProgress: Sendable, Equatable {
    public let from: UInt32
    public let to: UInt32
    public let summary: String
    /// Chunks (transactions) committed by this run in this step.
    public let chunks: Int
    public let finished: Bool
}

/// What a store's format says about this build.
public enum StoreFormatState: Sendable, Equatable {
    /// A new store (no format recorded yet).
    case new
    case current
    /// Older: the steps from `format` up to this build's would run.
    case migratable(format: UInt32, steps: [String], resumingAt: UInt32?)
    /// Newer than this build, or older than any step starts from: why, for a person.
    case refused(String)
}

enum Migrations {
    /// Every step, in order. Add one per format change, with a fixture store of the release
    /// before it under tests/fixtures/stores/ (tests/upgrade/make-fixture.sh).
    static let steps: [MigrationStep] = [
        // Format 3 (release 0.19): stores may carry a restore's marks (`restore`,
        // `restore_pending`, `numbers_floor`, Restore.swift) that a build of format 2
        // would ignore, numbering over numbers issued before a restore and taking writes
        // before the store has caught up. Nothing to rewrite; the step exists so that
        // such a build refuses the store rather than misread it.
        MigrationStep(from: 2, summary: "record the release; stores may carry restore marks from now on") { _, _, _, _ in nil },
    ]

    static let metaMigration: [UInt8] = Array("migration".utf8)
    static let metaRelease: [UInt8] = Array("release".utf8)

    static func recordedFormat(_ txn: some TransactionProtocol, _ meta: Database) throws -> UInt32? {
        try txn.withValue(meta, key: Schema.MetaKey.schemaVersion) { b -> UInt32 in
            guard let v = UInt64(bigEndianBytes: b), v <= UInt64(UInt32.max) else {
                throw CorruptRecord(what: "meta schema_version: \(b.count) bytes that are no format")
            }
            return UInt32(v)
        }
    }

    static func recordedRelease(_ txn: some TransactionProtocol, _ meta: Database) throws -> String? {
        try txn.withValue(meta, key: metaRelease) { String(decoding: $0, as: UTF8.self) }
    }

    /// Where an unfinished migration stands: the step's format and the last key done.
    static func resumePoint(_ txn: some TransactionProtocol, _ meta: Database) throws -> (from: UInt32, after: [UInt8]?)? {
        try txn.withValue(meta, key: metaMigration) { b -> (UInt32, [UInt8]?) in
            guard b.count >= 8, let v = UInt64(bigEndianBytes: b), v <= UInt64(UInt32.max) else {
                throw CorruptRecord(what: "meta migration: \(b.count) bytes that are no step")
            }
            return (UInt32(v), b.count > 8 ? Array(b[8...]) : nil)
        }
    }

    static func state(_ txn: some TransactionProtocol, _ meta: Database, path: String) throws -> StoreFormatState {
        guard let format = try recordedFormat(txn, meta) else { return .new }
        let current = Schema.version
        if format == current { return .current }
        if format > current {
            let wrote = try recordedRelease(txn, meta).map { "release \($0)" }
                ?? StoreFormats.firstRelease[format].map { "release \($0) or later" } ?? "a later release"
            return .refused("store at \(path) has format \(format), written by \(wrote); this build (release "
                            + "\(StoreFormats.release)) reads formats up to \(current): run \(wrote) or later on it "
                            + "(a store is never taken back to an older format; CHANGELOG.md lists each release's format)")
        }
        guard format >= StoreFormats.oldestMigratable else {
            return .refused("store at \(path) has format \(format), which holds whole-ticket replicas no step converts: "
                            + "move it aside and let the node catch up from its peers")
        }
        let pending = steps.filter { $0.from >= format && $0.from < current }
        return .migratable(format: format, steps: pending.map { "\($0.from) → \($0.from + 1): \($0.summary)" },
                           resumingAt: try resumePoint(txn, meta)?.from)
    }

    /// Runs every step from the store's format up to this build's, a chunk per
    /// transaction, reporting after each. Idempotent: a second run finds nothing to do.
    static func run(_ env: Environment, _ schema: Schema, path: String, budget: Int = 10_000, steps: [MigrationStep] = steps,
                    progress: (@Sendable (MigrationProgress) -> Void)?) throws {
        let start = try env.read { txn in try state(txn, schema.meta, path: path) }
        switch start {
        case .new, .current: return
        case .refused(let why): throw StoreError.identityMismatch(why)
        case .migratable: break
        }
        while true {
            let format = try env.read { txn in try recordedFormat(txn, schema.meta) } ?? Schema.version
            guard format < Schema.version else { return }
            guard let step = steps.first(where: { $0.from == format }) else {
                throw StoreError.corrupt("no migration step starts from format \(format)")
            }
            var after = try env.read { txn in try resumePoint(txn, schema.meta) }.flatMap { $0.from == format ? $0.after : nil }
            var chunks = 0
            while true {
                let next: [UInt8]? = try env.write { txn in
                    let next = try step.chunk(txn, schema, after, budget)
                    if let next {
                        try txn.put(schema.meta, key: metaMigration, value: UInt64(format).bigEndianBytes + next)
                    } else {
                        // The step is complete: the new format and the end of its progress, together.
                        try txn.delete(schema.meta, key: metaMigration)
                        try txn.put(schema.meta, key: Schema.MetaKey.schemaVersion, value: UInt64(format + 1).bigEndianBytes)
                    }
                    return next
                }
                chunks += 1
                progress?(MigrationProgress(from: format, to: format + 1, summary: step.summary, chunks: chunks, finished: next == nil))
                guard let next else { break }
                after = next
            }
        }
    }
}

extension CaseStore {
    /// What the store at `path` would need from this build, read without opening it as a
    /// case store and without writing (`ekc store migrate --dry-run`).
    public static func formatState(path: String) throws(StoreError) -> StoreFormatState {
        do {
            let env = try readOnlyEnvironment(path)
            let meta = try env.openDatabase("meta", options: [])
            return try env.read { txn in try Migrations.state(txn, meta, path: path) }
        } catch {
            throw storeError(error)
        }
    }
}

extension CaseStore {
    /// The store at `path` opened to be read only: no lock file is written, no map grown.
    static func readOnlyEnvironment(_ path: String) throws -> Environment {
        var cfg = Environment.Configuration()
        cfg.readOnly = true
        cfg.initialMapSize = 0
        return try Environment(path: path, configuration: cfg)
    }
}
