import CaseModel
import LMDB
import Replication

/// Records written by the write transaction in progress, whose digest leaves are
/// brought up to date before it commits (`updateDigests`). Touched on the commit
/// thread only.
final class DigestWork: @unchecked Sendable {
    /// Every record written, with the children it gained.
    var dirty: [RecordRef: [Child]] = [:]
    /// Records to hash again from scratch (a repair replaced some of their writes).
    var recompute: Set<RecordRef> = []

    func reset() {
        dirty.removeAll(keepingCapacity: true)
        recompute.removeAll()
    }

    func touched(_ ref: RecordRef, children: [Child]) {
        if children.isEmpty { if dirty[ref] == nil { dirty[ref] = [] } } else { dirty[ref, default: []] += children }
    }
}

enum DigestKeys {
    static func scope(_ scope: String) -> [UInt8] { Array(scope.utf8) + [0] }

    static func bucket(_ scope: String, _ position: UInt16) -> [UInt8] {
        self.scope(scope) + [UInt8(position >> 8), UInt8(position & 0xff)]
    }

    static func leaf(_ scope: String, _ position: UInt16, _ ref: RecordRef) -> [UInt8] {
        bucket(scope, position) + [ref.kind.rawValue] + ref.id.bytes
    }

    /// The scope, position and record of a leaf key; nil for a key of another shape.
    static func parseLeaf(_ key: UnsafeRawBufferPointer) -> (scope: String, position: UInt16, ref: RecordRef)? {
        guard let zero = key.firstIndex(of: 0), key.count == zero + 1 + 2 + 1 + 16 else { return nil }
        let scope = String(decoding: UnsafeRawBufferPointer(rebasing: key[..<zero]), as: UTF8.self)
        let position = UInt16(key[zero + 1]) << 8 | UInt16(key[zero + 2])
        let kind = key[zero + 3]
        guard kind != 0 else { return nil }
        let id = RecordID(raw: UnsafeRawBufferPointer(rebasing: key[(zero + 4)...]))
        return (scope, position, RecordRef(kind: RecordKindID(rawValue: kind), id: id))
    }

    static func bucketValue(_ sum: DigestSum, _ records: UInt64) -> [UInt8] { sum.bytes + records.bigEndianBytes }

    static func parseBucket(_ b: UnsafeRawBufferPointer) throws(CorruptRecord) -> (DigestSum, UInt64) {
        guard b.count == 40 else { throw CorruptRecord(what: "digest bucket of \(b.count) bytes") }
        return (DigestSum(bytes: b[0..<32])!, UInt64(bigEndianBytes: UnsafeRawBufferPointer(rebasing: b[32..<40]))!)
    }
}

extension CaseStore {
    /// The digest format of this build; a store built in another is rebuilt by a scrub.
    static let digestFormat: UInt64 = 1

    /// Notes that a record was written in this transaction (with its new children).
    func digestTouched(_ kind: RecordKindID, _ id: RecordID, children: [Child] = []) {
        digestWork.touched(RecordRef(kind: kind, id: id), children: children)
    }

    /// Brings the leaves of every record written in this transaction up to date, in
    /// every scope it counts in. A transfer that changed may change what of its ticket
    /// a partner holds, so the ticket is hashed again too.
    func updateDigests(_ txn: WriteTransaction) throws {
        let work = digestWork
        guard !work.dirty.isEmpty else { return }
        let transfers = work.dirty.keys.filter { $0.kind == TransferRecord.kind }
        for ref in transfers {
            guard let record = try loadRecord(TransferRecord.schema, ref.id, txn),
                  let t = Transfer.materialise(record.state, local: record.local) else { continue }
            work.touched(RecordRef(kind: TicketRecord.kind, id: t.order.ticket), children: [])
        }
        for (ref, children) in work.dirty.sorted(by: { $0.key < $1.key }) {
            try updateLeaves(ref, newChildren: children, force: work.recompute.contains(ref), txn)
        }
        work.reset()
    }

    /// The scopes a record counts in at this node, each with what of it counts there
    /// (nil: nothing, any more): this organisation's (everything: every node of it holds
    /// the same), and each partner organisation's (what a transfer lets it hold).
    func digestScopes(_ schema: RecordSchema, _ record: StoredRecord?, _ id: RecordID,
                      _ txn: some TransactionProtocol) throws -> [(scope: String, filter: DeltaFilter?)] {
        var out: [(String, DeltaFilter?)] = [(organisation, .everything)]
        for p in try partners(of: schema, record ?? StoredRecord.new(schema, id), txn).sorted() {
            out.append((p, try partnerFilter(schema.kind, id, partner: p, txn)))
        }
        return out
    }

