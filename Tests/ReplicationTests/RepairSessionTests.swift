import CaseModel
import TestSupport
import XCTest
@testable import Replication

/// The anti-entropy round's machine, driven with no socket and no store: a whole round,
/// every check of every answer (the values a hostile peer chose, among them the
/// positions that once trapped the node), records never asked for, the budget of calls,
/// bytes and time, every event in every state, and seeded random answers checked
/// against the invariants (the round ends, within its budget of calls; a merge carries
/// only records the call before asked for; nothing after the end).
final class RepairSessionTests: XCTestCase {
    typealias Action = RepairSession.Action

    static let ticket = RecordKindID(rawValue: 1)
    static let t0 = MonotonicInstant(nanoseconds: 1_000_000_000_000)

    /// Positions the tests choose: a record's bucket is its id's first two bytes.
    static let position: @Sendable (RecordKindID, RecordID) -> UInt16 = { _, id in
        UInt16(id.high >> 48)
    }

    static func config(_ budget: RepairBudget = RepairBudget()) -> RepairSession.Configuration {
        .init(budget: budget, kinds: [ticket], position: position)
    }

    static func at(_ seconds: Double) -> MonotonicInstant { t0 + .milliseconds(Int64(seconds * 1000)) }

    static func sum(_ n: UInt64) -> DigestSum { DigestSum(a: n, b: n &* 3, c: 7, d: n) }

    /// A record in `bucket`, told apart by `n`.
    static func id(_ bucket: UInt16, _ n: UInt64) -> RecordID { RecordID(high: UInt64(bucket) << 48 | n, low: n) }

    static func ref(_ bucket: UInt16, _ n: UInt64) -> RecordRef { RecordRef(kind: ticket, id: id(bucket, n)) }

    static func range(_ p: UInt32, _ s: UInt64, records: UInt64 = 1, sumBytes: [UInt8]? = nil) -> DigestAnswer.Range {
        .init(position: p, sum: sumBytes ?? sum(s).bytes, records: records)
    }

    static func node(_ p: UInt16, _ s: UInt64, records: UInt64 = 1) -> DigestNode { DigestNode(position: p, sum: sum(s), records: records) }

    static func entry(_ bucket: UInt16, _ n: UInt64, _ s: UInt64, kind: Int = 1) -> DigestAnswer.Record {
        .init(kind: kind, id: id(bucket, n).bytes, sum: sum(s).bytes)
    }

    static func ours(_ bucket: UInt16, _ n: UInt64, _ s: UInt64) -> DigestEntry {
        DigestEntry(kind: ticket, id: id(bucket, n), value: sum(s))
    }

    /// A record as a records answer carries it (checked and refused here: the machine
    /// judges it by its kind and id, as it would a delta).
    static func received(_ ref: RecordRef) -> RemoteRecord {
        RemoteRecord(sequence: 1, refusedKind: ref.kind, id: ref.id, Refusal(.invalidValue, "test"))
    }

    static func finished(_ actions: [Action], file: StaticString = #filePath, line: UInt = #line) -> RepairOutcome? {
        guard actions.count == 1, case .finish(let o) = actions[0] else {
            XCTFail("expected the round to finish, got \(actions)", file: file, line: line)
            return nil
        }
        return o
    }

    static func refusal(_ actions: [Action], file: StaticString = #filePath, line: UInt = #line) -> RepairRefusal? {
        guard let o = finished(actions, file: file, line: line) else { return nil }
        guard case .refused(let r) = o.end else {
            XCTFail("expected a refusal, the round ended \(o.end)", file: file, line: line)
            return nil
        }
        return r
    }

    /// Level 0 where we hold range 1 (two records) and the peer holds ranges 1 and 3
    /// differently: the round asks level 1 of both.
    static func afterLevel0(_ budget: RepairBudget = RepairBudget()) -> (RepairSession, [Action]) {
        var m = RepairSession(configuration: config(budget))
        _ = m.start(now: t0)
        let theirs = DigestAnswer(records: 3, ranges: [range(1, 10, records: 2), range(3, 30)])
        let a = m.compared(.ranges, theirs: theirs, ours: .summary(records: 2, ranges: [node(1, 11, records: 2)], ready: true),
                           bytes: 100, now: t0)
        return (m, a)
    }

    // MARK: - A whole round

    func testEqualDigestsEndTheRoundAfterOneCall() {
        var m = RepairSession(configuration: Self.config())
        let a = m.start(now: Self.t0)
        guard case .compare(.ranges, let maxBytes, let timeout) = a.first else { return XCTFail("\(a)") }
        XCTAssertEqual(maxBytes, 16 << 20)
        XCTAssertEqual(timeout, .seconds(30))
        let o = Self.finished(m.compared(.ranges, theirs: DigestAnswer(records: 2, ranges: [Self.range(7, 1, records: 2)]),
                                         ours: .summary(records: 2, ranges: [Self.node(7, 1, records: 2)], ready: true),
                                         bytes: 60, now: Self.t0))
        XCTAssertEqual(o?.end, .complete)
        XCTAssertEqual(o?.equal, true)
        XCTAssertEqual(o?.calls, 1)
        XCTAssertEqual(o?.bytes, 60)
        XCTAssertTrue(m.isFinished)
    }

