import CaseModel
import Foundation
import Replication
import TestSupport
import Testing
@testable import CaseStore

/// Parts of a capability a link does not speak (proto/README §8.1): left out of its
/// feed pages and repairs, the first sequence of each capability recorded, and a link
/// that gains the capability resumed from before it, with the checkpoint saying what it
/// was reached with. `Memo` as a later release would have it: its status register and
/// its comments each added with a capability of their own.
@Suite("Case store: parts held back from links without their capability")
struct CapabilityFeedTests {
    static let tagged = Memo.makeSchema(statusCapability: "memo-status", commentsCapability: "memo-comments")

    func store(_ dir: TemporaryDirectory, _ clock: TestClock, node: NodeID = irk) throws -> CaseStore {
        var c = configuration(clock, node: node)
        c.extraKinds = [Self.tagged]
        return try CaseStore(path: dir.path(), configuration: c)
    }

    /// The register numbers a delta carries (a memo's numbers are its indexes + 1).
    func numbers(_ d: RecordDelta) -> [UInt8] {
        d.state.registers.enumerated().filter { !$0.element.isEmpty }.map { UInt8($0.offset + 1) }
    }

    func parts(_ page: FeedPage) throws -> [(registers: [UInt8], children: Int)] {
        try page.entries.map { e in
            let d = try decode(e.delta)
            return (numbers(d), d.children.count)
        }
    }

    @Test("a link leaves out the parts of capabilities it does not speak; the first sequence of each is recorded")
    func leftOut() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let clock = TestClock(t0)
        let s = try store(dir, clock)
        defer { s.close() }
        #expect(try s.capabilitySince().isEmpty)
        // Sequence 1: the title alone (base). Sequence 2: the status (memo-status). 3: a comment.
        let id = try await s.write(RecordWrite(kind: Memo.kind, values: [0: Memo.encodeTitle(author: irk, text: "План")]))
        try await s.write(RecordWrite(kind: Memo.kind, id: id, values: [1: Memo.encodeStatus("open")]))
        try await s.write(RecordWrite(kind: Memo.kind, id: id, values: [:], children: [(Memo.comments, Memo.encodeComment("да"))]))
        #expect(try s.capabilitySince() == ["memo-status": 2, "memo-comments": 3])
        // A damaged value reads as the feed's start (a resend, never a skip); restored after.
        try s.env.write { txn in try txn.put(s.schema.meta, key: CapabilityMeta.since("memo-status"), value: [9]) }
        #expect(try s.capabilitySince() == ["memo-status": 1, "memo-comments": 3])
        try s.env.write { txn in try txn.put(s.schema.meta, key: CapabilityMeta.since("memo-status"), value: UInt64(2).bigEndianBytes) }

        let all = try s.feedPage(after: 0, limit: 10)
        #expect(try parts(all).map(\.registers) == [[1], [1, 2], [1]] && parts(all).map(\.children) == [0, 0, 1])
        // The base link: the title's entry; the others carry nothing it may hold and are not sent.
        let base = try s.feedPage(after: 0, limit: 10, link: .base)
        #expect(try parts(base).map(\.registers) == [[1]] && base.readThrough == 3)
        let statusOnly = try s.feedPage(after: 0, limit: 10, link: Capabilities(known: ["memo-status"]))
        #expect(try parts(statusOnly).map(\.registers) == [[1], [1, 2]])
        let both = try s.feedPage(after: 0, limit: 10, link: Capabilities(known: ["memo-comments", "memo-status"]))
        #expect(try parts(both).map(\.children) == [0, 0, 1])
        // A repair carries what the caller's link speaks, no more.
        let whole = try s.wholeRecords([RecordRef(kind: Memo.kind, id: id)], for: "38", maxBytes: 1 << 20, link: .base)
        let d = try decode(whole[0].1)
        #expect(numbers(d) == [1] && d.children.isEmpty)
    }

    @Test("a checkpoint keeps what its streams spoke; a source resumes a link that gained a capability before its first part")
    func resumes() async throws {
        let dir = try TemporaryDirectory(), peerDir = try TemporaryDirectory()
        defer { dir.remove(); peerDir.remove() }
        let clock = TestClock(t0)
        let source = try store(dir, clock)
        defer { source.close() }
        let puller = try store(peerDir, clock, node: office)
        defer { puller.close() }
        let id = try await source.write(RecordWrite(kind: Memo.kind, values: [0: Memo.encodeTitle(author: irk, text: "План")]))
        try await source.write(RecordWrite(kind: Memo.kind, id: id, values: [1: Memo.encodeStatus("open")]))
        for _ in 0..<3 { _ = try await source.create(draft(), actor: ivanova) }
        // An old puller (the base protocol) takes the whole feed: the status is held back.
        let page = try source.feedPage(after: 0, limit: 100, link: .base)
        _ = try await puller.merge(RemoteBatch(peer: irk, sourceStoreID: source.storeIDBytes, throughSequence: page.readThrough,
                                               records: page.entries.map(remoteRecord), capabilities: []))
        let held = try #require(try puller.checkpoint(for: irk))
        #expect(held.sequence == source.lastSequence && held.capabilities.isEmpty)
        #expect(try puller.record(kind: Memo.kind, id: id)?.state.registers[1].value == nil)

        // Upgraded, it advertises memo-status; its checkpoint was reached without it.
        let since = try source.capabilitySince()
        let link = Capabilities(known: ["memo-status"])
        let resume = ResumePoint(checkpoint: FeedCheckpoint(sourceStoreID: held.sourceStoreID, sequence: held.sequence,
                                                            capabilities: held.capabilities),
                                 storeID: source.storeIDBytes, lastSequence: source.lastSequence, served: source.lastSequence)
            .holdingBack(link: link, earned: .base, since: since)
        #expect(resume.resumeAfter == 1 && resume.rewound && !resume.checkpointReset)
        let again = try source.feedPage(after: resume.resumeAfter, limit: 100, link: link)
        _ = try await puller.merge(RemoteBatch(peer: irk, sourceStoreID: source.storeIDBytes, throughSequence: again.readThrough,
                                               records: again.entries.map(remoteRecord), capabilities: link.names))
        #expect(try puller.record(kind: Memo.kind, id: id)?.state.registers[1].value == Memo.encodeStatus("open"))
        #expect(try puller.checkpoint(for: irk)?.capabilities == ["memo-status"])
        // Reached with it: no rewind next time. A capability with no part here costs nothing.
        let next = ResumePoint(checkpoint: FeedCheckpoint(sourceStoreID: source.storeIDBytes, sequence: source.lastSequence,
                                                          capabilities: ["memo-status"]),
                               storeID: source.storeIDBytes, lastSequence: source.lastSequence, served: source.lastSequence)
        #expect(next.holdingBack(link: Capabilities(known: ["memo-comments", "memo-status"]), earned: link, since: since).resumeAfter
                == source.lastSequence)
    }

    @Test("a stored checkpoint whose capabilities do not parse reads as reached without any")
    func damagedCheckpoint() {
        let value: [UInt8] = Array(repeating: 7, count: 16) + UInt64(42).bigEndianBytes + [9, 0x61]
        let c = value.withUnsafeBytes { Checkpoint.decode($0) }
        #expect(c?.sequence == 42 && c?.capabilities == [])
        let good = Checkpoint(sourceStoreID: Array(repeating: 7, count: 16), sequence: 42, capabilities: ["a", "bc"]).encode()
        #expect(good.withUnsafeBytes { Checkpoint.decode($0) }?.capabilities == ["a", "bc"])
    }
}
