import Access
import CaseModel
import Crypto
import Foundation
import LMDB
import Replication

// The personal-data access log (152-FZ): every disclosure, committed before the data is
// sent, in `access_log` by sequence. Each value is
// `AccessLogValue { bytes entry = 1; bytes prev = 2; bytes hash = 3 }` with
// hash = SHA-256(prev ‖ sequence (u64 BE) ‖ entry), prev of #1 = 32 zero bytes. The hash
// covers the entry's stored bytes, not a re-encoding, so fields added later stay covered
// by builds that do not know them. The head (last sequence + hash) is kept in `meta` in
// the same transaction, so that removing entries from the end shows too. Node-local: no
// feed entry, never replicated.

/// `AccessEntry { int64 at = 1; string subject = 2; string role = 3; string organisation = 4;
/// string action = 5; optional string ticket = 6; repeated string fields = 7; string reason = 8;
/// string remote = 9; string route = 10 }`
extension AccessEntry {
    func encoded() -> [UInt8] {
        var w = ProtoWriter(capacity: 160)
        w.int64(1, at)
        w.string(2, subject)
        w.string(3, role)
        w.string(4, organisation)
        w.string(5, action)
        w.optionalString(6, ticket)
        for f in fields { w.optionalString(7, f) }   // repeated: an empty element is still an element
        w.string(8, reason)
        w.string(9, remote)
        w.string(10, route)
        return w.bytes
    }

    static func decode(_ b: UnsafeRawBufferPointer) throws(ProtoError) -> AccessEntry {
        var r = ProtoReader(b)
        var e = AccessEntry(at: 0, subject: "", role: "", organisation: "", action: "")
        while let (n, t) = try r.field() {
            switch (n, t) {
            case (1, 0): e.at = try r.int64()
            case (2, 2): e.subject = try r.string()
            case (3, 2): e.role = try r.string()
            case (4, 2): e.organisation = try r.string()
            case (5, 2): e.action = try r.string()
            case (6, 2): e.ticket = try r.string()
            case (7, 2): e.fields.append(try r.string())
            case (8, 2): e.reason = try r.string()
            case (9, 2): e.remote = try r.string()
            case (10, 2): e.route = try r.string()
            default: try r.skip(t)
            }
        }
        return e
    }
}

/// One stored value of `access_log`.
struct StoredAccess: Equatable {
    var entry: [UInt8]
    var prev: [UInt8]
    var hash: [UInt8]

    func encode() -> [UInt8] {
        var w = ProtoWriter(capacity: entry.count + 72)
        w.presentBytes(1, entry)
        w.presentBytes(2, prev)
        w.presentBytes(3, hash)
        return w.bytes
    }

    static func decode(_ b: UnsafeRawBufferPointer) throws(ProtoError) -> StoredAccess {
        var r = ProtoReader(b)
        var entry: [UInt8]?, prev: [UInt8]?, hash: [UInt8]?
        while let (n, t) = try r.field() {
            switch (n, t) {
            case (1, 2): entry = try r.bytes()
            case (2, 2): prev = try r.bytes()
            case (3, 2): hash = try r.bytes()
            default: try r.skip(t)
            }
        }
        guard let entry, let prev, let hash, prev.count == 32, hash.count == 32 else { throw .malformed }
        return StoredAccess(entry: entry, prev: prev, hash: hash)
    }
}

/// The last entry of the chain: its sequence and hash (sequence 0 and zeros when empty).
struct AccessHead: Equatable {
    var sequence: UInt64
    var hash: [UInt8]

    static let genesis = AccessHead(sequence: 0, hash: [UInt8](repeating: 0, count: 32))

    init(sequence: UInt64, hash: [UInt8]) {
        self.sequence = sequence
        self.hash = hash
    }

    /// The `meta` value: sequence (u64 BE) + hash; nil when it is not 40 bytes.
    init?(bytes b: UnsafeRawBufferPointer) {
        guard b.count == 40, let s = UInt64(bigEndianBytes: b) else { return nil }
        self.init(sequence: s, hash: Array(b[8...]))
    }