    func testASideNotReadyIsSkipped() {
        for (theirs, ours) in [(false, true), (true, false)] {
            var m = RepairSession(configuration: Self.config())
            _ = m.start(now: Self.t0)
            let o = Self.finished(m.compared(.ranges, theirs: DigestAnswer(ready: theirs, records: 1, ranges: [Self.range(7, 1)]),
                                             ours: .summary(records: 0, ranges: [], ready: ours), bytes: 10, now: Self.t0))
            XCTAssertEqual(o?.end, .notReady)
            XCTAssertEqual(o?.ready, false)
        }
    }

    func testARoundDescendsWhereTheDigestsDifferAndPullsOnlyWhatDiffers() {
        var (m, a) = Self.afterLevel0()
        guard case .compare(.buckets(range: 1), _, _) = a.first else { return XCTFail("\(a)") }
        // Range 1: bucket 0x0105 differs (theirs 5, ours 6), 0x0106 is equal.
        a = m.compared(.buckets(range: 1), theirs: DigestAnswer(ranges: [Self.range(0x0105, 5), Self.range(0x0106, 6)]),
                       ours: .buckets([Self.node(0x0105, 6), Self.node(0x0106, 6)]), bytes: 80, now: Self.t0)
        guard case .compare(.buckets(range: 3), _, _) = a.first else { return XCTFail("\(a)") }
        a = m.compared(.buckets(range: 3), theirs: DigestAnswer(ranges: [Self.range(0x03ff, 1)]), ours: .buckets([]),
                       bytes: 40, now: Self.t0)
        guard case .compare(.records(bucket: 0x0105), _, _) = a.first else { return XCTFail("\(a)") }
        // Bucket 0x0105: record 1 equal, record 2 differs, record 3 only theirs, record 4 only ours.
        a = m.compared(.records(bucket: 0x0105),
                       theirs: DigestAnswer(entries: [Self.entry(0x0105, 1, 1), Self.entry(0x0105, 2, 2), Self.entry(0x0105, 3, 3)]),
                       ours: .records([Self.ours(0x0105, 1, 1), Self.ours(0x0105, 2, 9), Self.ours(0x0105, 4, 4)]),
                       bytes: 200, now: Self.t0)
        guard case .compare(.records(bucket: 0x03ff), _, _) = a.first else { return XCTFail("\(a)") }
        a = m.compared(.records(bucket: 0x03ff), theirs: DigestAnswer(entries: [Self.entry(0x03ff, 5, 5)]), ours: .records([]),
                       bytes: 70, now: Self.t0)
        let wanted = [Self.ref(0x0105, 2), Self.ref(0x0105, 3), Self.ref(0x03ff, 5)]
        guard case .fetch(let refs, let maxBytes, _) = a.first else { return XCTFail("\(a)") }
        XCTAssertEqual(refs, wanted)
        XCTAssertEqual(maxBytes, 32 << 20)
        a = m.fetched(wanted.map(Self.received), bytes: 3000, now: Self.t0)
        guard case .merge(let records) = a.first else { return XCTFail("\(a)") }
        XCTAssertEqual(records.count, 3)
        let o = Self.finished(m.merged(changed: 2, refused: 1, damagedReplaced: 0, now: Self.t0))
        XCTAssertEqual(o?.end, .complete)
        XCTAssertEqual(o?.equal, false)
        XCTAssertEqual(o?.differingRanges, 2)
        XCTAssertEqual(o?.differingBuckets, 2)
        XCTAssertEqual(o?.differingRecords, 4)  // 2 and 3 to pull, 4 the peer's to pull, and 5
        XCTAssertEqual(o?.pulled, 3)
        XCTAssertEqual(o?.repaired, 2)
        XCTAssertEqual(o?.refused, 1)
        XCTAssertEqual(o?.calls, 6)
        XCTAssertEqual(o?.bytes, 100 + 80 + 40 + 200 + 70 + 3000)
        XCTAssertEqual(o?.theirRanges, [Self.node(1, 10, records: 2), Self.node(3, 30)])
    }

