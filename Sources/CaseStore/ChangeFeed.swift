import CaseModel
import LMDB
import Replication

/// Where a puller stands in a peer's feed, tied to the identity of that peer's store.
public struct Checkpoint: Sendable, Equatable {
    public let sourceStoreID: [UInt8]
    public let sequence: UInt64
    /// The capabilities of the streams that reached `sequence` (proto/README §8.1).
    public let capabilities: [String]
    public init(sourceStoreID: [UInt8], sequence: UInt64, capabilities: [String] = []) {
        self.sourceStoreID = sourceStoreID
        self.sequence = sequence
        self.capabilities = capabilities
    }

    /// Stored: the source store id (16), the sequence (u64 BE), then each capability as
    /// a length byte and its name (format 3; a format-2 value ends after the sequence).
    func encode() -> [UInt8] {
        var out = sourceStoreID + sequence.bigEndianBytes
        for c in capabilities.prefix(255) {
            let u = Array(c.utf8.prefix(255))
            out.append(UInt8(u.count))
            out += u
        }
        return out
    }

    /// A value that does not parse past the sequence reads as reached without
    /// capabilities: at worst a source resends, it never skips a part.
    static func decode(_ b: UnsafeRawBufferPointer) -> Checkpoint? {
        guard b.count >= 24, let seq = UInt64(bigEndianBytes: UnsafeRawBufferPointer(rebasing: b[16..<24])) else { return nil }
        var names: [String] = []
        var i = 24
        while i < b.count {
            let n = Int(b[i])
            guard i + 1 + n <= b.count else { names = []; break }
            names.append(String(decoding: UnsafeRawBufferPointer(rebasing: b[(i + 1)..<(i + 1 + n)]), as: UTF8.self))
            i += 1 + n
        }
        return Checkpoint(sourceStoreID: Array(b[0..<16]), sequence: seq, capabilities: names)
    }
}

/// A page of the change feed as a sender ships it: each entry's RecordDelta, encoded.
public struct FeedPage: Sendable {
    /// A feed entry (or one child it names) that could not be encoded: a record or a
    /// child gone that no purge accounts for, bytes that do not decode, a kind this build
    /// does not know. It is left out and the page goes on, so that one damaged entry never
    /// stops a link; the sender reports it for the link, and the peer's anti-entropy,
    /// which reads records whole, brings what the entry would have carried.
    public struct Skip: Sendable, Equatable {
        public let sequence: UInt64
        public let kind: RecordKindID
        public let id: RecordID
        public let reason: String
    }
    public struct Entry: Sendable {
        public let sequence: UInt64
        /// A serialised RecordDelta: the registers that sit at this sequence (copied
        /// from the store without decoding) and the children added at it.
        public let delta: [UInt8]
    }
    public let entries: [Entry]
    /// The store's last sequence when the page was read.
    public let lastSequence: UInt64
    /// How far the page's reading went: once its entries are sent, the peer has been
    /// sent everything up to here (past the last entry when the rest of the feed is
    /// gaps, or entries out of its scope).
    public let readThrough: UInt64
    /// What the page left out (`Skip`).
    public var skipped: [Skip] = []
}

extension CaseStore {
    /// The store id as bytes, as checkpoints carry it.
    public var storeIDBytes: [UInt8] { CaseStore.decodeCursor(storeID) ?? [] }

    /// Feed entries after `since`, at most `limit` of them and about `maxBytes` of
    /// deltas (always at least one entry), with the last sequence at the time of reading.
    ///
    /// `partner`: the organisation of a peer outside this node's own, which receives only
    /// what is in its scope (`scopedFeedPage`); nil for a peer of this organisation.
    ///
    /// `link`: the capabilities the link speaks (proto/README §8.1); parts of others are
    /// left out (an entry with nothing else is not sent, its position still passes). nil:
    /// every part.
    public func feedPage(after since: UInt64, limit: Int, maxBytes: Int = 1 << 20, partner: String? = nil,
                         link: Capabilities? = nil) throws -> FeedPage {
        if let partner, partner != organisation {
            return try scopedFeedPage(after: since, limit: limit, maxBytes: maxBytes, partner: partner, link: link)
        }
        let limit = min(max(limit, 1), 10_000)
        return try readTxn { txn in
            let last = try txn.u64(schema.meta, Schema.MetaKey.lastSequence) ?? 0
            var readThrough = since
            var skipped: [FeedPage.Skip] = []
            let entries = try txn.withCursor(schema.feed) { c in
                var out: [FeedPage.Entry] = []
                var bytes = 0
                var ok = since == .max ? false : try c.seek(atLeast: (since + 1).bigEndianBytes)
                while out.count < limit && (out.isEmpty || bytes < maxBytes) {
                    guard ok else { readThrough = max(readThrough, last); break }
                    // A key that is no sequence (a damaged table) is a corrupt store, not a trap.
                    guard c.key.count == 8, let seq = UInt64(bigEndianBytes: c.key) else {
                        throw CorruptRecord(what: "change feed: a key of \(c.key.count) bytes")
                    }
                    if let delta = try encodeEntry(c.value, at: seq, txn, skipped: &skipped,
                                                   filter: { narrowed(.everything, $0.kind, link: link) }) {
                        bytes += delta.count
                        out.append(FeedPage.Entry(sequence: seq, delta: delta))
                    }
                    readThrough = seq
                    ok = try c.next()
                }
                return out
            }
            return FeedPage(entries: entries, lastSequence: last, readThrough: readThrough, skipped: skipped)
        }
    }

