import CaseModel

/// A level of a peer's digest to ask for (proto/README.md §13).
public enum DigestLevel: Sendable, Hashable, CustomStringConvertible {
    /// Level 0: the scope's non-empty ranges.
    case ranges
    /// Level 1: the non-empty buckets of one range.
    case buckets(range: UInt8)
    /// Level 2: the records of one bucket, with their leaves.
    case records(bucket: UInt16)

    /// `DigestRequest.level` and `.position`.
    public var wire: (level: UInt32, position: UInt32) {
        switch self {
        case .ranges: (0, 0)
        case .buckets(let r): (1, UInt32(r))
        case .records(let b): (2, UInt32(b))
        }
    }

    public var description: String {
        switch self {
        case .ranges: "level 0"
        case .buckets(let r): "level 1 (range \(r))"
        case .records(let b): "level 2 (bucket \(b))"
        }
    }
}

/// A `DigestReply` as the wire gave it, nothing checked yet: what the peer claims.
public struct DigestAnswer: Sendable, Equatable {
    public struct Range: Sendable, Equatable {
        public var position: UInt32
        public var sum: [UInt8]
        public var records: UInt64
        public init(position: UInt32, sum: [UInt8], records: UInt64) {
            self.position = position
            self.sum = sum
            self.records = records
        }
    }

    public struct Record: Sendable, Equatable {
        /// The `RecordKind` enum's number, as sent (any int32).
        public var kind: Int
        public var id: [UInt8]
        public var sum: [UInt8]
        public init(kind: Int, id: [UInt8], sum: [UInt8]) {
            self.kind = kind
            self.id = id
            self.sum = sum
        }
    }

    public var ready: Bool
    public var records: UInt64
    public var ranges: [Range]
    public var entries: [Record]

    public init(ready: Bool = true, records: UInt64 = 0, ranges: [Range] = [], entries: [Record] = []) {
        self.ready = ready
        self.records = records
        self.ranges = ranges
        self.entries = entries
    }
}

/// This node's side of a level, read from its store when the peer's answer came.
public enum OurDigest: Sendable, Equatable {
    case summary(records: UInt64, ranges: [DigestNode], ready: Bool)
    case buckets([DigestNode])
    case records([DigestEntry])
}

/// Why a round refused what a peer answered. The raw values are stable: they are
/// reasons of the refused-records metric and of the link's `rejected` list.
public struct RepairRefusal: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Reason: String, Sendable, CaseIterable {
        /// A digest answer breaks §13: a position out of its level's range or out of
        /// order, a sum not 32 bytes, counts that do not add up, a record listed in a
        /// bucket it does not hash to.
        case invalidDigest = "invalid_digest"
        /// A records answer carries a record that was not asked for, or one twice.
        case unaskedRecord = "unasked_record"
        /// An answer that does not decode, or holds frames a records answer cannot.
        case malformedAnswer = "malformed_answer"
        /// The round took more calls, bytes or time than its budget.
        case overBudget = "over_budget"
    }

    public let reason: Reason
    public let detail: String
    public init(_ reason: Reason, _ detail: String) {
        self.reason = reason
        self.detail = detail
    }
    public var description: String { "\(reason.rawValue): \(detail)" }
}

/// What one round may cost. A peer that needs more is refused for the round (and the
/// next round carries on); an honest peer's worst round — a store restored from
/// nothing, 4,096 buckets, a few hundred records calls — stays well inside.
public struct RepairBudget: Sendable, Equatable {
    public var calls: Int
    /// Bytes of all answers together.
    public var bytes: Int
    public var duration: Duration
    /// Most buckets compared (level 2 calls) in one round: a peer that differs
    /// everywhere is repaired over several rounds, not in one burst. Not a refusal.
    public var buckets: Int
    /// Refs per records call (the protocol allows 1,000).
    public var recordsPerCall: Int
    /// Records one bucket may list (at 10^7 records a bucket holds about 150).
    public var entriesPerBucket: Int
    /// One call's answer: a digest level, a records answer.
    public var digestAnswerBytes: Int
    public var recordsAnswerBytes: Int
    /// One call's wait for its whole answer.
    public var callTimeout: Duration

    public init(calls: Int = 10_000, bytes: Int = 1 << 30, duration: Duration = .seconds(900), buckets: Int = 4096,
                recordsPerCall: Int = 500, entriesPerBucket: Int = 65_536, digestAnswerBytes: Int = 16 << 20,
                recordsAnswerBytes: Int = 32 << 20, callTimeout: Duration = .seconds(30)) {
        self.calls = max(1, calls)
        self.bytes = max(1, bytes)
        self.duration = duration
        self.buckets = max(1, buckets)
        self.recordsPerCall = max(1, recordsPerCall)
        self.entriesPerBucket = max(1, entriesPerBucket)
        self.digestAnswerBytes = max(1, digestAnswerBytes)
        self.recordsAnswerBytes = max(1, recordsAnswerBytes)
        self.callTimeout = callTimeout
    }
}

