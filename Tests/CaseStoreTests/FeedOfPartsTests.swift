import CaseModel
import Foundation
import LMDB
import Replication
import TestSupport
import Testing
@testable import CaseStore

@Suite("Case store: the feed of parts")
struct FeedOfPartsTests {
    @Test("a patch moves only the registers it changed to a new entry; the old entry keeps the rest and its children")
    func patchMovesItsRegisters() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let clock = TestClock(t0)
        let store = try CaseStore(path: dir.path(), configuration: configuration(clock))
        defer { store.close() }
        let a = try await store.create(draft(), actor: ivanova)                                   // 1
        let all = TicketRecord.schema.registers.map(\.name)
        #expect(try store.feedShape() == [FeedShape(sequence: 1, id: a.id, registers: all, children: ["history": 1])])

        _ = try await store.patch(.id(a.id), TicketPatch(assignee: "petrov", priority: .high))    // 2
        _ = try await store.patch(.id(a.id), TicketPatch(priority: .urgent))                       // 3
        _ = try await store.note(.id(a.id), "перезвонить")                                         // 4
        _ = try await store.patch(.id(a.id), TicketPatch(status: .registered))                     // 5
        let expected = [
            FeedShape(sequence: 1, id: a.id, registers: all.filter { !["progress", "assignee", "priority"].contains($0) },
                      children: ["history": 1]),
            FeedShape(sequence: 2, id: a.id, registers: ["assignee"], children: ["history": 2]),
            FeedShape(sequence: 3, id: a.id, registers: ["priority"], children: ["history": 1]),
            FeedShape(sequence: 4, id: a.id, registers: [], children: ["notes": 1, "history": 1]),
            FeedShape(sequence: 5, id: a.id, registers: ["progress"], children: ["history": 1]),
        ]
        #expect(try store.feedShape() == expected)
        // The ticket feed of the API lists the same parts.
        let changes = try store.changes(since: 0, limit: 100).changes
        #expect(changes.map(\.registers) == expected.map(\.registers))
        #expect(changes.map(\.children) == expected.map(\.children))
        #expect(try store.feedShape(since: 3) == Array(expected.suffix(2)))
        try auditFeed(store)
    }

    @Test("an entry whose registers all moved on and that holds no children is removed")
    func emptyEntriesRemoved() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let clock = TestClock(t0)
        let store = try CaseStore(path: dir.path(), configuration: configuration(clock))
        defer { store.close() }
        let title = Memo.encodeTitle(author: irk, text: "План на неделю")
        let id = try await store.write(RecordWrite(kind: Memo.kind, values: [0: title, 1: Memo.encodeStatus("open")]))   // 1
        let commented = try await store.write(RecordWrite(kind: Memo.kind, values: [0: title, 1: Memo.encodeStatus("open")],
                                                          children: [(Memo.comments, Memo.encodeComment("первый"))]))     // 2
        try await store.write(RecordWrite(kind: Memo.kind, id: id, values: [0: Memo.encodeTitle(author: irk, text: "План")]))  // 3
        #expect(try store.feedShape().map(\.registers) == [["status"], ["title", "status"], ["title"]])
        try await store.write(RecordWrite(kind: Memo.kind, id: id, values: [1: Memo.encodeStatus("done")]))        // 4
        try await store.write(RecordWrite(kind: Memo.kind, id: commented, values: [0: title, 1: Memo.encodeStatus("done")])) // 5
        let shape = try store.feedShape()
        #expect(shape.map(\.sequence) == [2, 3, 4, 5])   // entry 1 is gone; entry 2 keeps its comment
        #expect(shape.map(\.registers) == [[], ["title"], ["status"], ["title", "status"]])
        #expect(shape.map(\.children) == [["comments": 1], [:], [:], [:]])
        #expect(try store.tableCounts()["feed"] == 4)
        #expect(store.lastSequence == 5)
        // Memos are not tickets: the ticket feed of the API does not list them.
        #expect(try store.changes(since: 0, limit: 100).changes.isEmpty)
        try auditFeed(store)
    }

    @Test("feedPage: each entry's RecordDelta holds exactly the registers of that entry and its children, copied from the store")
    func feedPageDeltas() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let clock = TestClock(t0)
        let store = try CaseStore(path: dir.path(), configuration: configuration(clock))
        defer { store.close() }
        let a = try await store.create(draft(.phone, regime: .appeal59FZ), actor: ivanova)
        let b = try await store.create(draft(), actor: ivanova)
        _ = try await store.patch(.id(a.id), TicketPatch(status: .inWork, assignee: "op-ivanova"))
        _ = try await store.note(.id(b.id), String(repeating: "длинная заметка ", count: 200))
        _ = try await store.patch(.id(b.id), TicketPatch(topic: "pensions", supportMeasure: "victory-card"))
        _ = try await store.note(.id(a.id), "короткая", .shared)

        let page = try store.feedPage(after: 0, limit: 100)
        #expect(page.entries.map(\.sequence) == [1, 2, 3, 4, 5, 6] && page.lastSequence == 6)
        for e in page.entries {
            let d = try decode(e.delta)
            // What the feed entry names, read from the store directly.
            let entry = try #require(try store.env.read { txn in
                try txn.withValue(store.schema.feed, key: Keys.sequence(e.sequence)) { try FeedEntry.decode($0) }
            })
            #expect(d.kind == entry.kind && d.id == entry.id)
            // The entry's registers, and the kind's authority registers (header, owner) with every entry.
            let authority = TicketRecord.schema.authorityRegisters
                .reduce(UInt64(0)) { $0 | 1 << UInt64(TicketRecord.schema.registers[$1].number) }
            let numbers = d.state.registers.indices.filter { !d.state.registers[$0].isEmpty }
                .reduce(UInt64(0)) { $0 | 1 << UInt64(TicketRecord.schema.registers[$1].number) }
            #expect(numbers == entry.registerNumbers | authority, "entry \(e.sequence)")
            #expect(d.children.map(\.key) == entry.children, "entry \(e.sequence)")
            let record = try #require(try store.record(kind: d.kind, id: d.id))
            for (i, r) in d.state.registers.enumerated() where !r.isEmpty { #expect(r == record.state.registers[i]) }
            for c in d.children { #expect(record.children[c.key] == c) }
            // The sender copies stored bytes; they are the bytes our encoder writes for the same delta.
            #expect(e.delta == RecordCoding.encodeDelta(d, schema: TicketRecord.schema), "entry \(e.sequence)")
            try TicketRecord.schema.check(d, context: CheckContext(directory: testDirectory))
        }

        // Pages: by count, by bytes (never fewer than one entry), and past the end.
        #expect(try store.feedPage(after: 0, limit: 2).entries.map(\.sequence) == [1, 2])
        #expect(try store.feedPage(after: 2, limit: 0).entries.map(\.sequence) == [3])
        #expect(try store.feedPage(after: 0, limit: 100, maxBytes: 1).entries.map(\.sequence) == [1])
        let big = try #require(page.entries.first { $0.sequence == 4 })
        #expect(big.delta.count > 3_000)
        #expect(try store.feedPage(after: 3, limit: 100, maxBytes: 1_000).entries.map(\.sequence) == [4])
        let two = page.entries[0].delta.count + 1
        #expect(try store.feedPage(after: 0, limit: 100, maxBytes: two).entries.map(\.sequence) == [1, 2])
        #expect(try store.feedPage(after: 6, limit: 100).entries.isEmpty)
        #expect(try store.feedPage(after: .max, limit: 100).entries.isEmpty)
        #expect(try store.feedPage(after: 6, limit: 100).lastSequence == 6)
    }

    @Test("a second store catching up from the first's pages converges to identical records and children; a third from the second too",
          arguments: [1, 2, 3] as [UInt64])
    func catchUpConverges(seed: UInt64) async throws {
        let p = try StorePeers([irk, office, irkutskNodes[2]])
        defer { p.close() }
        var rng = SeededRandom(seed: seed)
        var tickets: [TicketID] = []
        var memos: [RecordID] = []
        for step in 0..<120 {
            p.clock.advance(Millis.random(in: 0...3_000, using: &rng))
            switch Int.random(in: 0..<10, using: &rng) {
            case 0, 1:
                let t = try await p.a.create(draft([.phone, .web, .email].randomElement(using: &rng)!,
                                                   regime: [.consultation, .appeal59FZ].randomElement(using: &rng)!), actor: ivanova)
                tickets.append(t.id)
            case 2, 3, 4:
                guard let id = tickets.randomElement(using: &rng) else { continue }
                let patches = [TicketPatch(status: .registered), TicketPatch(status: .inWork),
                               TicketPatch(assignee: .some(["op-ivanova", "op-petrova", nil].randomElement(using: &rng)!)),
                               TicketPatch(priority: Priority.allCases.randomElement(using: &rng)!),
                               TicketPatch(topic: ["pensions", "child-benefits"].randomElement(using: &rng)!)]
                _ = try? await p.a.patch(.id(id), patches.randomElement(using: &rng)!)
            case 5, 6:
                guard let id = tickets.randomElement(using: &rng) else { continue }
                _ = try await p.a.note(.id(id), "заметка \(step)", Bool.random(using: &rng) ? .shared : .internal)
            case 7:
                let id = try await p.a.write(RecordWrite(kind: Memo.kind, values: [0: Memo.encodeTitle(author: irk, text: "memo \(step)"),
                                                                                   1: Memo.encodeStatus("open")]))
                memos.append(id)
            case 8:
                guard let id = memos.randomElement(using: &rng) else { continue }
                try await p.a.write(RecordWrite(kind: Memo.kind, id: id, values: [1: Memo.encodeStatus("step \(step)")],
                                                children: [(Memo.comments, Memo.encodeComment("comment \(step)"))]))
            default:
                // b catches up part of the way, in small pages, while a goes on.
                let page = try p.a.feedPage(after: try p.resumePoint(p.b, from: p.a), limit: Int.random(in: 1...5, using: &rng),
                                            maxBytes: Int.random(in: 200...5_000, using: &rng))
                if !page.entries.isEmpty {
                    let r = try await p.b.merge(p.batch(page.entries, from: p.a))
                    #expect(r.rejections.isEmpty, "seed \(seed) step \(step): \(r.rejections)")
                }
            }
        }
        let rest = try await p.pull(p.b, from: p.a, limit: 3, maxBytes: 2_000)
        #expect(rest.rejections.isEmpty, "seed \(seed)")
        let relayed = try await p.pull(p.c, from: p.b, limit: 4)
        #expect(relayed.rejections.isEmpty, "seed \(seed)")
        #expect(!tickets.isEmpty && !memos.isEmpty)
        for id in tickets {
            let ra = try p.a.record(kind: TicketRecord.kind, id: id)
            #expect(ra != nil)
            #expect(try p.b.record(kind: TicketRecord.kind, id: id) == ra, "seed \(seed) ticket \(id)")
            #expect(try p.c.record(kind: TicketRecord.kind, id: id) == ra, "seed \(seed) ticket \(id)")
            #expect(view(try p.b.ticket(.id(id))) == view(try p.a.ticket(.id(id))))
            #expect(view(try p.c.ticket(.id(id))) == view(try p.a.ticket(.id(id))))
            #expect(try p.c.history(of: .id(id)) == p.a.history(of: .id(id)))
        }
        for id in memos {
            let ma = try p.a.record(kind: Memo.kind, id: id)
            #expect(ma != nil)
            #expect(try p.b.record(kind: Memo.kind, id: id) == ma, "seed \(seed) memo \(id)")
            #expect(try p.c.record(kind: Memo.kind, id: id) == ma, "seed \(seed) memo \(id)")
        }
        #expect(try p.b.stats().tickets == tickets.count && p.c.stats().tickets == tickets.count)
        #expect(try p.a.conflicts().isEmpty && p.c.conflicts().isEmpty)
        // Nothing new: pulling again merges nothing.
        #expect(try await p.pull(p.b, from: p.a).changedRecords == 0)
        for s in p.stores { try auditFeed(s, "seed \(seed)") }
    }
}
