import CaseModel
import Foundation
import LMDB
import Replication
import TestSupport
import Testing
@testable import CaseStore

/// The migration runner (Migrations.swift) with a step that walks every record in
/// chunks: a run that fails part-way (a crash between chunks: the failing chunk's
/// transaction never commits) resumes where the last committed chunk left off and ends
/// in the same store as a run never interrupted; a finished migration runs no more.
@Suite("Case store: migrations in chunks that resume")
struct MigrationTests {
    final class Calls: @unchecked Sendable {
        let lock = NSLock()
        var chunks = 0
        var failAt: Int?
    }

    /// A step 2 → 3 that copies every record's key into `migration_test`, `budget` at a time.
    static func walkingStep(_ calls: Calls, into out: Database) -> MigrationStep {
        MigrationStep(from: 2, summary: "copy every record key") { txn, schema, after, budget in
            let n = calls.lock.withLock { () -> Int in calls.chunks += 1; return calls.chunks }
            if n == calls.lock.withLock({ calls.failAt }) { throw CorruptRecord(what: "crash in chunk \(n)") }
            return try txn.withCursor(schema.records) { c in
                var ok = try after.map { try c.seek(atLeast: $0 + [0]) } ?? c.first()
                var last: [UInt8]?
                var done = 0
                while ok && done < budget {
                    last = Array(c.key)
                    try txn.put(out, key: last!, value: [1])
                    done += 1
                    ok = try c.next()
                }
                return ok ? last : nil
            }
        }
    }

    static func makeStore(_ dir: TemporaryDirectory, tickets: Int) async throws {
        let store = try CaseStore(path: dir.path(), configuration: configuration(TestClock(t0)))
        for _ in 0..<tickets { _ = try await store.create(draft(), actor: ivanova) }
        store.close()
        let env = try Environment(path: dir.path())
        let meta = try env.openDatabase("meta")
        try env.write { txn in try txn.put(meta, key: Schema.MetaKey.schemaVersion, value: UInt64(2).bigEndianBytes) }
    }

    static func contents(_ dir: TemporaryDirectory) throws -> (format: UInt64?, migration: [UInt8]?, keys: [[UInt8]], records: [[UInt8]]) {
        let env = try Environment(path: dir.path())
        let meta = try env.openDatabase("meta")
        let test = try env.openDatabase("migration_test")
        let records = try env.openDatabase("records")
        return try env.read { txn in
            let format = try txn.get(meta, key: Schema.MetaKey.schemaVersion).flatMap { b in b.withUnsafeBytes { UInt64(bigEndianBytes: $0) } }
            let migration = try txn.get(meta, key: Migrations.metaMigration)
            func keys(_ db: Database) throws -> [[UInt8]] {
                try txn.withCursor(db) { c in
                    var out: [[UInt8]] = []
                    var ok = try c.first()
                    while ok { out.append(Array(c.key)); ok = try c.next() }
                    return out
                }
            }
            return (format, migration, try keys(test), try keys(records))
        }
    }

    static func migrate(_ dir: TemporaryDirectory, _ calls: Calls, progress: [MigrationProgress]? = nil) throws -> [MigrationProgress] {
        let env = try Environment(path: dir.path())
        let schema = try Schema(env: env)
        let out = try env.openDatabase("migration_test")
        let seen = Locked<[MigrationProgress]>([])
        try Migrations.run(env, schema, path: dir.path(), budget: 7, steps: [walkingStep(calls, into: out)]) { p in
            seen.withLock { $0.append(p) }
        }
        return seen.withLock { $0 }
    }

    @Test("a migration cut short at every chunk in turn resumes to the store an uninterrupted one makes")
    func resumes() async throws {
        let whole = try TemporaryDirectory()
        defer { whole.remove() }
        try await Self.makeStore(whole, tickets: 30)
        let steps = try Self.migrate(whole, Calls())
        let expected = try Self.contents(whole)
        #expect(expected.format == 3 && expected.migration == nil)
        #expect(expected.keys.count == 30 && expected.keys == expected.records)
        #expect(steps.last?.finished == true && steps.count == 5)   // 30 records, 7 a chunk

        for failAt in 1...5 {
            let dir = try TemporaryDirectory()
            defer { dir.remove() }
            try await Self.makeStore(dir, tickets: 30)
            let calls = Calls()
            calls.failAt = failAt
            #expect(throws: CorruptRecord.self) { _ = try Self.migrate(dir, calls) }
            let cut = try Self.contents(dir)
            #expect(cut.format == 2, "a step is finished only by its last chunk")
            #expect(cut.keys.count == (failAt - 1) * 7, "the chunks before the crash are committed, the failing one is not")
            #expect((cut.migration != nil) == (failAt > 1), "where it stands is recorded with each chunk")
            calls.failAt = nil
            _ = try Self.migrate(dir, calls)
            let resumed = try Self.contents(dir)
            #expect(resumed.format == expected.format && resumed.migration == nil && resumed.keys == resumed.records,
                    "every record's key, each once, as in the uninterrupted run")
        }
    }

    @Test("a migrated store runs no step again; a newer store is refused naming its release")
    func idempotentAndNewer() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        try await Self.makeStore(dir, tickets: 3)
        let calls = Calls()
        _ = try Self.migrate(dir, calls)
        let after = calls.chunks
        _ = try Self.migrate(dir, calls)
        #expect(calls.chunks == after)
        let env = try Environment(path: dir.path())
        let meta = try env.openDatabase("meta")
        try env.write { txn in
            try txn.put(meta, key: Schema.MetaKey.schemaVersion, value: UInt64(Schema.version + 1).bigEndianBytes)
            try txn.put(meta, key: Migrations.metaRelease, value: Array("7.1.0".utf8))
        }
        #expect(throws: StoreError.self) { _ = try CaseStore(path: dir.path(), configuration: configuration(TestClock(t0))) }
        guard case .refused(let why) = try CaseStore.formatState(path: dir.path()) else {
            Issue.record("a newer store was not refused")
            return
        }
        #expect(why.contains("written by release 7.1.0") && why.contains("format \(Schema.version + 1)"))
    }
}