/// What a round found and did, and how it ended.
public struct RepairOutcome: Sendable, Equatable {
    public enum End: Sendable, Equatable {
        /// Compared, and pulled what differed.
        case complete
        /// A side has not hashed every record yet (a store from before digests): skipped.
        case notReady
        /// A call failed (connection, timeout, an error status) or a merge did: the
        /// next round tries again.
        case failed(String)
        /// The peer answered what the protocol forbids, or more than the budget allows.
        case refused(RepairRefusal)
    }

    public var end: End = .complete
    public var ready = true
    public var equal = false
    public var ourRecords: UInt64 = 0
    public var theirRecords: UInt64 = 0
    /// The peer's level 0 as checked (the shell hashes it into the peer's root).
    public var theirRanges: [DigestNode] = []
    public var differingRanges = 0
    public var differingBuckets = 0
    /// Records the two hold differently, or one of them lacks.
    public var differingRecords = 0
    /// Records received, and how many of them changed something here.
    public var pulled = 0
    public var repaired = 0
    /// Records (or parts) the merge refused, as a pull would.
    public var refused = 0
    public var damagedReplaced = 0
    public var calls = 0
    public var bytes = 0

    public init() {}
}

/// One anti-entropy round with one peer (proto/README.md §13), as a pure machine: the
/// shell makes the calls, reads this node's digest, merges, and feeds each result in;
/// the machine checks every value of every answer, decides the next call, and keeps
/// the round within its budget. Only records asked for count as progress, so a peer
/// cannot keep a round going by answering with others: the first such answer ends the
/// round, refused, and nothing of it is merged.
public struct RepairSession: Sendable {
    public struct Configuration: Sendable {
        public var budget: RepairBudget
        /// A record's bucket (`DigestHashing.position`): a record a level-2 answer lists
        /// must hash to the bucket asked for.
        public var position: @Sendable (RecordKindID, RecordID) -> UInt16
        /// The kinds this node merges; records of others (a later version's) are left.
        public var kinds: Set<RecordKindID>

        public init(budget: RepairBudget = RepairBudget(), kinds: Set<RecordKindID>,
                    position: @escaping @Sendable (RecordKindID, RecordID) -> UInt16) {
            self.budget = budget
            self.kinds = kinds
            self.position = position
        }
    }

    public enum Action: Sendable {
        /// Ask the peer for `level` (an answer of at most `maxBytes`, within `timeout`),
        /// read this node's digest at the same level, and feed both to `compared`.
        case compare(DigestLevel, maxBytes: Int, timeout: Duration)
        /// Ask the peer for these records; feed what the answer decodes to to `fetched`.
        case fetch([RecordRef], maxBytes: Int, timeout: Duration)
        /// Merge these as a repair (the checkpoint does not move); feed `merged`.
        case merge([RemoteRecord])
        /// The round is over.
        case finish(RepairOutcome)
    }

    enum State: Sendable {
        case idle
        /// A digest call in flight.
        case comparing(Descent)
        /// A records call in flight.
        case fetching(Fetch)
        /// A merge in flight.
        case merging(Fetch)
        case finished
    }

    struct Descent: Sendable {
        var asked: DigestLevel
        var maxBytes: Int
        /// Calls still to make, in order (level 1 before level 2).
        var queue: [DigestLevel] = []
        var next = 0
        /// Buckets whose level 2 is queued (at most `budget.buckets`).
        var bucketsQueued = 0
        var toPull: [RecordRef] = []
    }

    struct Fetch: Sendable {
        /// Refs not yet asked for.
        var rest: ArraySlice<RecordRef>
        /// The call's refs not yet received, in the order asked.
        var asking: [RecordRef] = []
        var maxBytes = 0
    }

    public let configuration: Configuration
    private(set) var state: State = .idle
    private var outcome = RepairOutcome()
    private var startedAt = MonotonicInstant(nanoseconds: 0)

    public init(configuration: Configuration) {
        self.configuration = configuration
    }

    public var isFinished: Bool {
        if case .finished = state { return true }
        return false
    }

    /// When the round's time runs out.
    public var deadline: MonotonicInstant { startedAt + configuration.budget.duration }

    private var budget: RepairBudget { configuration.budget }