    func testRecordsOfAKindThisNodeDoesNotKnowAreCountedButNotPulled() {
        var m = RepairSession(configuration: Self.config())
        _ = m.start(now: Self.t0)
        _ = m.compared(.ranges, theirs: DigestAnswer(records: 2, ranges: [Self.range(2, 1, records: 2)]),
                       ours: .summary(records: 0, ranges: [], ready: true), bytes: 1, now: Self.t0)
        _ = m.compared(.buckets(range: 2), theirs: DigestAnswer(ranges: [Self.range(0x0200, 1, records: 2)]), ours: .buckets([]),
                       bytes: 1, now: Self.t0)
        let a = m.compared(.records(bucket: 0x0200),
                           theirs: DigestAnswer(entries: [Self.entry(0x0200, 1, 1), Self.entry(0x0200, 2, 2, kind: 9)]),
                           ours: .records([]), bytes: 1, now: Self.t0)
        guard case .fetch(let refs, _, _) = a.first else { return XCTFail("\(a)") }
        XCTAssertEqual(refs, [Self.ref(0x0200, 1)])
    }

    func testRecordsArePulledInCallsOfTheBudgetsSizeAndWhatAnAnswerLeftOutIsAskedAgain() {
        var m = RepairSession(configuration: Self.config(RepairBudget(recordsPerCall: 3)))
        _ = m.start(now: Self.t0)
        let entries = (1...5).map { Self.entry(0x0001, UInt64($0), UInt64($0)) }
        _ = m.compared(.ranges, theirs: DigestAnswer(records: 5, ranges: [Self.range(0, 1, records: 5)]),
                       ours: .summary(records: 0, ranges: [], ready: true), bytes: 1, now: Self.t0)
        _ = m.compared(.buckets(range: 0), theirs: DigestAnswer(ranges: [Self.range(1, 1, records: 5)]), ours: .buckets([]),
                       bytes: 1, now: Self.t0)
        var a = m.compared(.records(bucket: 1), theirs: DigestAnswer(entries: entries), ours: .records([]), bytes: 1, now: Self.t0)
        let all = (1...5).map { Self.ref(1, UInt64($0)) }
        guard case .fetch(let first, _, _) = a.first else { return XCTFail("\(a)") }
        XCTAssertEqual(first, Array(all[0..<3]))
        // The answer holds the second only: merged, then the first and third asked again.
        a = m.fetched([Self.received(all[1])], bytes: 10, now: Self.t0)
        XCTAssertNotNil(a.first.flatMap { if case .merge = $0 { true } else { nil } })
        a = m.merged(changed: 1, refused: 0, damagedReplaced: 0, now: Self.t0)
        guard case .fetch(let again, _, _) = a.first else { return XCTFail("\(a)") }
        XCTAssertEqual(again, [all[0], all[2]])
        // An empty answer: the peer holds neither now; the next call asks the rest.
        a = m.fetched([], bytes: 0, now: Self.t0)
        guard case .fetch(let rest, _, _) = a.first else { return XCTFail("\(a)") }
        XCTAssertEqual(rest, Array(all[3...]))
        a = m.fetched(rest.map(Self.received), bytes: 10, now: Self.t0)
        let o = Self.finished(m.merged(changed: 2, refused: 0, damagedReplaced: 0, now: Self.t0))
        XCTAssertEqual(o?.pulled, 3)
        XCTAssertEqual(o?.calls, 6)
    }

    func testAtMostTheBudgetsBucketsAreComparedInARound() {
        var m = RepairSession(configuration: Self.config(RepairBudget(buckets: 3)))
        _ = m.start(now: Self.t0)
        _ = m.compared(.ranges, theirs: DigestAnswer(records: 6, ranges: [Self.range(0, 1, records: 4), Self.range(1, 1, records: 2)]),
                       ours: .summary(records: 0, ranges: [], ready: true), bytes: 1, now: Self.t0)
        var a = m.compared(.buckets(range: 0), theirs: DigestAnswer(ranges: (0..<4).map { Self.range($0, 1) }), ours: .buckets([]),
                           bytes: 1, now: Self.t0)
        // Range 1 waits for a later round: three buckets are queued already.
        var asked: [DigestLevel] = []
        while case .compare(let level, _, _) = a.first {
            asked.append(level)
            a = m.compared(level, theirs: DigestAnswer(), ours: .records([]), bytes: 1, now: Self.t0)
        }
        XCTAssertEqual(asked, [.records(bucket: 0), .records(bucket: 1), .records(bucket: 2)])
        let o = Self.finished(a)
        XCTAssertEqual(o?.differingBuckets, 4)
        XCTAssertEqual(o?.end, .complete)
    }

    // MARK: - Answers are inputs

