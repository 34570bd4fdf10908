import CaseModel
import Foundation
import Replication
import TestSupport
import Testing
@testable import CaseStore

/// A kind that is a table and a conformance and nothing else (TestSupport's `Memo`)
/// is stored, fed, replicated, checked, admitted and conflicted by the same generic code as tickets.
@Suite("Case store: a record kind of its own")
struct MemoReplicationTests {
    func memo(_ store: CaseStore, _ id: RecordID) throws -> Memo? {
        guard let r = try store.record(kind: Memo.kind, id: id) else { return nil }
        return Memo.materialise(r.state, local: LocalRecordInfo(version: 0))
    }

    func comments(_ store: CaseStore, _ id: RecordID) throws -> [String] {
        try (store.record(kind: Memo.kind, id: id)?.children.values.sorted { $0.key < $1.key } ?? []).map { c in
            try c.value.readProto { r throws(ProtoError) in
                var text = ""
                while let (n, t) = try r.field() { if n == 1 && t == 2 { text = try r.string() } else { try r.skip(t) } }
                return text
            }
        }
    }

    @Test("a memo written on one store replicates through feedPage, decode, check and merge; concurrent writes conflict, and resolving settles them everywhere")
    func memoReplicates() async throws {
        let p = try StorePeers()
        defer { p.close() }
        let id = try await p.a.write(RecordWrite(kind: Memo.kind,
                                                 values: [0: Memo.encodeTitle(author: irk, text: "План на неделю"),
                                                          1: Memo.encodeStatus("open")],
                                                 children: [(Memo.comments, Memo.encodeComment("первый комментарий"))]))
        #expect(try memo(p.a, id) == Memo(id: id, author: irk, title: "План на неделю", status: "open", version: 0))
        let feed = try p.a.feedPage(after: 0, limit: 10)
        #expect(feed.entries.count == 1)
        let delta = try decode(feed.entries[0].delta)
        #expect(delta.kind == Memo.kind && delta.children.count == 1)
        try Memo.schema.check(delta, context: CheckContext(directory: testDirectory))

        let r = try await p.pull(p.b, from: p.a)
        #expect(r.changedRecords == 1 && r.rejections.isEmpty)
        #expect(try p.b.record(kind: Memo.kind, id: id) == p.a.record(kind: Memo.kind, id: id))
        #expect(try comments(p.b, id) == ["первый комментарий"])
        #expect(try p.b.checkpoint(for: irk)?.sequence == 1)

        // Both sides write the status while apart (office is of the author's organisation).
        p.clock.advance(1_000)
        try await p.a.write(RecordWrite(kind: Memo.kind, id: id, values: [1: Memo.encodeStatus("done")]))
        p.clock.advance(10)
        try await p.b.write(RecordWrite(kind: Memo.kind, id: id, values: [1: Memo.encodeStatus("blocked")],
                                        children: [(Memo.comments, Memo.encodeComment("из офиса"))]))
        try await p.sync()
        #expect(try p.a.record(kind: Memo.kind, id: id) == p.b.record(kind: Memo.kind, id: id))
        #expect(try memo(p.a, id)?.status == "blocked")   // the later write wins
        #expect(try comments(p.a, id) == ["первый комментарий", "из офиса"])
        let ca = try p.a.conflicts(), cb = try p.b.conflicts()
        #expect(ca.map(\.id) == cb.map(\.id) && ca.count == 1)
        let c = try #require(ca.first)
        #expect(c.kind == Memo.kind && c.kindName == "memo" && c.recordID == id && c.field == "status" && c.register == 1)
        #expect(c.winningValue == "blocked" && c.losingValue == "done")
        #expect(c.winner.node == office && c.loser.node == irk)
        #expect(c.id.hasPrefix("memo.\(id).status.irk-main."))
        // Memos are not tickets: the ticket feed and listings do not show them.
        #expect(try p.a.changes(since: 0, limit: 100).changes.isEmpty)

        let out = try await p.a.perform(.resolve(conflictID: c.id, keep: .loser), actor: petrov)
        guard case .record(let resolved) = out else { Issue.record("resolving a memo gave \(out)"); return }
        #expect(resolved == id)
        #expect(try p.a.conflicts().isEmpty && memo(p.a, id)?.status == "done")
        try await p.sync()
        #expect(try p.b.conflicts().isEmpty && memo(p.b, id)?.status == "done")
        #expect(try p.a.record(kind: Memo.kind, id: id) == p.b.record(kind: Memo.kind, id: id))
        try auditFeed(p.a)
        try auditFeed(p.b)
    }

