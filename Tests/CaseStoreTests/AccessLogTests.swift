import Access
import CaseModel
import Foundation
import LMDB
import TestSupport
import Testing
@testable import CaseStore

/// A disclosure by `subject` of ticket `ticket`; `n` makes each entry's reason unique.
private func disclosure(_ n: Int, subject: String = "op-petrova", ticket: String? = "38-2026-000001",
                        at: Millis = t0) -> AccessEntry {
    AccessEntry(at: at, subject: subject, role: "operator", organisation: "ekc-38", action: "ticket.unmask", ticket: ticket,
                fields: ["name", "snils"], reason: "reason-\(n)", remote: "10.0.0.\(n)", route: "/v1/tickets/{id}/unmask")
}

/// Changes the raw LMDB environment of a closed store, as someone with the files could.
private func tamper(_ path: String, _ body: (WriteTransaction, _ log: Database, _ meta: Database) throws -> Void) throws {
    let env = try Environment(path: path)
    let log = try env.openDatabase("access_log", options: [])
    let meta = try env.openDatabase("meta", options: [])
    try env.write { txn in try body(txn, log, meta) }
}

private func stored(_ txn: WriteTransaction, _ log: Database, _ seq: UInt64) throws -> StoredAccess {
    try #require(try txn.withValue(log, key: Keys.sequence(seq)) { try StoredAccess.decode($0) })
}

private func problem(_ v: AccessLogVerification) -> AccessLogProblem? {
    if case .tampered(let p) = v { return p }
    return nil
}

@Suite("Access log: append-only, hash-chained, checked")
struct AccessLogTests {
    /// A closed store at `dir.path()` whose log holds entries #1–#5 (two commits), verified intact.
    private func storeWithFive(_ dir: TemporaryDirectory) async throws {
        let store = try CaseStore(path: dir.path(), configuration: configuration(TestClock(t0)))
        #expect(try await store.recordAccess([disclosure(1)]) == [1])
        #expect(try await store.recordAccess((2...5).map { disclosure($0) }) == [2, 3, 4, 5])
        #expect(try store.verifyAccessLog().isIntact)
        store.close()
    }

    @Test("entries commit through the commit loop without a feed entry, read back with filters, and survive reopening")
    func appendReadReopen() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let clock = TestClock(t0)
        do {
            let store = try CaseStore(path: dir.path(), configuration: configuration(clock))
            #expect(try store.verifyAccessLog() == .intact(count: 0, head: 0, headHash: String(repeating: "0", count: 64)))
            let ticket = try await store.create(draft(), actor: ivanova)
            let feed = store.lastSequence
            let counts = try store.tableCounts()
            let out = try await store.perform(.recordAccess([disclosure(1, ticket: ticket.id.description)]), actor: ivanova)
            guard case .accessRecorded(let first) = out else { Issue.record("not an access outcome: \(out)"); return }
            #expect(first == [1])
            #expect(try await store.recordAccess([disclosure(2, subject: "op-sidorov", at: t0 + hour), disclosure(3, ticket: nil)])
                    == [2, 3])
            // Concurrent disclosures, likely in one group commit: distinct, gapless sequences.
            async let a = store.recordAccess([disclosure(4)])
            async let b = store.recordAccess([disclosure(5), disclosure(6)])
            async let c = store.recordAccess([disclosure(7, at: t0 + 2 * hour)])
            let (seqA, seqB, seqC) = try await (a, b, c)
            #expect(Set(seqA + seqB + seqC) == Set(4...7))
            // Which of the three commits first is the scheduler's choice; each call's own
            // entries are consecutive and in its order.
            #expect(seqA.count == 1 && seqB.count == 2 && seqB[1] == seqB[0] + 1 && seqC.count == 1)
            let seven = seqC[0]

            // Node-local: the feed did not move, no ticket or record changed.
            #expect(store.lastSequence == feed)
            var after = try store.tableCounts()
            #expect(after.removeValue(forKey: "access_log") == 7)
            #expect(after.filter { $0.key != "meta" } == counts.filter { $0.key != "meta" && $0.key != "access_log" })
            #expect(try store.ticket(.id(ticket.id)) == ticket)