    func testLevel0PositionsOutOfRangeAreRefusedNotTrapped() {
        // The answer that once killed the node: ranges 300 and 65535 (valid: 0–255).
        for bad: UInt32 in [256, 300, 65535, 65536, .max] {
            var m = RepairSession(configuration: Self.config())
            _ = m.start(now: Self.t0)
            let r = Self.refusal(m.compared(.ranges, theirs: DigestAnswer(records: 2, ranges: [Self.range(1, 1), Self.range(bad, 2)]),
                                            ours: .summary(records: 0, ranges: [], ready: true), bytes: 10, now: Self.t0))
            XCTAssertEqual(r?.reason, .invalidDigest)
            XCTAssertTrue(r?.detail.contains("ranges[1].position \(bad) is not in 0–255") ?? false, "\(String(describing: r))")
        }
    }

    func testEveryRuleOfALevel0AnswerIsChecked() {
        let cases: [(String, DigestAnswer)] = [
            ("lists 1 records", DigestAnswer(records: 1, ranges: [Self.range(1, 1)], entries: [Self.entry(1, 1, 1)])),
            ("257 ranges", DigestAnswer(records: 257, ranges: (0..<257).map { Self.range(UInt32($0 % 256), 1) })),
            ("does not follow 5", DigestAnswer(records: 2, ranges: [Self.range(5, 1), Self.range(4, 1)])),
            ("does not follow 5", DigestAnswer(records: 2, ranges: [Self.range(5, 1), Self.range(5, 2)])),
            ("sum has 31 bytes", DigestAnswer(records: 1, ranges: [Self.range(5, 1, sumBytes: Array(repeating: 1, count: 31))])),
            ("sum has 0 bytes", DigestAnswer(records: 1, ranges: [Self.range(5, 1, sumBytes: [])])),
            ("holds no records", DigestAnswer(records: 0, ranges: [Self.range(5, 1, records: 0)])),
            ("hold 2 records, the answer says 3", DigestAnswer(records: 3, ranges: [Self.range(5, 1, records: 2)])),
            ("add up past 2^64", DigestAnswer(records: 1, ranges: [Self.range(5, 1, records: .max), Self.range(6, 1, records: 2)])),
        ]
        for (expected, answer) in cases {
            var m = RepairSession(configuration: Self.config())
            _ = m.start(now: Self.t0)
            let r = Self.refusal(m.compared(.ranges, theirs: answer, ours: .summary(records: 0, ranges: [], ready: true),
                                            bytes: 10, now: Self.t0))
            XCTAssertEqual(r?.reason, .invalidDigest, expected)
            XCTAssertTrue(r?.detail.contains(expected) ?? false, "\(expected): \(String(describing: r))")
        }
    }

    func testEveryRuleOfALevel1AnswerIsChecked() {
        let cases: [(String, DigestAnswer)] = [
            ("position 512 is not in 256–511", DigestAnswer(ranges: [Self.range(512, 1)])),
            ("position 255 is not in 256–511", DigestAnswer(ranges: [Self.range(255, 1)])),
            ("position 4294967295", DigestAnswer(ranges: [Self.range(.max, 1)])),
            ("does not follow 260", DigestAnswer(ranges: [Self.range(260, 1), Self.range(259, 1)])),
            ("sum has 33 bytes", DigestAnswer(ranges: [Self.range(260, 1, sumBytes: Array(repeating: 0, count: 33))])),
            ("holds no records", DigestAnswer(ranges: [Self.range(260, 1, records: 0)])),
            ("lists 1 records", DigestAnswer(entries: [Self.entry(260, 1, 1)])),
        ]
        for (expected, answer) in cases {
            var (m, a) = Self.afterLevel0()
            XCTAssertEqual(a.count, 1)
            let r = Self.refusal(m.compared(.buckets(range: 1), theirs: answer, ours: .buckets([]), bytes: 10, now: Self.t0))
            XCTAssertEqual(r?.reason, .invalidDigest, expected)
            XCTAssertTrue(r?.detail.contains(expected) ?? false, "\(expected): \(String(describing: r))")
        }
    }

