import CaseModel
import CaseStore
@testable import EKCNode
import Foundation
@testable import Replication
@testable import Wire

/// A peer's answers to this node's anti-entropy calls, as `AntiEntropy.run` reads them:
/// a round's session (`RepairSession`) asks, and each call is answered with the next
/// piece of the input — a digest call's bytes parsed as a `DigestReply` and turned into
/// the values the session checks (`AntiEntropy.answer`), a records call's bytes read as
/// frames, each record decoded and checked (`AntiEntropy.records`) — and each merge the
/// session hands over is admitted record by record, as `FrameFuzz` does for a pull. This
/// node's side of each level is a fixed digest of 48 records (`ours`).
///
/// The harness checks what the session promises: a merge carries only records the call
/// before asked for, the round makes no more calls than its budget, and it ends.
///
/// Input: one byte of parameters (bits 0-3: the budget's calls, 4 + 4n; bits 4-6: refs per
/// records call, 1 + n; bit 7: a budget of 64 KiB of answers instead of 1 GiB), then one
/// answer per call: a selector byte (0xFD: the call failed; 0xFE: the answer was larger
/// than the call allowed; anything else: the answer) and the answer's bytes in a field of
/// two length bytes.
public enum AnswerFuzz {
    /// This node's records: 48 tickets spread over the digest, with leaves of their ids.
    public static let ours: [DigestEntry] = (0..<48).map { n in
        let id = RecordID(high: 0x0190_0000_0000_0000 | UInt64(n) << 20, low: 0x5EED_0000 | UInt64(n))
        return DigestEntry(kind: TicketRecord.kind, id: id, value: DigestSum(a: UInt64(n), b: id.high, c: id.low, d: 17))
    }

    static let reading = RecordReading(kinds: FuzzWorld.kinds, check: CheckContext(directory: FuzzWorld.directory))

    /// This node's digest at `level`, as the store gives it.
    public static func ourDigest(_ level: DigestLevel) -> OurDigest { digest(of: ours, level) }

    /// The digest of `entries` at `level`, as a store of just these records gives it.
    public static func digest(of entries: [DigestEntry], _ level: DigestLevel) -> OurDigest {
        func nodes(_ entries: [DigestEntry], by key: (UInt16) -> UInt16) -> [DigestNode] {
            var sums: [UInt16: (DigestSum, UInt64)] = [:]
            for e in entries {
                let k = key(DigestHashing.position(e.kind, e.id))
                let (s, c) = sums[k] ?? (.zero, 0)
                sums[k] = (s + e.value, c + 1)
            }
            return sums.keys.sorted().map { DigestNode(position: $0, sum: sums[$0]!.0, records: sums[$0]!.1) }
        }
        switch level {
        case .ranges:
            return .summary(records: UInt64(entries.count), ranges: nodes(entries) { $0 >> 8 }, ready: true)
        case .buckets(let range):
            return .buckets(nodes(entries.filter { DigestHashing.position($0.kind, $0.id) >> 8 == UInt16(range) }) { $0 })
        case .records(let bucket):
            return .records(entries.filter { DigestHashing.position($0.kind, $0.id) == bucket }
                .sorted { RecordRef(kind: $0.kind, id: $0.id) < RecordRef(kind: $1.kind, id: $1.id) })
        }
    }

    /// A digest level as a peer holding `entries` answers it (`AntiEntropyResponder`).
    public static func reply(_ entries: [DigestEntry], _ level: DigestLevel) -> WireDigestReply {
        var r = WireDigestReply()
        r.storeID = Data(repeating: 9, count: 16)
        r.scope = "38"
        r.ready = true
        switch digest(of: entries, level) {
        case .summary(let records, let nodes, _):
            r.records = records
            r.ranges = AntiEntropyResponder.ranges(nodes)
        case .buckets(let nodes):
            r.ranges = AntiEntropyResponder.ranges(nodes)
        case .records(let list):
            r.entries = AntiEntropyResponder.records(list)
        }
        return r
    }

    public static func prepare() {
        _ = reading
        _ = ours
    }

    public static func run(_ data: [UInt8]) {
        var input = FuzzBytes(data)
        let parameters = input.byte()
        let budget = RepairBudget(calls: 4 + 4 * Int(parameters & 0x0F), bytes: parameters & 0x80 != 0 ? 64 << 10 : 1 << 30,
                                  recordsPerCall: 1 + Int(parameters >> 4 & 0x07))
        var session = RepairSession(configuration: .init(budget: budget, kinds: Set(FuzzWorld.kinds.schemas.map(\.kind)),
                                                         position: { DigestHashing.position($0, $1) }))
        var puller = FrameFuzz.Puller(peer: FuzzWorld.irkOffice)
        var clock = MonotonicInstant(nanoseconds: 1_000_000_000)
        var asked: Set<RecordRef> = []
        var actions = session.start(now: clock)[...]
        var steps = 0
        while let action = actions.popFirst() {
            steps += 1
            precondition(steps <= 3 * budget.calls + 8, "the round did not end within its budget of \(budget.calls) calls")
            clock.nanoseconds += 1_000_000
            let next: [RepairSession.Action]
            switch action {
            case .compare(let level, let maxBytes, _):
                let (selector, body) = (input.byte(), input.longField())
                if selector == 0xFD {
                    next = session.callFailed("no answer in time")
                } else if selector == 0xFE || body.count > maxBytes {
                    next = session.answerTooLarge(now: clock)
                } else if let reply = try? WireCoding.parse(WireDigestReply.self, from: body) {
                    next = session.compared(level, theirs: AntiEntropy.answer(reply), ours: ourDigest(level), bytes: body.count,
                                            now: clock)
                } else {
                    next = session.answerUndecodable("DigestReply", bytes: body.count, now: clock)
                }
            case .fetch(let refs, let maxBytes, _):
                asked = Set(refs)
                precondition(!refs.isEmpty && refs.count <= budget.recordsPerCall, "a records call of \(refs.count) refs")
                let (selector, body) = (input.byte(), input.longField())
                if selector == 0xFD {
                    next = session.callFailed("no answer in time")
                } else if selector == 0xFE || body.count > maxBytes {
                    next = session.answerTooLarge(now: clock)
                } else {
                    do {
                        next = session.fetched(try AntiEntropy.records(body, reading), bytes: body.count, now: clock)
                    } catch {
                        next = session.answerUndecodable("\(error)", bytes: body.count, now: clock)
                    }
                }
            case .merge(let records):
                for r in records {
                    let ref: RecordRef? = switch r.content {
                    case .delta(let d): RecordRef(kind: d.kind, id: d.id)
                    case .refused(let k?, let i?, _): RecordRef(kind: k, id: i)
                    case .refused: nil
                    }
                    precondition(ref.map(asked.contains) == true, "merged a record the call did not ask for")
                }
                puller.merge(records)
                next = session.merged(changed: records.count, refused: 0, damagedReplaced: 0, now: clock)
            case .finish(let outcome):
                precondition(outcome.calls <= budget.calls, "\(outcome.calls) calls; the budget is \(budget.calls)")
                _ = DigestSummary(scope: "38", records: outcome.theirRecords, ranges: outcome.theirRanges).root
                next = []
            }
            actions = next[...]
        }
        precondition(session.isFinished, "the round stopped without finishing")
        for record in puller.records.values { FrameFuzz.show(record) }
    }
}