    // MARK: - Events

    public mutating func start(now: MonotonicInstant) -> [Action] {
        guard case .idle = state else { return unexpected("start") }
        startedAt = now
        return ask(.ranges, Descent(asked: .ranges, maxBytes: 0), now: now)
    }

    /// The peer's answer at `level` (`bytes` long), and this node's digest there.
    public mutating func compared(_ level: DigestLevel, theirs: DigestAnswer, ours: OurDigest, bytes: Int,
                                  now: MonotonicInstant) -> [Action] {
        guard case .comparing(var d) = state, d.asked == level else { return unexpected("compared(\(level))") }
        if let over = spend(bytes: bytes, now: now) { return over }
        do throws(RepairRefusal) {
            switch (level, ours) {
            case let (.ranges, .summary(ourRecords, mine, ourReady)):
                let theirRanges = try RepairSession.ranges(theirs, total: theirs.records, level: level)
                outcome.ourRecords = ourRecords
                outcome.theirRecords = theirs.records
                outcome.theirRanges = theirRanges
                outcome.ready = theirs.ready && ourReady
                outcome.equal = mine == theirRanges
                guard outcome.ready else { return finish(.notReady) }
                guard !outcome.equal else { return finish(.complete) }
                let differing = DigestComparison.differing(mine, theirRanges)
                outcome.differingRanges = differing.count
                d.queue += differing.map { .buckets(range: UInt8(truncatingIfNeeded: $0)) }
            case let (.buckets, .buckets(mine)):
                let buckets = DigestComparison.differing(mine, try RepairSession.ranges(theirs, total: nil, level: level))
                outcome.differingBuckets += buckets.count
                let room = max(0, budget.buckets - d.bucketsQueued)
                d.queue += buckets.prefix(room).map { .records(bucket: $0) }
                d.bucketsQueued += min(room, buckets.count)
            case let (.records(bucket), .records(mine)):
                let theirEntries = try entries(theirs, bucket: bucket)
                let pull = DigestComparison.toPull(mine: mine, theirs: theirEntries)
                let pulling = Set(pull.map { RecordRef(kind: $0.kind, id: $0.id) })
                outcome.differingRecords += pull.count + DigestComparison.toOffer(mine: mine, theirs: theirEntries)
                    .filter { !pulling.contains(RecordRef(kind: $0.kind, id: $0.id)) }.count
                d.toPull += pull.lazy.map { RecordRef(kind: $0.kind, id: $0.id) }.filter { configuration.kinds.contains($0.kind) }
            default:
                return unexpected("compared(\(level)) with this node's digest of another level")
            }
        } catch {
            return finish(.refused(error))
        }
        return descend(d, now: now)
    }

    /// A records answer, decoded record by record (a record that failed its checks is a
    /// refused entry, still named by kind and id when those could be read).
    public mutating func fetched(_ records: [RemoteRecord], bytes: Int, now: MonotonicInstant) -> [Action] {
        guard case .fetching(var f) = state else { return unexpected("fetched") }
        if let over = spend(bytes: bytes, now: now) { return over }
        var waiting = Set(f.asking)
        for r in records {
            let ref: RecordRef?
            switch r.content {
            case .delta(let d): ref = RecordRef(kind: d.kind, id: d.id)
            case .refused(let kind?, let id?, _): ref = RecordRef(kind: kind, id: id)
            case .refused: ref = nil
            }
            guard let ref else {
                return finish(.refused(RepairRefusal(.unaskedRecord, "a record whose kind and id cannot be read")))
            }
            guard waiting.remove(ref) != nil else {
                let why = f.asking.contains(ref) ? "sent twice" : "not asked for"
                return finish(.refused(RepairRefusal(.unaskedRecord, "record \(ref.kind)/\(ref.id) was \(why)")))
            }
        }
        // None of the rest: the peer no longer holds them (purged, out of scope since).
        guard !records.isEmpty else { return fetchNext(f, now: now) }
        f.asking.removeAll { !waiting.contains($0) }
        outcome.pulled += records.count
        state = .merging(f)
        return [.merge(records)]
    }

    /// A digest or records answer that does not decode (`bytes` long).
    public mutating func answerUndecodable(_ why: String, bytes: Int, now: MonotonicInstant) -> [Action] {
        switch state {
        case .comparing, .fetching:
            if let over = spend(bytes: bytes, now: now) { return over }
            return finish(.refused(RepairRefusal(.malformedAnswer, why)))
        default:
            return unexpected("answerUndecodable")
        }
    }