    func testEveryRuleOfALevel2AnswerIsChecked() {
        let b: UInt16 = 0x0105
        let cases: [(String, DigestAnswer)] = [
            ("kind 0 is not 1–255", DigestAnswer(entries: [Self.entry(b, 1, 1, kind: 0)])),
            ("kind 256 is not 1–255", DigestAnswer(entries: [Self.entry(b, 1, 1, kind: 256)])),
            ("kind -1 is not 1–255", DigestAnswer(entries: [Self.entry(b, 1, 1, kind: -1)])),
            ("id has 15 bytes", DigestAnswer(entries: [.init(kind: 1, id: Array(Self.id(b, 1).bytes.prefix(15)), sum: Self.sum(1).bytes)])),
            ("id has 0 bytes", DigestAnswer(entries: [.init(kind: 1, id: [], sum: Self.sum(1).bytes)])),
            ("sum has 64 bytes", DigestAnswer(entries: [.init(kind: 1, id: Self.id(b, 1).bytes, sum: Self.sum(1).bytes + Self.sum(1).bytes)])),
            ("belongs in bucket 262", DigestAnswer(entries: [Self.entry(0x0106, 1, 1)])),
            ("does not follow", DigestAnswer(entries: [Self.entry(b, 2, 1), Self.entry(b, 1, 1)])),
            ("does not follow", DigestAnswer(entries: [Self.entry(b, 1, 1), Self.entry(b, 1, 2)])),
            ("lists 1 ranges", DigestAnswer(ranges: [Self.range(b.asUInt32, 1)])),
            ("3 records; at most 2", DigestAnswer(entries: (1...3).map { Self.entry(b, UInt64($0), 1) })),
        ]
        for (expected, answer) in cases {
            var m = RepairSession(configuration: Self.config(RepairBudget(entriesPerBucket: 2)))
            _ = m.start(now: Self.t0)
            _ = m.compared(.ranges, theirs: DigestAnswer(records: 1, ranges: [Self.range(1, 1)]),
                           ours: .summary(records: 0, ranges: [], ready: true), bytes: 1, now: Self.t0)
            let a = m.compared(.buckets(range: 1), theirs: DigestAnswer(ranges: [Self.range(b.asUInt32, 1)]), ours: .buckets([]),
                               bytes: 1, now: Self.t0)
            guard case .compare(.records(bucket: b), _, _) = a.first else { return XCTFail("\(a)") }
            let r = Self.refusal(m.compared(.records(bucket: b), theirs: answer, ours: .records([]), bytes: 10, now: Self.t0))
            XCTAssertEqual(r?.reason, .invalidDigest, expected)
            XCTAssertTrue(r?.detail.contains(expected) ?? false, "\(expected): \(String(describing: r))")
        }
    }

    /// A round at its records call: 3 records to pull from bucket 1.
    static func fetching(_ budget: RepairBudget = RepairBudget()) -> (RepairSession, [RecordRef]) {
        var m = RepairSession(configuration: config(budget))
        _ = m.start(now: t0)
        _ = m.compared(.ranges, theirs: DigestAnswer(records: 3, ranges: [range(0, 1, records: 3)]),
                       ours: .summary(records: 0, ranges: [], ready: true), bytes: 1, now: t0)
        _ = m.compared(.buckets(range: 0), theirs: DigestAnswer(ranges: [range(1, 1, records: 3)]), ours: .buckets([]),
                       bytes: 1, now: t0)
        let a = m.compared(.records(bucket: 1), theirs: DigestAnswer(entries: (1...3).map { entry(1, UInt64($0), 1) }),
                           ours: .records([]), bytes: 1, now: t0)
        guard case .fetch(let refs, _, _) = a.first else {
            XCTFail("\(a)")
            return (m, [])
        }
        return (m, refs)
    }

    func testARecordNotAskedForEndsTheRoundAndNothingOfItsAnswerIsMerged() {
        // The endless peer: its answers carry a record nobody asked for.
        var (m, asked) = Self.fetching()
        let stranger = Self.ref(0x7777, 9)
        let r = Self.refusal(m.fetched([Self.received(asked[0]), Self.received(stranger)], bytes: 100, now: Self.t0))
        XCTAssertEqual(r?.reason, .unaskedRecord)
        XCTAssertTrue(r?.detail.contains("not asked for") ?? false)
        XCTAssertEqual(m.fetched([Self.received(asked[0])], bytes: 1, now: Self.t0).count, 0, "silent once over")
    }

    func testARecordSentTwiceOrUnnamedIsRefused() {
        var (m, asked) = Self.fetching()
        XCTAssertTrue(Self.refusal(m.fetched([Self.received(asked[1]), Self.received(asked[1])], bytes: 1, now: Self.t0))?
            .detail.contains("sent twice") ?? false)
        var (n, _) = Self.fetching()
        let unnamed = RemoteRecord(sequence: 1, refusedKind: nil, id: nil, Refusal(.malformed, "x"))
        XCTAssertEqual(Self.refusal(n.fetched([unnamed], bytes: 1, now: Self.t0))?.reason, .unaskedRecord)
        // A record received once already, then sent again in a later answer, was not asked for again.
        var (o, refs) = Self.fetching()
        _ = o.fetched([Self.received(refs[0])], bytes: 1, now: Self.t0)
        _ = o.merged(changed: 1, refused: 0, damagedReplaced: 0, now: Self.t0)
        XCTAssertEqual(Self.refusal(o.fetched([Self.received(refs[0])], bytes: 1, now: Self.t0))?.reason, .unaskedRecord)
    }