    var bytes: [UInt8] { sequence.bigEndianBytes + hash }
}

enum AccessChain {
    static func hash(prev: [UInt8], sequence: UInt64, entry: [UInt8]) -> [UInt8] {
        var h = SHA256()
        h.update(data: prev)
        h.update(data: sequence.bigEndianBytes)
        h.update(data: entry)
        return Array(h.finalize())
    }

    static func hex(_ b: [UInt8]) -> String { hexString(b) }

    /// Walks the whole chain in one snapshot; the first problem found, else intact.
    /// `log` is nil when the store has no `access_log` database yet.
    static func verify(_ txn: some TransactionProtocol, log: Database?, meta: Database) throws -> AccessLogVerification {
        var prev = AccessHead.genesis.hash
        var expected: UInt64 = 1
        if let log {
            let problem = try txn.withCursor(log) { c -> AccessLogProblem? in
                var ok = try c.first()
                while ok {
                    guard c.key.count == 8, let seq = UInt64(bigEndianBytes: c.key), seq >= expected else {
                        return AccessLogProblem(.undecodable, expected,
                                                "a key after entry #\(expected - 1) is not an entry sequence (\(c.key.count) bytes)")
                    }
                    if seq != expected {
                        let from = expected == 1 ? "the log starts at #\(seq)" : "the log goes from #\(expected - 1) to #\(seq)"
                        return AccessLogProblem(.missing, expected, "entry #\(expected) is missing: \(from)")
                    }
                    let stored: StoredAccess
                    do { stored = try StoredAccess.decode(c.value) } catch {
                        return AccessLogProblem(.undecodable, seq, "entry #\(seq) cannot be read: \(error)")
                    }
                    guard hash(prev: stored.prev, sequence: seq, entry: stored.entry) == stored.hash else {
                        return AccessLogProblem(.altered, seq, "entry #\(seq) was altered: its hash does not match its contents")
                    }
                    guard stored.prev == prev else {
                        let what = seq == 1 ? "the start of the log" : "entry #\(seq - 1)"
                        return AccessLogProblem(.chainBroken, seq,
                                                "the chain is broken at entry #\(seq): it does not follow the hash of \(what), "
                                                + "which was rewritten or replaced")
                    }
                    do { _ = try stored.entry.withUnsafeBytes { b throws(ProtoError) in try AccessEntry.decode(b) } } catch {
                        return AccessLogProblem(.undecodable, seq, "entry #\(seq) cannot be decoded: \(error)")
                    }
                    prev = stored.hash
                    expected += 1
                    ok = try c.next()
                }
                return nil
            }
            if let problem { return .tampered(problem) }
        }
        let last = expected - 1
        guard let recorded = try txn.withValue(meta, key: Schema.MetaKey.accessHead, { AccessHead(bytes: $0) }) else {
            if last == 0 { return .intact(count: 0, head: 0, headHash: hex(prev)) }
            return .tampered(AccessLogProblem(.headMismatch, last,
                                              "no head is recorded, yet the log holds entries #1–#\(last): the head was removed"))
        }
        guard let head = recorded else {
            return .tampered(AccessLogProblem(.headMismatch, last, "the recorded head cannot be read: it was altered"))
        }
        if head.sequence > last {
            return .tampered(AccessLogProblem(.headMismatch, last + 1,
                                              "the head records entry #\(head.sequence) but the log ends at #\(last): "
                                              + "entries were removed from the end, or the head was altered"))
        }
        if head.sequence < last {
            return .tampered(AccessLogProblem(.headMismatch, head.sequence + 1,
                                              "the log goes on after the recorded head #\(head.sequence) to #\(last): "
                                              + "entries were added outside the store, or the head was altered"))
        }
        guard head.hash == prev else {
            return .tampered(AccessLogProblem(.headMismatch, last,
                                              "the head's hash of entry #\(last) is not the entry's: "
                                              + "the last entry was rewritten, or the head was altered"))
        }
        return .intact(count: last, head: last, headHash: hex(prev))
    }
}