    /// The answer grew past the call's `maxBytes`: past the round's byte budget, or past
    /// what the protocol allows one answer.
    public mutating func answerTooLarge(now: MonotonicInstant) -> [Action] {
        let limit: Int
        switch state {
        case .comparing(let d): limit = d.maxBytes
        case .fetching(let f): limit = f.maxBytes
        default: return unexpected("answerTooLarge")
        }
        if outcome.bytes + limit >= budget.bytes {
            return finish(.refused(RepairRefusal(.overBudget, "answers of more than \(budget.bytes) bytes in one round")))
        }
        return finish(.refused(RepairRefusal(.malformedAnswer, "an answer of more than \(limit) bytes")))
    }

    /// The merge committed: what it changed, refused and mended.
    public mutating func merged(changed: Int, refused: Int, damagedReplaced: Int, now: MonotonicInstant) -> [Action] {
        guard case .merging(let f) = state else { return unexpected("merged") }
        outcome.repaired += changed
        outcome.refused += refused
        outcome.damagedReplaced += damagedReplaced
        if let over = spend(bytes: 0, now: now) { return over }
        return f.asking.isEmpty ? fetchNext(f, now: now) : fetch(f, now: now)
    }

    public mutating func mergeFailed(_ why: String) -> [Action] {
        guard case .merging = state else { return unexpected("mergeFailed") }
        return finish(.failed("merge failed: \(why)"))
    }

    /// The call found no answer: the connection, a timeout, an error status.
    public mutating func callFailed(_ why: String) -> [Action] {
        switch state {
        case .comparing, .fetching: return finish(.failed(why))
        default: return unexpected("callFailed")
        }
    }

    // MARK: - Steps

    private mutating func descend(_ d: Descent, now: MonotonicInstant) -> [Action] {
        var d = d
        while d.next < d.queue.count {
            let level = d.queue[d.next]
            d.next += 1
            // Once enough buckets are queued, the ranges not yet descended wait for a later round.
            if case .buckets = level, d.bucketsQueued >= budget.buckets { continue }
            return ask(level, d, now: now)
        }
        return fetchNext(Fetch(rest: d.toPull[...]), now: now)
    }

    private mutating func ask(_ level: DigestLevel, _ d: Descent, now: MonotonicInstant) -> [Action] {
        if let over = call() { return over }
        var d = d
        d.asked = level
        d.maxBytes = min(budget.digestAnswerBytes, budget.bytes - outcome.bytes)
        state = .comparing(d)
        return [.compare(level, maxBytes: d.maxBytes, timeout: timeout(now))]
    }

    private mutating func fetchNext(_ f: Fetch, now: MonotonicInstant) -> [Action] {
        var f = f
        guard !f.rest.isEmpty else { return finish(.complete) }
        f.asking = Array(f.rest.prefix(budget.recordsPerCall))
        f.rest = f.rest.dropFirst(f.asking.count)
        return fetch(f, now: now)
    }

    private mutating func fetch(_ f: Fetch, now: MonotonicInstant) -> [Action] {
        if let over = call() { return over }
        var f = f
        f.maxBytes = min(budget.recordsAnswerBytes, budget.bytes - outcome.bytes)
        state = .fetching(f)
        return [.fetch(f.asking, maxBytes: f.maxBytes, timeout: timeout(now))]
    }

    /// Counts a call about to be made; the round ends refused if it has made its last.
    private mutating func call() -> [Action]? {
        guard outcome.calls < budget.calls else {
            return finish(.refused(RepairRefusal(.overBudget, "more than \(budget.calls) calls in one round")))
        }
        outcome.calls += 1
        return nil
    }

    /// Counts an answer's bytes and the time spent; the round ends refused past either.
    private mutating func spend(bytes: Int, now: MonotonicInstant) -> [Action]? {
        outcome.bytes = outcome.bytes.addingReportingOverflow(max(0, bytes)).partialValue
        if outcome.bytes > budget.bytes {
            return finish(.refused(RepairRefusal(.overBudget, "answers of more than \(budget.bytes) bytes in one round")))
        }
        if now - startedAt > budget.duration {
            return finish(.refused(RepairRefusal(.overBudget, "longer than \(budget.duration) in one round")))
        }
        return nil
    }

    private func timeout(_ now: MonotonicInstant) -> Duration {
        min(budget.callTimeout, max(.zero, deadline - now))
    }

    private mutating func finish(_ end: RepairOutcome.End) -> [Action] {
        outcome.end = end
        state = .finished
        return [.finish(outcome)]
    }

    private mutating func unexpected(_ event: String) -> [Action] {
        if case .finished = state { return [] }
        return finish(.failed("unexpected event: \(event)"))
    }