    /// One stored feed entry at `sequence` as a RecordDelta (`encodeDelta`), what
    /// `filter` decides for its record letting through; nil when nothing is sent. An entry
    /// that cannot be read or encoded is left out and noted in `skipped` (`FeedPage.Skip`);
    /// only a failure to read the store itself ends the page.
    func encodeEntry(_ stored: UnsafeRawBufferPointer, at sequence: UInt64, _ txn: ReadTransaction,
                     skipped: inout [FeedPage.Skip], filter: (FeedEntry) throws -> DeltaFilter?) throws -> [UInt8]? {
        let entry: FeedEntry
        do {
            entry = try FeedEntry.decode(stored)
        } catch {
            skipped.append(FeedPage.Skip(sequence: sequence, kind: RecordKindID(rawValue: 0), id: RecordID(high: 0, low: 0),
                                         reason: error.what))
            return nil
        }
        do {
            guard let filter = try filter(entry) else { return nil }
            return try encodeDelta(entry, at: sequence, txn, filter: filter, skipped: &skipped)
        } catch let e as CorruptRecord {
            skipped.append(FeedPage.Skip(sequence: sequence, kind: entry.kind, id: entry.id, reason: e.what))
        } catch StoreError.corrupt(let what) {
            skipped.append(FeedPage.Skip(sequence: sequence, kind: entry.kind, id: entry.id, reason: what))
        }
        return nil
    }

    /// The RecordDelta of one feed entry, written from the stored bytes, with the parts
    /// `filter` lets through; nil when nothing is left to send (a record purged here).
    /// A part the entry names that is gone is left out: silently when a purge of the
    /// ticket at or after `sequence` took it (`Purge.swift`: the feed keeps naming the
    /// children of a purged ticket, which may come back), noted in `skipped` otherwise.
    /// `sequence` nil: not a feed entry (a repair's whole record), nothing is gone.
    func encodeDelta(_ entry: FeedEntry, at sequence: UInt64?, _ txn: ReadTransaction, filter: DeltaFilter,
                     skipped: inout [FeedPage.Skip]) throws -> [UInt8]? {
        guard let schema = kinds[entry.kind] else { throw StoreError.corrupt("feed names unknown kind \(entry.kind)") }
        var w = ProtoWriter(capacity: 512)
        w.uint64(1, UInt64(entry.kind.rawValue))
        w.presentBytes(2, entry.id.bytes)
        // The entry's registers, and always the kind's authority registers (a ticket's
        // header and owner, small): who may write every other part is judged from them,
        // and a puller reading entries in order must not meet a part before the register
        // that entitles its author (an owner changed after creation sits in a later entry).
        var registers = RegisterSet(bits: schema.indexes(numbers: entry.registerNumbers).bits & filter.registers.bits)
        let key = Keys.record(entry.kind.rawValue, entry.id)
        // An entry whose own parts are all filtered out is not sent for the authority registers alone.
        let ownRegisters = !registers.isEmpty
        let found = try txn.withValue(self.schema.records, key: key) { b throws -> Bool in
            for i in schema.authorityRegisters { registers.insert(i) }
            try StoredRecord.copyRegisters(b, schema, registers, field: 3, into: &w)
            return true
        }
        // A part gone because a purge took it (asked only when something is missing).
        func purgedSince() throws -> Bool { try partGoneByPurge(entry.kind, entry.id, since: sequence, txn) }
        if found == nil && !registers.isEmpty {
            if try purgedSince() { return nil }
            throw StoreError.corrupt("feed names missing record \(entry.id)")
        }
        var parts = found != nil && ownRegisters ? 1 : 0
        for k in entry.children {
            let key = Keys.child(entry.kind.rawValue, entry.id, k.collection, k.id)
            let found = try txn.withValue(self.schema.children, key: key) { b throws -> Bool in
                if let admits = filter.child {
                    guard admits(try StoredChild.decode(b, collection: k.collection, id: k.id)) else { return true }
                }
                w.message(4) { w in
                    w.uint64(1, UInt64(k.collection))
                    w.presentBytes(2, k.id.bytes)
                    w.bytes.append(contentsOf: b)
                }
                parts += 1
                return true
            }
            if found == nil, try !purgedSince(), let sequence {
                skipped.append(FeedPage.Skip(sequence: sequence, kind: entry.kind, id: entry.id,
                                             reason: "feed names missing child \(k.id) of \(entry.id)"))
            }
        }
        return parts == 0 && !(filter.child == nil && found != nil) ? nil : w.bytes
    }