    func testAnUndecodableAnswerIsRefusedAsMalformed() {
        var m = RepairSession(configuration: Self.config())
        _ = m.start(now: Self.t0)
        let r = Self.refusal(m.answerUndecodable("DigestReply: truncated", bytes: 5, now: Self.t0))
        XCTAssertEqual(r, RepairRefusal(.malformedAnswer, "DigestReply: truncated"))
        var (f, _) = Self.fetching()
        XCTAssertEqual(Self.refusal(f.answerUndecodable("frame", bytes: 5, now: Self.t0))?.reason, .malformedAnswer)
    }

    // MARK: - The budget

    func testARoundStopsAtItsBudgetOfCalls() {
        // A peer that answers one asked record per call keeps the round going; the budget ends it.
        var (m, _) = Self.fetching(RepairBudget(calls: 5))
        var a: [Action] = []
        var refs = [Self.ref(1, 1), Self.ref(1, 2), Self.ref(1, 3)]
        a = m.fetched([Self.received(refs.removeFirst())], bytes: 1, now: Self.t0)
        a = m.merged(changed: 0, refused: 0, damagedReplaced: 0, now: Self.t0)
        guard case .fetch = a.first else { return XCTFail("\(a)") }  // the fifth call
        a = m.fetched([Self.received(refs.removeFirst())], bytes: 1, now: Self.t0)
        let r = Self.refusal(m.merged(changed: 0, refused: 0, damagedReplaced: 0, now: Self.t0))
        XCTAssertEqual(r, RepairRefusal(.overBudget, "more than 5 calls in one round"))
    }

    func testARoundStopsAtItsBudgetOfBytes() {
        var m = RepairSession(configuration: Self.config(RepairBudget(bytes: 1000)))
        let a = m.start(now: Self.t0)
        guard case .compare(_, let maxBytes, _) = a.first else { return XCTFail("\(a)") }
        XCTAssertEqual(maxBytes, 1000, "no answer may be larger than what the budget has left")
        let r = Self.refusal(m.compared(.ranges, theirs: DigestAnswer(records: 1, ranges: [Self.range(1, 1)]),
                                        ours: .summary(records: 0, ranges: [], ready: true), bytes: 1001, now: Self.t0))
        XCTAssertEqual(r?.reason, .overBudget)
        // An answer cut off at the call's limit: over the budget when the limit was the budget's…
        var n = RepairSession(configuration: Self.config(RepairBudget(bytes: 1000)))
        _ = n.start(now: Self.t0)
        XCTAssertEqual(Self.refusal(n.answerTooLarge(now: Self.t0))?.reason, .overBudget)
        // …and malformed when it was the protocol's.
        var o = RepairSession(configuration: Self.config())
        _ = o.start(now: Self.t0)
        XCTAssertEqual(Self.refusal(o.answerTooLarge(now: Self.t0)), RepairRefusal(.malformedAnswer, "an answer of more than 16777216 bytes"))
    }

    func testARoundStopsAtItsBudgetOfTimeAndCallsWaitNoLongerThanWhatIsLeft() {
        var (m, a) = Self.afterLevel0(RepairBudget(duration: .seconds(40)))
        guard case .compare(_, _, let timeout) = a.first else { return XCTFail("\(a)") }
        XCTAssertEqual(timeout, .seconds(30))
        a = m.compared(.buckets(range: 1), theirs: DigestAnswer(ranges: [Self.range(0x0105, 5)]), ours: .buckets([]),
                       bytes: 1, now: Self.at(25))
        guard case .compare(_, _, let left) = a.first else { return XCTFail("\(a)") }
        XCTAssertEqual(left, .seconds(15))
        let r = Self.refusal(m.compared(.buckets(range: 3), theirs: DigestAnswer(), ours: .buckets([]), bytes: 1, now: Self.at(41)))
        XCTAssertEqual(r, RepairRefusal(.overBudget, "longer than 40.0 seconds in one round"))
    }

    func testAFailedCallOrMergeEndsTheRoundAsFailed() {
        var m = RepairSession(configuration: Self.config())
        _ = m.start(now: Self.t0)
        XCTAssertEqual(Self.finished(m.callFailed("no answer in time"))?.end, .failed("no answer in time"))
        var (f, refs) = Self.fetching()
        _ = f.fetched([Self.received(refs[0])], bytes: 1, now: Self.t0)
        XCTAssertEqual(Self.finished(f.mergeFailed("disk full"))?.end, .failed("merge failed: disk full"))
    }

    // MARK: - Every event in every state

    enum StateKind: String, CaseIterable { case idle, comparing, fetching, merging, finished }

    static func machine(_ kind: StateKind) -> RepairSession {
        switch kind {
        case .idle: return RepairSession(configuration: config())
        case .comparing: return afterLevel0().0
        case .fetching: return fetching().0
        case .merging:
            var (m, refs) = fetching()
            _ = m.fetched([received(refs[0])], bytes: 1, now: t0)
            return m
        case .finished:
            var m = RepairSession(configuration: config())
            _ = m.start(now: t0)
            _ = m.callFailed("x")
            return m
        }
    }