    // MARK: - Checking answers

    /// A level-0 or level-1 answer's ranges, checked: at most 256, each within its level
    /// (a range 0–255; a bucket of the range asked), in increasing order, a 32-byte sum
    /// and at least one record; at level 0 their counts add up to `total`; no records.
    static func ranges(_ answer: DigestAnswer, total: UInt64?, level: DigestLevel) throws(RepairRefusal) -> [DigestNode] {
        func invalid(_ why: String) -> RepairRefusal { RepairRefusal(.invalidDigest, "\(level): \(why)") }
        guard answer.entries.isEmpty else { throw invalid("lists \(answer.entries.count) records; it lists ranges only") }
        guard answer.ranges.count <= 256 else { throw invalid("\(answer.ranges.count) ranges; at most 256") }
        let allowed: ClosedRange<UInt32>
        switch level {
        case .ranges: allowed = 0...0xff
        case .buckets(let r): allowed = UInt32(r) << 8 ... UInt32(r) << 8 | 0xff
        case .records: throw invalid("has no ranges")
        }
        var out: [DigestNode] = []
        out.reserveCapacity(answer.ranges.count)
        var sum: UInt64 = 0
        var previous: UInt32?
        for (i, r) in answer.ranges.enumerated() {
            guard allowed.contains(r.position) else {
                throw invalid("ranges[\(i)].position \(r.position) is not in \(allowed.lowerBound)–\(allowed.upperBound)")
            }
            if let previous, r.position <= previous {
                throw invalid("ranges[\(i)].position \(r.position) does not follow \(previous): positions increase")
            }
            previous = r.position
            guard let s = DigestSum(bytes: r.sum) else { throw invalid("ranges[\(i)].sum has \(r.sum.count) bytes, not 32") }
            guard r.records > 0 else { throw invalid("ranges[\(i)] holds no records; only non-empty ranges are listed") }
            let (t, overflow) = sum.addingReportingOverflow(r.records)
            guard !overflow else { throw invalid("the ranges' records add up past 2^64") }
            sum = t
            out.append(DigestNode(position: UInt16(truncatingIfNeeded: r.position), sum: s, records: r.records))
        }
        if let total, sum != total { throw invalid("the ranges hold \(sum) records, the answer says \(total)") }
        return out
    }

    /// A level-2 answer's records, checked: each a kind 1–255, a 16-byte id and a 32-byte
    /// leaf, hashing to the bucket asked, in increasing order of kind and id (so once
    /// each); at most `entriesPerBucket`; no ranges.
    func entries(_ answer: DigestAnswer, bucket: UInt16) throws(RepairRefusal) -> [DigestEntry] {
        let level = DigestLevel.records(bucket: bucket)
        func invalid(_ why: String) -> RepairRefusal { RepairRefusal(.invalidDigest, "\(level): \(why)") }
        guard answer.ranges.isEmpty else { throw invalid("lists \(answer.ranges.count) ranges; it lists records only") }
        guard answer.entries.count <= budget.entriesPerBucket else {
            throw invalid("\(answer.entries.count) records; at most \(budget.entriesPerBucket) in one bucket")
        }
        var out: [DigestEntry] = []
        out.reserveCapacity(answer.entries.count)
        var previous: RecordRef?
        for (i, e) in answer.entries.enumerated() {
            guard (1...255).contains(e.kind) else { throw invalid("entries[\(i)].kind \(e.kind) is not 1–255") }
            guard let id = RecordID(bytes: e.id) else { throw invalid("entries[\(i)].id has \(e.id.count) bytes, not 16") }
            guard let sum = DigestSum(bytes: e.sum) else { throw invalid("entries[\(i)].sum has \(e.sum.count) bytes, not 32") }
            let ref = RecordRef(kind: RecordKindID(rawValue: UInt8(truncatingIfNeeded: e.kind)), id: id)
            if let previous, !(previous < ref) {
                throw invalid("entries[\(i)] \(ref.kind)/\(ref.id) does not follow \(previous.kind)/\(previous.id): records increase by kind and id")
            }
            previous = ref
            let home = configuration.position(ref.kind, ref.id)
            guard home == bucket else { throw invalid("entries[\(i)] \(ref.kind)/\(ref.id) belongs in bucket \(home)") }
            out.append(DigestEntry(kind: ref.kind, id: id, value: sum))
        }
        return out
    }

    var stateName: String {
        switch state {
        case .idle: "idle"
        case .comparing: "comparing"
        case .fetching: "fetching"
        case .merging: "merging"
        case .finished: "finished"
        }
    }
}