    @Test("a memo write is checked as a peer's would be: a bad value, an unknown register, collection or kind writes nothing")
    func memoWriteChecked() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let clock = TestClock(t0)
        let store = try CaseStore(path: dir.path(), configuration: configuration(clock))
        defer { store.close() }
        let good = Memo.encodeTitle(author: irk, text: "Заголовок")
        let id = try await store.write(RecordWrite(kind: Memo.kind, values: [0: good, 1: Memo.encodeStatus("open")]))
        let before = try store.tableCounts()
        func refusal(_ w: RecordWrite) async -> TicketError? {
            do {
                try await store.write(w)
                return nil
            } catch {
                guard case .rejected(let e) = error else { Issue.record("\(error)"); return nil }
                return e
            }
        }
        let control = await refusal(RecordWrite(kind: Memo.kind, id: id, values: [0: Memo.encodeTitle(author: irk, text: "a\u{7}b")]))
        #expect(control?.field == "title")
        let stranger = await refusal(RecordWrite(kind: Memo.kind, values: [0: Memo.encodeTitle(author: NodeID("xx-nowhere")!, text: "t")]))
        #expect(stranger?.field == "title" && stranger?.message.contains("unknown_node") == true)
        #expect(await refusal(RecordWrite(kind: Memo.kind, id: id, values: [5: good]))
                == .invalidField(field: "register", rule: "memo has no register 5"))
        #expect(await refusal(RecordWrite(kind: Memo.kind, id: id, values: [:], children: [(9, Memo.encodeComment("x"))]))
                == .invalidField(field: "collection", rule: "memo has no collection 9"))
        #expect(await refusal(RecordWrite(kind: Memo.kind, id: id, values: [:], children: [(Memo.comments, [])]))?.field == "comments")
        #expect(await refusal(RecordWrite(kind: RecordKindID(rawValue: 99), values: [0: good]))
                == .invalidField(field: "kind", rule: "no record kind 99"))
        #expect(try store.tableCounts() == before)
        #expect(store.lastSequence == 1)
        #expect(try memo(store, id)?.title == "Заголовок")
    }

    @Test("a memo write from an organisation that does not author it is refused by admission on the nodes it reaches")
    func memoAdmission() async throws {
        let p = try StorePeers([irk, fundNode])
        defer { p.close() }
        let id = try await p.a.write(RecordWrite(kind: Memo.kind, values: [0: Memo.encodeTitle(author: irk, text: "Общий план"),
                                                                           1: Memo.encodeStatus("open")]))
        // A memo is in no partner's scope: the fund's node receives it only from a sender
        // that sends what it should not; admission is the defence of the node it reaches.
        #expect(try await p.pull(p.b, from: p.a, unscoped: true).rejections.isEmpty)
        p.clock.advance(1_000)
        try await p.b.write(RecordWrite(kind: Memo.kind, id: id, values: [1: Memo.encodeStatus("closed by the fund")],
                                        children: [(Memo.comments, Memo.encodeComment("от фонда"))]))
        let r = try await p.pull(p.a, from: p.b, unscoped: true)
        // The fund's feed: region 38's memo as the fund holds it (nothing new here, so
        // nothing to admit, whoever relays it), then the fund's own status and comment,
        // refused together, once.
        #expect(r.rejections.map(\.refusal.reason) == [.notAuthorised])
        #expect(r.rejections.allSatisfy { $0.id == id && $0.kind == Memo.kind && $0.whole })
        #expect(r.rejections.last?.refusal.detail.hasSuffix("(and 1 more parts)") == true)
        #expect(try memo(p.a, id)?.status == "open" && comments(p.a, id).isEmpty)
    }
}
