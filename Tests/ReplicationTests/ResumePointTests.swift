import TestSupport
import XCTest
@testable import Replication

/// The stream's position rules over plain values: where a stream resumes (§5, with
/// checkpoints on both ends), the batch sequence check (§4.2) and the batch limit (§3).
final class ResumePointTests: XCTestCase {
    static let ours: [UInt8] = Array(repeating: 0xAB, count: 16)
    static let theirs: [UInt8] = Array(repeating: 0xCD, count: 16)

    func resume(_ c: FeedCheckpoint?, last: UInt64 = 500, served: UInt64? = 1_000) -> ResumePoint {
        ResumePoint(checkpoint: c, storeID: Self.ours, lastSequence: last, served: served)
    }

    /// The table of §5, with the served mark out of the way.
    func testTheSpecTable() {
        XCTAssertEqual(resume(nil), .init(resumeAfter: 0, checkpointReset: false, rewound: false), "absent")
        XCTAssertEqual(resume(.init(sourceStoreID: [], sequence: 0)), .init(resumeAfter: 0, checkpointReset: false, rewound: false), "empty")
        XCTAssertEqual(resume(.init(sourceStoreID: Self.ours, sequence: 300)), .init(resumeAfter: 300, checkpointReset: false, rewound: false))
        XCTAssertEqual(resume(.init(sourceStoreID: Self.ours, sequence: 500)), .init(resumeAfter: 500, checkpointReset: false, rewound: false),
                       "up to date")
        XCTAssertEqual(resume(.init(sourceStoreID: Self.ours, sequence: 0)), .init(resumeAfter: 0, checkpointReset: false, rewound: false))
        XCTAssertEqual(resume(.init(sourceStoreID: Self.theirs, sequence: 300)), .init(resumeAfter: 0, checkpointReset: true, rewound: false),
                       "another store")
        XCTAssertEqual(resume(.init(sourceStoreID: Self.ours, sequence: 501)), .init(resumeAfter: 0, checkpointReset: true, rewound: false),
                       "beyond our last: rolled back")
        // Only one half empty is not "empty": it names no store we are.
        XCTAssertEqual(resume(.init(sourceStoreID: [], sequence: 7)), .init(resumeAfter: 0, checkpointReset: true, rewound: false))
        XCTAssertEqual(resume(.init(sourceStoreID: Self.theirs, sequence: 0)), .init(resumeAfter: 0, checkpointReset: true, rewound: false))
    }

    /// Never resume past what this store remembers serving the puller.
    func testTheServedMark() {
        let c = FeedCheckpoint(sourceStoreID: Self.ours, sequence: 300)
        XCTAssertEqual(resume(c, served: 300), .init(resumeAfter: 300, checkpointReset: false, rewound: false))
        XCTAssertEqual(resume(c, served: 299), .init(resumeAfter: 299, checkpointReset: false, rewound: true), "restored from a copy")
        XCTAssertEqual(resume(c, served: 0), .init(resumeAfter: 0, checkpointReset: false, rewound: true))
        XCTAssertEqual(resume(c, served: nil), .init(resumeAfter: 0, checkpointReset: false, rewound: true), "no record: from 0")
        XCTAssertEqual(resume(nil, served: nil), .init(resumeAfter: 0, checkpointReset: false, rewound: false))
        XCTAssertEqual(resume(.init(sourceStoreID: Self.theirs, sequence: 300), served: nil),
                       .init(resumeAfter: 0, checkpointReset: true, rewound: false), "a reset is no rewind")
    }

    func testTupleFormMatchesTheWireFunction() {
        let r = resume(.init(sourceStoreID: Self.ours, sequence: 300), served: 100)
        XCTAssertEqual(r.tuple.resumeAfter, 100)
        XCTAssertFalse(r.tuple.reset)
        XCTAssertTrue(r.tuple.rewound)
    }