/// What a walk of the access log found.
public enum AccessLogVerification: Sendable, Hashable {
    /// Every entry from #1 to `head` is there, unaltered and chained, and the head agrees.
    case intact(count: UInt64, head: UInt64, headHash: String)
    /// The first problem in sequence order.
    case tampered(AccessLogProblem)

    public var isIntact: Bool {
        if case .intact = self { return true }
        return false
    }
}

public struct AccessLogProblem: Sendable, Hashable, CustomStringConvertible {
    public enum Kind: String, Sendable, Hashable {
        /// The entry's hash does not match its contents.
        case altered
        /// A sequence gap: the entry is gone.
        case missing
        /// The entry's previous hash is not its predecessor's: the predecessor was rewritten with a recomputed hash.
        case chainBroken = "chain_broken"
        /// The head in `meta` disagrees with the last entry: entries removed at the end, or the head altered.
        case headMismatch = "head_mismatch"
        case undecodable
    }

    public let kind: Kind
    /// The entry the problem is at (for a missing one, the first missing sequence).
    public let sequence: UInt64
    /// One sentence for a person.
    public let message: String

    public init(_ kind: Kind, _ sequence: UInt64, _ message: String) {
        self.kind = kind
        self.sequence = sequence
        self.message = message
    }

    public var description: String { message }
}

/// Which entries `accessEntries` returns; nil matches anything.
public struct AccessLogFilter: Sendable, Hashable {
    public var subject: String?
    public var ticket: String?
    /// At or after this instant.
    public var since: Millis?
    /// Before this instant.
    public var until: Millis?

    public init(subject: String? = nil, ticket: String? = nil, since: Millis? = nil, until: Millis? = nil) {
        self.subject = subject
        self.ticket = ticket
        self.since = since
        self.until = until
    }

    func matches(_ e: AccessEntry) -> Bool {
        (subject == nil || e.subject == subject) && (ticket == nil || e.ticket == ticket)
            && (since.map { e.at >= $0 } ?? true) && (until.map { e.at < $0 } ?? true)
    }
}

/// An entry of the access log with its place in the chain.
public struct AccessRecord: Sendable, Hashable {
    public let sequence: UInt64
    public let entry: AccessEntry
    /// The entry's chain hash (hex): an export carries it, so a copy can be checked against the log.
    public let hash: String
}

extension CaseStore {
    /// Records disclosures and returns once they are on disk: only then may the data be sent.
    public func recordAccess(_ entries: [AccessEntry], actor: Actor = .system) async throws(StoreError) -> [UInt64] {
        guard case .accessRecorded(let sequences) = try await perform(.recordAccess(entries), actor: actor) else {
            throw .corrupt("recordAccess answered with another outcome")
        }
        return sequences
    }

    /// Appends after the head; called by the commit loop.
    func applyRecordAccess(_ entries: [AccessEntry], _ txn: WriteTransaction) throws -> EditOutcome {
        var head = try refusing { try appendableHead(txn) }
        // The head is stored bytes: a log whose head is at the last sequence a key holds
        // (a damaged or altered one) cannot go on, and is refused rather than overflowed.
        guard UInt64(entries.count) <= UInt64.max - head.sequence else {
            throw Refused(error: .accessLogBroken("the access log's head is entry #\(head.sequence): no sequence is left after it; "
                                                  + "run `ekc audit verify` and examine the log before anything more is disclosed"))
        }
        var sequences: [UInt64] = []
        sequences.reserveCapacity(entries.count)
        for e in entries {
            let seq = head.sequence + 1
            let bytes = e.encoded()
            let hash = AccessChain.hash(prev: head.hash, sequence: seq, entry: bytes)
            try txn.put(schema.accessLog, key: Keys.sequence(seq), value: StoredAccess(entry: bytes, prev: head.hash, hash: hash).encode(),
                        options: .noOverwrite)
            head = AccessHead(sequence: seq, hash: hash)
            sequences.append(seq)
        }
        if !entries.isEmpty { try txn.put(schema.meta, key: Schema.MetaKey.accessHead, value: head.bytes) }
        return .accessRecorded(sequences)
    }