            let all = try store.accessEntries(after: 0, limit: 100)
            #expect(all.map(\.sequence) == Array(1...7))
            #expect(all[0].entry == disclosure(1, ticket: ticket.id.description))
            #expect(all[2].entry.ticket == nil && all[2].entry.fields == ["name", "snils"])
            #expect(try store.accessEntries(after: 2, limit: 2).map(\.sequence) == [3, 4])
            #expect(try store.accessEntries(after: 7, limit: 10).isEmpty)
            #expect(try store.accessEntries(filter: AccessLogFilter(subject: "op-sidorov")).map(\.sequence) == [2])
            #expect(try store.accessEntries(filter: AccessLogFilter(ticket: ticket.id.description)).map(\.sequence) == [1])
            #expect(try store.accessEntries(filter: AccessLogFilter(since: t0 + hour)).map(\.sequence) == [2, seven])
            #expect(try store.accessEntries(filter: AccessLogFilter(since: t0 + 1, until: t0 + 2 * hour)).map(\.sequence) == [2])
            // Paging a filter: the next page starts after the last match.
            #expect(try store.accessEntries(after: 2, limit: 1, filter: AccessLogFilter(subject: "op-petrova")).map(\.sequence) == [3])

            // The chain as specified: #1 follows 32 zero bytes, each entry the one before it.
            let raw = try store.env.read { txn in
                try (1...7).map { s in try #require(try txn.withValue(store.schema.accessLog, key: Keys.sequence(s)) {
                    try StoredAccess.decode($0)
                }) }
            }
            #expect(raw[0].prev == [UInt8](repeating: 0, count: 32))
            for i in 1..<7 { #expect(raw[i].prev == raw[i - 1].hash) }
            #expect(all.map(\.hash) == raw.map { AccessChain.hex($0.hash) })
            #expect(try store.verifyAccessLog() == .intact(count: 7, head: 7, headHash: all[6].hash))
            store.close()
        }
        let store = try CaseStore(path: dir.path(), configuration: configuration(clock))
        defer { store.close() }
        let reasons = try store.accessEntries().map(\.entry.reason)
        #expect(Array(reasons.prefix(3)) == (1...3).map { "reason-\($0)" })
        #expect(Set(reasons.dropFirst(3)) == Set((4...7).map { "reason-\($0)" }) && reasons.count == 7)
        #expect(try await store.recordAccess([disclosure(8)]) == [8])
        let head = try #require(try store.accessEntries(after: 7).first)
        #expect(try store.verifyAccessLog() == .intact(count: 8, head: 8, headHash: head.hash))
        #expect(try CaseStore.verifyAccessLog(path: dir.path()) == .intact(count: 8, head: 8, headHash: head.hash))
    }

    @Test("hash = SHA-256(previous hash ‖ sequence u64 BE ‖ entry's tagged encoding): known values")
    func knownHashes() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let store = try CaseStore(path: dir.path(), configuration: configuration(TestClock(t0)))
        defer { store.close() }
        _ = try await store.recordAccess([disclosure(1), disclosure(2)])
        // Computed outside Swift (Python's hashlib over a hand-written protobuf encoding).
        #expect(try store.accessEntries().map(\.hash) == ["175ae653a28656f587c121d609e7ae68eb491048eb3f10eb331f9f39d3225edc",
                                                           "9acd1205bbaef8d56c4dcd5850f6bf734453fba864e277dc82dbe3792ab41986"])
    }

    @Test("one altered byte of an entry is named as that entry altered")
    func alteredByte() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        try await storeWithFive(dir)
        try tamper(dir.path()) { txn, log, _ in
            var value = try #require(try txn.get(log, key: Keys.sequence(3)))
            // A byte inside the reason text: the value still decodes, only the hash tells.
            let at = try #require(value.firstRange(of: Array("reason-3".utf8))).lowerBound + 7
            value[at] = UInt8(ascii: "9")
            try txn.put(log, key: Keys.sequence(3), value: value)
        }
        let p = try #require(problem(try CaseStore.verifyAccessLog(path: dir.path())))
        #expect(p.kind == .altered && p.sequence == 3)
        // The store open on the same files says the same.
        let store = try CaseStore(path: dir.path(), configuration: configuration(TestClock(t0)))
        defer { store.close() }
        #expect(try store.verifyAccessLog() == .tampered(p))
    }

    @Test("a deleted middle entry is named missing")
    func deletedMiddle() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        try await storeWithFive(dir)
        try tamper(dir.path()) { txn, log, _ in
            let deleted = try txn.delete(log, key: Keys.sequence(3))
            #expect(deleted)
        }
        let p = try #require(problem(try CaseStore.verifyAccessLog(path: dir.path())))
        #expect(p.kind == .missing && p.sequence == 3)
    }

    @Test("a deleted first entry is named missing")
    func deletedFirst() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        try await storeWithFive(dir)
        try tamper(dir.path()) { txn, log, _ in
            let deleted = try txn.delete(log, key: Keys.sequence(1))
            #expect(deleted)
        }
        let p = try #require(problem(try CaseStore.verifyAccessLog(path: dir.path())))
        #expect(p.kind == .missing && p.sequence == 1)
    }

    @Test("a deleted last entry is a head mismatch, and nothing more is appended to that log")
    func deletedLast() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        try await storeWithFive(dir)
        try tamper(dir.path()) { txn, log, _ in
            let deleted = try txn.delete(log, key: Keys.sequence(5))
            #expect(deleted)
        }
        let p = try #require(problem(try CaseStore.verifyAccessLog(path: dir.path())))
        #expect(p.kind == .headMismatch && p.sequence == 5)
        let store = try CaseStore(path: dir.path(), configuration: configuration(TestClock(t0)))
        defer { store.close() }
        do {
            _ = try await store.recordAccess([disclosure(6)])
            Issue.record("appended to a log whose end was removed")
        } catch {
            guard case .accessLogBroken = error else { Issue.record("refused with \(error)"); return }
        }
        #expect(try store.verifyAccessLog() == .tampered(p))
        #expect(try store.accessEntries().map(\.sequence) == [1, 2, 3, 4])
    }

    @Test("an entry rewritten with its own hash recomputed breaks the chain at the next entry")
    func rewrittenAndRehashed() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        try await storeWithFive(dir)
        try tamper(dir.path()) { txn, log, _ in
            var s = try stored(txn, log, 3)
            s.entry = disclosure(3, subject: "op-nobody").encoded()
            s.hash = AccessChain.hash(prev: s.prev, sequence: 3, entry: s.entry)
            try txn.put(log, key: Keys.sequence(3), value: s.encode())
        }
        let p = try #require(problem(try CaseStore.verifyAccessLog(path: dir.path())))
        #expect(p.kind == .chainBroken && p.sequence == 4)
        let store = try CaseStore(path: dir.path(), configuration: configuration(TestClock(t0)))
        defer { store.close() }
        #expect(try store.accessEntries(after: 2, limit: 1).first?.entry.subject == "op-nobody")   // the rewrite took
    }

    @Test("the last entry rewritten with its hash recomputed disagrees with the head")
    func lastRewrittenAndRehashed() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        try await storeWithFive(dir)
        try tamper(dir.path()) { txn, log, _ in
            var s = try stored(txn, log, 5)
            s.entry = disclosure(5, subject: "op-nobody").encoded()
            s.hash = AccessChain.hash(prev: s.prev, sequence: 5, entry: s.entry)
            try txn.put(log, key: Keys.sequence(5), value: s.encode())
        }
        let p = try #require(problem(try CaseStore.verifyAccessLog(path: dir.path())))
        #expect(p.kind == .headMismatch && p.sequence == 5)
    }
}
