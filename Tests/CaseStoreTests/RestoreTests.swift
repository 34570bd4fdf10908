import Access
import CaseModel
import Foundation
import LMDB
import Replication
import TestSupport
import Testing
@testable import CaseStore

/// A store marked restored from a backup (Restore.swift): a new identity, numbering past
/// the next million, local writes held until its peers are caught up with (merges go
/// on), an access-log entry; and what a second restore and a new year do to numbering.
@Suite("Case store: restore from a backup")
struct RestoreTests {
    static func manifest(_ store: CaseStore) -> BackupManifest {
        BackupManifest(manifestFormat: 1, node: store.configuration.node.value, storeId: store.storeID,
                       storeFormat: CaseStore.storeFormat, lastSequence: store.lastSequence, release: "test", takenAt: t0 - 60_000,
                       bytes: 0, sha256: "")
    }

    static func request(_ store: CaseStore) -> RestoreRequest {
        RestoreRequest(manifest: manifest(store), subject: "ops-petrov", reason: "Диск вышел из строя", organisation: "38")
    }

    @Test("a restored store has a new id, numbers past the next million, and takes writes only once caught up")
    func restoredStore() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let peerDir = try TemporaryDirectory()
        defer { peerDir.remove() }
        let clock = TestClock(t0)
        let lost = try CaseStore(path: dir.path(), configuration: configuration(clock))
        for _ in 0..<3 { _ = try await lost.create(draft(), actor: ivanova) }
        let oldID = lost.storeID
        let record = try await lost.markRestored(Self.request(lost))
        lost.close()
        #expect(record.fromStoreId == oldID && record.storeId != oldID)
        #expect(record.numbersFrom == 1_000_000 && record.numbersYear == 2026)

        let store = try CaseStore(path: dir.path(), configuration: configuration(clock))
        defer { store.close() }
        #expect(store.storeID == record.storeId)
        #expect(store.restorePending && store.restoreRecord == record)
        // Local writes of every kind are refused, and nothing of them is written.
        let before = store.lastSequence
        let refused: StoreError?
        do {
            _ = try await store.create(draft(), actor: ivanova)
            refused = nil
        } catch {
            refused = error
        }
        guard case .restoring(let why)? = refused else { Issue.record("a create was not refused: \(String(describing: refused))"); return }
        #expect(why.contains("caught up with every peer"))
        #expect(store.lastSequence == before)
        // A peer's batch is merged meanwhile: that is how the store catches up.
        var pc = configuration(clock, node: office, series: 1)
        pc.verifyEachCommit = true
        let peer = try CaseStore(path: peerDir.path(), configuration: pc)
        defer { peer.close() }
        let theirs = try await peer.create(draft(), actor: ivanova)
        let page = try peer.feedPage(after: 0, limit: 100)
        _ = try await store.merge(RemoteBatch(peer: office, sourceStoreID: peer.storeIDBytes, throughSequence: page.readThrough,
                                              records: page.entries.map(remoteRecord)))
        #expect(try store.ticket(.id(theirs.id)) != nil)

        try await store.finishRestore()
        #expect(!store.restorePending)
        let fresh = try await store.create(draft(), actor: ivanova)
        #expect(fresh.number.description == "38-2026-1000001")
        // The access log goes on, chained, with the restore in it.
        let entries = try store.accessEntries(limit: 10)
        #expect(entries.map(\.entry.action) == ["store.restore"])
        #expect(entries.first?.entry.subject == "ops-petrov" && entries.first?.entry.reason == "Диск вышел из строя")
        #expect(try store.verifyAccessLog().isIntact)
        #expect(try store.verify().isClean)
    }

    @Test("a second restore goes past the first one's floor; a later year numbers from its own counter")
    func floors() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let clock = TestClock(t0)
        let first = try CaseStore(path: dir.path(), configuration: configuration(clock))
        _ = try await first.markRestored(Self.request(first))
        first.close()
        let restored = try CaseStore(path: dir.path(), configuration: configuration(clock))
        try await restored.finishRestore()
        #expect(try await restored.create(draft(), actor: ivanova).number.description == "38-2026-1000001")
        let second = try await restored.markRestored(Self.request(restored))
        #expect(second.numbersFrom == 2_000_000)
        restored.close()
        let store = try CaseStore(path: dir.path(), configuration: configuration(clock))
        defer { store.close() }
        try await store.finishRestore()
        #expect(try await store.create(draft(), actor: ivanova).number.description == "38-2026-2000001")
        // A year the restore could not have seen numbered: its counter starts as usual.
        clock.advance(366 * 24 * hour)
        #expect(try await store.create(draft(), actor: ivanova).number.description == "38-2027-000001")
    }

    @Test("a damaged floor in meta is a corrupt store, named, not a trap")
    func damagedFloor() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let clock = TestClock(t0)
        let store = try CaseStore(path: dir.path(), configuration: configuration(clock))
        defer { store.close() }
        try store.env.write { txn in try txn.put(store.schema.meta, key: Array("numbers_floor".utf8), value: [1, 2, 3]) }
        var failure: StoreError?
        do { _ = try await store.create(draft(), actor: ivanova) } catch { failure = error }
        guard case .corrupt(let why)? = failure else { Issue.record("a damaged floor gave \(String(describing: failure))"); return }
        #expect(why.contains("numbers_floor"))
    }
}