    /// Against a literal transcription of `ReplicationProtocol.resumePoint` (Wire), over
    /// random values: the move changed nothing.
    func testAgreesWithTheWireRuleOnRandomValues() {
        func reference(_ c: FeedCheckpoint?, _ storeID: [UInt8], _ last: UInt64, _ served: UInt64?) -> (UInt64, Bool, Bool) {
            let (resume, reset): (UInt64, Bool)
            if let c, !(c.sourceStoreID.isEmpty && c.sequence == 0) {
                if c.sourceStoreID == storeID, c.sequence <= last { (resume, reset) = (c.sequence, false) } else { (resume, reset) = (0, true) }
            } else {
                (resume, reset) = (0, false)
            }
            let limit = served ?? 0
            return resume > limit ? (limit, reset, true) : (resume, reset, false)
        }
        var rng = SeededRandom(seed: 2026)
        let ids: [[UInt8]] = [[], [1], Self.ours, Self.theirs]
        for _ in 0..<20_000 {
            let last = UInt64.random(in: 0...20, using: &rng)
            let c: FeedCheckpoint? = Bool.random(using: &rng) ? nil
                : .init(sourceStoreID: ids.randomElement(using: &rng) ?? [], sequence: UInt64.random(in: 0...25, using: &rng))
            let served: UInt64? = Int.random(in: 0..<4, using: &rng) == 0 ? nil : UInt64.random(in: 0...25, using: &rng)
            let storeID = ids.randomElement(using: &rng) ?? []
            let r = ResumePoint(checkpoint: c, storeID: storeID, lastSequence: last, served: served)
            let (a, b, d) = reference(c, storeID, last, served)
            XCTAssertEqual(r, .init(resumeAfter: a, checkpointReset: b, rewound: d), "\(String(describing: c)) \(storeID) \(last) \(String(describing: served))")
            // The stream never starts beyond what the store has, nor beyond what it served.
            XCTAssertLessThanOrEqual(r.resumeAfter, max(last, 0))
            XCTAssertLessThanOrEqual(r.resumeAfter, served ?? 0)
        }
    }

    // MARK: - Batch sequences

    func testValidBatches() throws {
        try BatchSequence.check(sequences: [51, 52, 60], through: 60, after: 50)
        try BatchSequence.check(sequences: [51], through: 99, after: 50)
        try BatchSequence.check(sequences: [], through: 51, after: 50)  // only advances through (§4.2)
        try BatchSequence.check(sequences: [UInt64.max], through: .max, after: .max - 1)
    }

    func testInvalidBatchesNameTheFieldAndRule() {
        func error(_ s: [UInt64], through: UInt64, after: UInt64) -> BatchSequenceError? {
            do throws(BatchSequenceError) {
                try BatchSequence.check(sequences: s, through: through, after: after)
                return nil
            } catch {
                return error
            }
        }
        XCTAssertEqual(error([], through: 50, after: 50), .throughDoesNotAdvance(through: 50, after: 50))
        XCTAssertEqual(error([40], through: 40, after: 50), .throughDoesNotAdvance(through: 40, after: 50))
        XCTAssertEqual(error([50], through: 60, after: 50), .sequenceOutOfRange(index: 0, sequence: 50, previous: 50, through: 60))
        XCTAssertEqual(error([51, 51], through: 60, after: 50), .sequenceOutOfRange(index: 1, sequence: 51, previous: 51, through: 60))
        XCTAssertEqual(error([52, 51], through: 60, after: 50), .sequenceOutOfRange(index: 1, sequence: 51, previous: 52, through: 60))
        XCTAssertEqual(error([51, 61], through: 60, after: 50), .sequenceOutOfRange(index: 1, sequence: 61, previous: 51, through: 60))
        let e = error([51, 61], through: 60, after: 50)
        XCTAssertEqual(e?.field, "batch.changes[1].sequence")
        XCTAssertEqual(e?.reason, "61 is not in (51, 60]")
        XCTAssertEqual(error([], through: 3, after: 9)?.description, "batch.through_sequence: 3 does not advance past 9")
    }

    func testRandomBatchesPassIffTheRuleHolds() {
        var rng = SeededRandom(seed: 59)
        var passed = 0
        for _ in 0..<20_000 {
            let after = UInt64.random(in: 0...10, using: &rng)
            let through = UInt64.random(in: 0...20, using: &rng)
            let s = (0..<Int.random(in: 0...4, using: &rng)).map { _ in UInt64.random(in: 0...20, using: &rng) }
            let holds = through > after && zip([after] + s, s).allSatisfy { $0 < $1 } && s.allSatisfy { $0 <= through }
            let ok = (try? BatchSequence.check(sequences: s, through: through, after: after)) != nil
            XCTAssertEqual(ok, holds, "\(s) through \(through) after \(after)")
            if ok { passed += 1 }
        }
        XCTAssertGreaterThan(passed, 500)
    }

    func testBatchLimit() {
        XCTAssertEqual(BatchSequence.limit(requested: 0), 512)
        XCTAssertEqual(BatchSequence.limit(requested: 1), 1)
        XCTAssertEqual(BatchSequence.limit(requested: 4096), 4096)
        XCTAssertEqual(BatchSequence.limit(requested: 4097), 4096)
        XCTAssertEqual(BatchSequence.limit(requested: .max), 4096)
        XCTAssertEqual(BatchSequence.limit(requested: 0, defaultLimit: 10, maximum: 20), 10)
    }
}