    enum Event: CaseIterable {
        case start, compared, fetched, undecodable, tooLarge, merged, mergeFailed, callFailed
    }

    static func fire(_ e: Event, _ m: inout RepairSession) -> [Action] {
        switch e {
        case .start: m.start(now: t0)
        case .compared: m.compared(.buckets(range: 1), theirs: DigestAnswer(), ours: .buckets([]), bytes: 1, now: t0)
        case .fetched: m.fetched([], bytes: 1, now: t0)
        case .undecodable: m.answerUndecodable("x", bytes: 1, now: t0)
        case .tooLarge: m.answerTooLarge(now: t0)
        case .merged: m.merged(changed: 0, refused: 0, damagedReplaced: 0, now: t0)
        case .mergeFailed: m.mergeFailed("x")
        case .callFailed: m.callFailed("x")
        }
    }

    /// Which events each state takes; every other one ends the round as failed (a bug
    /// of the shell, never a trap), and a finished round says nothing more.
    static let accepted: [StateKind: Set<Event>] = [
        .idle: [.start],
        .comparing: [.compared, .undecodable, .tooLarge, .callFailed],
        .fetching: [.fetched, .undecodable, .tooLarge, .callFailed],
        .merging: [.merged, .mergeFailed],
        .finished: [],
    ]

    func testEveryEventInEveryState() {
        for kind in StateKind.allCases {
            XCTAssertEqual(Self.machine(kind).stateName, kind.rawValue)
            for e in Event.allCases {
                var m = Self.machine(kind)
                let a = Self.fire(e, &m)
                if kind == .finished {
                    XCTAssertTrue(a.isEmpty, "\(e) in finished")
                    continue
                }
                if Self.accepted[kind]!.contains(e) {
                    XCTAssertFalse(a.isEmpty, "\(e) in \(kind)")
                    if case .finish(let o)? = a.first, case .failed(let why) = o.end {
                        XCTAssertFalse(why.hasPrefix("unexpected"), "\(e) in \(kind): \(why)")
                    }
                } else {
                    guard case .finish(let o)? = a.first, case .failed(let why) = o.end else {
                        XCTFail("\(e) in \(kind) should end the round: \(a)")
                        continue
                    }
                    XCTAssertTrue(why.hasPrefix("unexpected event"), why)
                    XCTAssertTrue(m.isFinished)
                }
            }
        }
    }

    // MARK: - Seeded random answers

    /// Random answers, hostile and honest mixed: positions anywhere in UInt32, sums of
    /// any length, kinds and ids of any shape, counts that may not add up, records asked
    /// for or not, twice, none. Whatever comes, the round ends within its budget of
    /// calls (plus the answer it is refused at), no merge carries a record the call
    /// before did not ask for, and a finished round takes no more events.
    func testRandomAnswersNeverTrapAndAlwaysEndWithinTheBudget() {
        let cases = propertyCases(2000)
        var refusals: [RepairRefusal.Reason: Int] = [:]
        var ends = 0
        for seed in 0..<UInt64(cases) {
            var rng = SeededRandom(seed: seed)
            let budget = RepairBudget(calls: Int.random(in: 3...40, using: &rng), bytes: Int.random(in: 500...100_000, using: &rng),
                                      buckets: Int.random(in: 1...6, using: &rng), recordsPerCall: Int.random(in: 1...5, using: &rng),
                                      entriesPerBucket: 8)
            var m = RepairSession(configuration: Self.config(budget))
            var now = Self.t0
            var actions = m.start(now: now)
            var asked: Set<RecordRef> = []
            var steps = 0
            var finished: RepairOutcome?
            while let action = actions.first {
                steps += 1
                XCTAssertLessThan(steps, 4 * budget.calls + 10, "seed \(seed): the round does not end")
                if steps > 4 * budget.calls + 10 { break }
                XCTAssertEqual(actions.count, 1, "seed \(seed)")
                now = now + .milliseconds(Int64.random(in: 0...50_000, using: &rng))
                switch action {
                case .compare(let level, _, _):
                    let (theirs, ours) = Self.randomLevel(level, &rng)
                    switch Int.random(in: 0..<20, using: &rng) {
                    case 0: actions = m.callFailed("random")
                    case 1: actions = m.answerUndecodable("random", bytes: 3, now: now)
                    case 2: actions = m.answerTooLarge(now: now)
                    default: actions = m.compared(level, theirs: theirs, ours: ours, bytes: Int.random(in: 0...2000, using: &rng), now: now)
                    }
                case .fetch(let refs, _, _):
                    asked = Set(refs)
                    XCTAssertFalse(refs.isEmpty, "seed \(seed)")
                    XCTAssertLessThanOrEqual(refs.count, budget.recordsPerCall, "seed \(seed)")
                    var answer = refs.filter { _ in Bool.random(using: &rng) }
                    if Int.random(in: 0..<6, using: &rng) == 0 { answer.append(Self.ref(UInt16.random(in: 0...3, using: &rng), 99)) }
                    if Int.random(in: 0..<8, using: &rng) == 0, let r = refs.first { answer.append(r) }
                    actions = m.fetched(answer.map(Self.received), bytes: Int.random(in: 0...3000, using: &rng), now: now)
                case .merge(let records):
                    for r in records {
                        guard case .refused(let k?, let i?, _) = r.content else { XCTFail("seed \(seed)"); continue }
                        XCTAssertTrue(asked.contains(RecordRef(kind: k, id: i)), "seed \(seed): merged a record not asked for")
                    }
                    actions = Int.random(in: 0..<30, using: &rng) == 0
                        ? m.mergeFailed("random")
                        : m.merged(changed: records.count, refused: 0, damagedReplaced: 0, now: now)
                case .finish(let o):
                    finished = o
                    actions = []
                }
            }
            guard let o = finished else { XCTFail("seed \(seed): no end"); continue }
            ends += 1
            XCTAssertLessThanOrEqual(o.calls, budget.calls, "seed \(seed)")
            if case .refused(let r) = o.end { refusals[r.reason, default: 0] += 1 }
            XCTAssertTrue(Self.fire(.callFailed, &m).isEmpty, "seed \(seed): spoke after the end")
        }
        XCTAssertEqual(ends, cases)
        // The generator reaches every kind of refusal, so the property covers each.
        for reason in RepairRefusal.Reason.allCases { XCTAssertGreaterThan(refusals[reason] ?? 0, 0, "\(reason)") }
    }