    /// Hashes a record into each of its scopes; returns the scopes whose leaf changed.
    /// `force`: hash its children again rather than adding the new ones to the sum.
    /// The registers are read back from the store, not taken from the writer: the leaf
    /// must hash what is stored (what a scrub will read), byte for byte.
    @discardableResult
    func updateLeaves(_ ref: RecordRef, newChildren: [Child], force: Bool, _ txn: WriteTransaction) throws -> [String] {
        guard let schema = kinds[ref.kind] else { return [] }
        let record = try loadRecord(schema, ref.id, txn)
        // Children written in this transaction may be gone again (a purge after them).
        let exists = try record != nil || hasChildren(ref, txn)
        let position = DigestHashing.position(ref.kind, ref.id)
        var every: [Child]?
        var changed: [String] = []
        for (scope, filter) in try digestScopes(schema, record, ref.id, txn) {
            let key = DigestKeys.leaf(scope, position, ref)
            let old = try txn.withValue(self.schema.digestLeaves, key: key) { b throws(CorruptRecord) in try DigestLeaf.decode(b) }
            var new: DigestLeaf?
            if let filter, exists {
                let admits = { (c: Child) in filter.child?(c) ?? true }
                if let old, !force, old.filter == filter.registers.bits {
                    var l = old
                    l.registers = DigestHashing.registers(record?.state ?? schema.emptyState(ref.id), schema, filter: filter.registers)
                    for c in newChildren where admits(c) {
                        l.children += DigestHashing.child(c, kind: ref.kind, record: ref.id)
                        l.childCount &+= 1
                    }
                    new = l
                } else {
                    if every == nil { every = try everyChild(schema, ref.id, txn) }
                    new = DigestHashing.leaf(record?.state, schema, kind: ref.kind, id: ref.id, filter: filter.registers,
                                             children: every!.filter(admits))
                }
            }
            guard new != old else { continue }
            changed.append(scope)
            if let new { try txn.put(self.schema.digestLeaves, key: key, value: new.encode()) } else {
                _ = try txn.delete(self.schema.digestLeaves, key: key)
            }
            try addToBucket(scope, position, minus: old, plus: new, txn)
        }
        return changed
    }

    private func addToBucket(_ scope: String, _ position: UInt16, minus old: DigestLeaf?, plus new: DigestLeaf?,
                             _ txn: WriteTransaction) throws {
        let key = DigestKeys.bucket(scope, position)
        var (sum, count) = try txn.withValue(schema.digestBuckets, key: key) { b throws(CorruptRecord) in
            try DigestKeys.parseBucket(b)
        } ?? (.zero, 0)
        if let old { sum -= old.value; count &-= 1 }
        if let new { sum += new.value; count &+= 1 }
        if count == 0 { _ = try txn.delete(schema.digestBuckets, key: key) } else {
            try txn.put(schema.digestBuckets, key: key, value: DigestKeys.bucketValue(sum, count))
        }
    }

    func hasChildren(_ ref: RecordRef, _ txn: some TransactionProtocol) throws -> Bool {
        let prefix = Keys.record(ref.kind.rawValue, ref.id)
        return try txn.withCursor(schema.children) { c in try c.seek(atLeast: prefix) && c.keyHasPrefix(prefix) }
    }

    /// Every child of a record in the collections this build knows.
    func everyChild(_ schema: RecordSchema, _ id: RecordID, _ txn: some TransactionProtocol) throws -> [Child] {
        try schema.collections.flatMap { try children(schema.kind, id, $0.number, txn) }
    }

    // MARK: Reading digests

    /// Whether every record's leaves have been built (by a scrub) in this build's format.
    public var digestsReady: Bool {
        (try? readTxn { txn in try txn.u64(schema.meta, Schema.MetaKey.digestVersion) }) == CaseStore.digestFormat
    }

    /// A scope's 256 first-level ranges (those holding records) and its record count.
    public func digestSummary(scope: String) throws(StoreError) -> DigestSummary {
        try readTxn { txn in
            var sums = [DigestSum](repeating: .zero, count: 256)
            var counts = [UInt64](repeating: 0, count: 256)
            // Counts are read from the store: a damaged bucket's may add up past UInt64.
            let tooMany = CorruptRecord(what: "digest of \(scope): its buckets count more records than a UInt64 holds")
            var total: UInt64 = 0
            try eachBucket(scope, from: 0, through: 0xffff, txn) { position, sum, count in
                let (t, overflow) = total.addingReportingOverflow(count)
                guard !overflow else { throw tooMany }
                total = t
                sums[Int(position >> 8)] += sum
                counts[Int(position >> 8)] += count  // at most the total
            }
            let ranges = (0..<256).filter { counts[$0] > 0 }.map {
                DigestNode(position: UInt16($0), sum: sums[$0], records: counts[$0])
            }
            return DigestSummary(scope: scope, records: total, ranges: ranges)
        }
    }

    /// The buckets (second level) of one first-level range.
    public func digestBuckets(scope: String, range: UInt8) throws(StoreError) -> [DigestNode] {
        try readTxn { txn in
            var out: [DigestNode] = []
            try eachBucket(scope, from: UInt16(range) << 8, through: UInt16(range) << 8 | 0xff, txn) { p, s, c in
                out.append(DigestNode(position: p, sum: s, records: c))
            }
            return out
        }
    }