    /// `filter` narrowed to the parts a link speaking `link` may carry.
    func narrowed(_ filter: DeltaFilter?, _ kind: RecordKindID, link: Capabilities?) -> DeltaFilter? {
        guard let filter, let link, let schema = kinds[kind], let parts = schema.parts(for: link) else { return filter }
        guard parts.kind else { return nil }
        let left = parts.collectionsLeftOut
        let child = filter.child
        guard !left.isEmpty else { return DeltaFilter(registers: RegisterSet(bits: filter.registers.bits & parts.registers.bits), child: child) }
        let admits: @Sendable (Child) -> Bool = { c in !left.contains(c.collection) && (child?(c) ?? true) }
        return DeltaFilter(registers: RegisterSet(bits: filter.registers.bits & parts.registers.bits), child: admits)
    }

    /// What this store has applied of `peer`'s feed.
    public func checkpoint(for peer: NodeID) throws -> Checkpoint? {
        try readTxn { txn in
            try txn.withValue(schema.checkpoints, key: Keys.peer(peer)) { Checkpoint.decode($0) } ?? nil
        }
    }

    /// Unresolved conflicts of every kind, oldest record first.
    public func conflicts(limit: Int = 500) throws -> [Conflict] {
        try readTxn { txn in
            try txn.withCursor(schema.conflicted) { c in
                var out: [Conflict] = []
                var ok = try c.first()
                while ok && out.count < limit {
                    // A key that names no record (a damaged index) is a corrupt store, not a trap.
                    guard c.key.count == 17 else { throw CorruptRecord(what: "conflict index: a key of \(c.key.count) bytes") }
                    let kind = RecordKindID(rawValue: c.key[0])
                    let id = RecordID(raw: UnsafeRawBufferPointer(rebasing: c.key[1...]))
                    if let schema = kinds[kind], let r = try loadRecord(schema, id, txn) { out += schema.conflicts(of: r.state) }
                    ok = try c.next()
                }
                return Array(out.prefix(limit))
            }
        }
    }
}

/// Meta keys of the capabilities (proto/README §8.1).
enum CapabilityMeta {
    /// u64 BE: the first feed sequence at which a part of capability `name` was written.
    static func since(_ name: String) -> [UInt8] { Array("capability_since:\(name)".utf8) }
}

extension CaseStore {
    /// Per capability of this store's kinds: the first feed sequence holding a part of it
    /// (absent: no part of it was ever written here).
    /// Every capability of this store's kinds at sequence 1: the safe answer when the
    /// store cannot be read.
    public var capabilitiesFromTheStart: [String: UInt64] {
        Dictionary(uniqueKeysWithValues: Set(kinds.schemas.flatMap(\.capabilities)).map { ($0, 1) })
    }

    public func capabilitySince() throws -> [String: UInt64] {
        let names = Set(kinds.schemas.flatMap(\.capabilities))
        guard !names.isEmpty else { return [:] }
        return try readTxn { txn in
            var out: [String: UInt64] = [:]
            for n in names {
                // A value of another length (a damaged meta table) reads as the feed's start:
                // a link then resends, never skips a held-back part.
                guard let s = try txn.withValue(schema.meta, key: CapabilityMeta.since(n), { UInt64(bigEndianBytes: $0) ?? 1 }) else { continue }
                out[n] = s
            }
            return out
        }
    }
}