    /// A peer's answer at `level`, and our side of it, mostly valid, sometimes not.
    static func randomLevel(_ level: DigestLevel, _ rng: inout SeededRandom) -> (DigestAnswer, OurDigest) {
        func sumBytes() -> [UInt8] {
            Int.random(in: 0..<25, using: &rng) == 0 ? Array(repeating: 1, count: Int.random(in: 0...40, using: &rng))
                : sum(UInt64.random(in: 0...3, using: &rng)).bytes
        }
        let hostile = Int.random(in: 0..<6, using: &rng) == 0
        switch level {
        case .ranges, .buckets:
            var base: UInt32 = 0
            if case .buckets(let r) = level { base = UInt32(r) << 8 }
            var positions = Set<UInt32>()
            for _ in 0..<Int.random(in: 0...4, using: &rng) { positions.insert(base + UInt32.random(in: 0...3, using: &rng)) }
            var ps = positions.sorted()
            if hostile { ps.append([300, 65535, .max, base &- 1, base + 256].randomElement(using: &rng)!) }
            let ranges = ps.map { DigestAnswer.Range(position: $0, sum: sumBytes(), records: UInt64.random(in: hostile ? 0...2 : 1...2, using: &rng)) }
            let total = ranges.reduce(UInt64(0)) { $0 &+ $1.records } &+ (hostile ? UInt64.random(in: 0...1, using: &rng) : 0)
            let mine = (0...3).filter { _ in Bool.random(using: &rng) }.map { node(UInt16(base) + UInt16($0), UInt64.random(in: 0...3, using: &rng)) }
            if case .ranges = level {
                return (DigestAnswer(ready: Int.random(in: 0..<15, using: &rng) != 0, records: total, ranges: ranges),
                        .summary(records: 0, ranges: mine, ready: true))
            }
            return (DigestAnswer(ranges: ranges), .buckets(mine))
        case .records(let b):
            var entries = (1...UInt64.random(in: 1...4, using: &rng)).map { entry(b, $0, UInt64.random(in: 0...3, using: &rng)) }
            if hostile {
                switch Int.random(in: 0..<5, using: &rng) {
                case 0: entries.append(entry(b &+ 1, 9, 1))
                case 1: entries.append(.init(kind: Int.random(in: -5...300, using: &rng), id: id(b, 20).bytes, sum: sum(1).bytes))
                case 2: entries.append(.init(kind: 1, id: Array(repeating: 0, count: Int.random(in: 0...20, using: &rng)), sum: sum(1).bytes))
                case 3: entries.append(entries[0])
                default: entries.append(.init(kind: 1, id: id(b, 21).bytes, sum: sumBytes()))
                }
            }
            let mine = (1...3).filter { _ in Bool.random(using: &rng) }.map { ours(b, UInt64($0), UInt64.random(in: 0...3, using: &rng)) }
            return (DigestAnswer(entries: entries), .records(mine))
        }
    }
}

private extension UInt16 {
    var asUInt32: UInt32 { UInt32(self) }
}