    /// The leaves of one bucket.
    public func digestEntries(scope: String, bucket: UInt16) throws(StoreError) -> [DigestEntry] {
        try readTxn { txn in
            let prefix = DigestKeys.bucket(scope, bucket)
            return try txn.withCursor(schema.digestLeaves) { c in
                var out: [DigestEntry] = []
                var ok = try c.seek(atLeast: prefix)
                while ok && c.keyHasPrefix(prefix) {
                    guard let (_, _, ref) = DigestKeys.parseLeaf(c.key) else { throw CorruptRecord(what: "digest leaf key") }
                    out.append(DigestEntry(kind: ref.kind, id: ref.id, value: try DigestLeaf.decode(c.value).value))
                    ok = try c.next()
                }
                return out
            }
        }
    }

    /// The scopes this node keeps digests of: its organisation's and its partners'.
    public func digestScopeNames() throws(StoreError) -> [String] {
        try readTxn { txn in
            try txn.withCursor(schema.digestBuckets) { c in
                var out: [String] = []
                var ok = try c.first()
                while ok {
                    guard let zero = c.key.firstIndex(of: 0) else { throw CorruptRecord(what: "digest bucket key") }
                    // The next scope from the key's own bytes: a name that is not UTF-8 decodes
                    // to other bytes, and seeking after those went back to the same key forever.
                    let scope = Array(c.key[..<zero])
                    out.append(String(decoding: scope, as: UTF8.self))
                    ok = try c.seek(atLeast: scope + [1])
                }
                return out
            }
        }
    }

    /// Records whose bytes were found not to hash to their leaf and not yet repaired.
    public func damagedRecords(limit: Int = 1000) throws(StoreError) -> [RecordRef] {
        try readTxn { txn in
            try txn.withCursor(schema.digestDamaged) { c in
                var out: [RecordRef] = []
                var ok = try c.first()
                while ok && out.count < limit {
                    if c.key.count == 17, c.key[0] != 0 {
                        out.append(RecordRef(kind: RecordKindID(rawValue: c.key[0]),
                                             id: RecordID(raw: UnsafeRawBufferPointer(rebasing: c.key[1...]))))
                    }
                    ok = try c.next()
                }
                return out
            }
        }
    }

    private func eachBucket(_ scope: String, from: UInt16, through: UInt16, _ txn: some TransactionProtocol,
                            _ body: (UInt16, DigestSum, UInt64) throws -> Void) throws {
        let prefix = DigestKeys.scope(scope)
        try txn.withCursor(schema.digestBuckets) { c in
            var ok = try c.seek(atLeast: DigestKeys.bucket(scope, from))
            while ok && c.keyHasPrefix(prefix) {
                guard c.key.count == prefix.count + 2 else { throw CorruptRecord(what: "digest bucket key") }
                let position = UInt16(c.key[prefix.count]) << 8 | UInt16(c.key[prefix.count + 1])
                guard position <= through else { break }
                let (sum, count) = try DigestKeys.parseBucket(c.value)
                try body(position, sum, count)
                ok = try c.next()
            }
        }
    }
}

extension CaseStore {
    /// Whole records as `partner` may receive them (this organisation's peers:
    /// everything), encoded as deltas, for a repair: about `maxBytes` of them (at
    /// least one), in the order asked; records not held here, or not in the partner's
    /// scope, are left out. `link`: what the caller's link speaks (proto/README §8.1);
    /// parts of other capabilities are left out.
    public func wholeRecords(_ refs: [RecordRef], for partner: String, maxBytes: Int,
                             link: Capabilities? = nil) throws(StoreError) -> [(RecordRef, [UInt8])] {
        try readTxn { txn in
            var out: [(RecordRef, [UInt8])] = []
            var bytes = 0
            for ref in refs {
                guard let schema = kinds[ref.kind] else { continue }
                let scoped = partner == organisation ? DeltaFilter.everything : try partnerFilter(ref.kind, ref.id, partner: partner, txn)
                guard let filter = narrowed(scoped, ref.kind, link: link) else { continue }
                let held = try txn.contains(self.schema.records, key: Keys.record(ref.kind.rawValue, ref.id))
                let children = try everyChild(schema, ref.id, txn).map(\.key)
                guard held || !children.isEmpty else { continue }
                let entry = FeedEntry(kind: ref.kind, id: ref.id, registerNumbers: held ? schema.numbers(schema.allRegisters) : 0,
                                      children: children)
                var skipped: [FeedPage.Skip] = []
                guard let delta = try encodeDelta(entry, at: nil, txn, filter: filter, skipped: &skipped) else { continue }
                if !out.isEmpty && bytes + delta.count > maxBytes { break }
                bytes += delta.count
                out.append((ref, delta))
            }
            return out
        }
    }
}