    /// The head to append after, if the log's last entry agrees with it. Appending to a
    /// log changed behind the store's back would bury the change under new entries, so
    /// the store refuses (and with it the disclosure) until a person has looked.
    private func appendableHead(_ txn: WriteTransaction) throws -> AccessHead {
        let recorded = try txn.withValue(schema.meta, key: Schema.MetaKey.accessHead) { AccessHead(bytes: $0) }
        let last = try txn.withCursor(schema.accessLog) { c -> AccessHead?? in
            guard try c.last() else { return .some(nil) }
            guard let seq = c.key.count == 8 ? UInt64(bigEndianBytes: c.key) : nil,
                  let stored = try? StoredAccess.decode(c.value) else { return .none }
            return AccessHead(sequence: seq, hash: stored.hash)
        }
        switch (recorded, last) {
        case (.none, .some(.none)): return .genesis
        case (.some(.some(let h)), .some(.some(let l))) where h == l: return h
        default:
            throw StoreError.accessLogBroken("the access log's last entry does not match its recorded head; "
                                             + "run `ekc audit verify` and examine the log before anything more is disclosed")
        }
    }

    /// Entries after sequence `after`, in order, that match `filter`; at most `limit`. The next
    /// page starts after the last one returned. Scans (no index): meant for audits, not hot paths.
    public func accessEntries(after: UInt64 = 0, limit: Int = 100, filter: AccessLogFilter = .init()) throws(StoreError) -> [AccessRecord] {
        guard limit > 0 else { return [] }
        return try readTxn { txn in
            try txn.withCursor(schema.accessLog) { c in
                var out: [AccessRecord] = []
                var ok = try c.seek(atLeast: Keys.sequence(after &+ 1))
                if after == .max { ok = false }
                while ok && out.count < limit {
                    guard let seq = c.key.count == 8 ? UInt64(bigEndianBytes: c.key) : nil else {
                        throw CorruptRecord(what: "access log key of \(c.key.count) bytes")
                    }
                    let entry: AccessEntry, hash: [UInt8]
                    do {
                        let stored = try StoredAccess.decode(c.value)
                        entry = try stored.entry.withUnsafeBytes { b throws(ProtoError) in try AccessEntry.decode(b) }
                        hash = stored.hash
                    } catch {
                        throw CorruptRecord(what: "access log entry #\(seq): \(error)")
                    }
                    // Stored bytes: an instant outside 2000–2200 is a damaged entry, refused here
                    // (the RFC 3339 writer trapped on Int64.min).
                    guard PlausibleTime.range.contains(entry.at) else {
                        throw CorruptRecord(what: "access log entry #\(seq): at \(entry.at) is not a time between 2000 and 2200")
                    }
                    if filter.matches(entry) { out.append(AccessRecord(sequence: seq, entry: entry, hash: AccessChain.hex(hash))) }
                    ok = try c.next()
                }
                return out
            }
        }
    }

    /// Walks the whole access log of this open store (one read snapshot).
    public func verifyAccessLog() throws(StoreError) -> AccessLogVerification {
        try readTxn { txn in try AccessChain.verify(txn, log: schema.accessLog, meta: schema.meta) }
    }

    /// Walks the access log of the store at `path` without opening it as a case store:
    /// read-only, so it works on a running node's data, a stopped one's, or a copy.
    public static func verifyAccessLog(path: String) throws(StoreError) -> AccessLogVerification {
        do {
            let env = try readOnlyEnvironment(path)
            let meta = try env.openDatabase("meta", options: [])
            var log: Database?
            do throws(LMDBError) {
                log = try env.openDatabase("access_log", options: [])
            } catch {
                // A store no build with the access log has opened yet.
                guard error == .notFound else { throw error }
            }
            return try env.read { txn in try AccessChain.verify(txn, log: log, meta: meta) }
        } catch {
            throw storeError(error)
        }
    }
}
