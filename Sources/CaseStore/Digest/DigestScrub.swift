import CaseModel
import LMDB
import Replication

/// What one step of a scrub did.
public struct ScrubReport: Sendable, Equatable {
    /// Records and leaves looked at.
    public var checked = 0
    /// Leaves and buckets that did not match the records and were set right.
    public var fixed = 0
    /// Records whose bytes changed under the store (their leaf no longer matched): kept
    /// as damaged until a repair from a peer, which may replace their writes.
    public var damaged: [RecordRef] = []
    /// The pass went through every record, leaf and bucket.
    public var finished = false

    public init() {}
}

/// A scrub reads every record, hashes it again and sets the digest right where it
/// differs: the leaves kept up to date by writes cannot see bytes changed under the
/// store (a disk, a tool, a bug), and a digest that never looked at the data would
/// report equality over diverged replicas. It runs in steps of a bounded number of
/// items, each one write transaction on the commit thread between other edits, and
/// resumes where it stood after a restart (`meta.digest_scrub`):
/// records (then records that have only children), leaves whose record or scope is
/// gone, buckets whose sum is not their leaves'. The first complete pass over a store
/// from before digests builds them (nothing counts as damage), and marks them ready.
extension CaseStore {
    private enum ScrubPhase: UInt8 {
        case records = 1, childOnly = 2, leaves = 3, buckets = 4
    }

    func applyScrub(limit: Int, _ txn: WriteTransaction) throws -> EditOutcome {
        var report = ScrubReport()
        let ready = try txn.u64(schema.meta, Schema.MetaKey.digestVersion) == CaseStore.digestFormat
        let mark = try txn.get(schema.meta, key: Schema.MetaKey.digestScrub) ?? [ScrubPhase.records.rawValue]
        var phase = ScrubPhase(rawValue: mark.first ?? 1) ?? .records
        var after: [UInt8]? = mark.count > 1 ? Array(mark.dropFirst()) : nil
        var budget = max(1, limit)
        while budget > 0 {
            let (next, done) = try scrubStep(phase, after: after, budget: &budget, ready: ready, &report, txn)
            if !done {
                after = next
                break
            }
            guard let following = ScrubPhase(rawValue: phase.rawValue + 1) else {
                report.finished = true
                break
            }
            phase = following
            after = nil
        }
        if report.finished {
            _ = try txn.delete(schema.meta, key: Schema.MetaKey.digestScrub)
            try txn.put(schema.meta, key: Schema.MetaKey.digestVersion, value: CaseStore.digestFormat.bigEndianBytes)
        } else {
            try txn.put(schema.meta, key: Schema.MetaKey.digestScrub, value: [phase.rawValue] + (after ?? []))
        }
        return .scrubbed(report)
    }

    /// One phase from `after` (a key of the phase's database) within the budget; returns
    /// the last key handled and whether the phase is done.
    private func scrubStep(_ phase: ScrubPhase, after: [UInt8]?, budget: inout Int, ready: Bool,
                           _ report: inout ScrubReport, _ txn: WriteTransaction) throws -> ([UInt8]?, Bool) {
        let db: Database
        switch phase {
        case .records: db = schema.records
        case .childOnly: db = schema.children
        case .leaves: db = schema.digestLeaves
        case .buckets: db = schema.digestBuckets
        }
        // Keys first (the cursor must not live across writes to its own database).
        var keys: [[UInt8]] = []
        var done = false
        try txn.withCursor(db) { c in
            var ok = try after.map { a in try c.seek(atLeast: a + [0]) } ?? c.first()
            while ok && keys.count < budget {
                let key = Array(c.key)
                if phase == .childOnly {
                    // One key per record: the record's prefix, then skip its other children.
                    guard key.count >= 17 else { ok = try c.next(); continue }
                    let prefix = Array(key[0..<17])
                    keys.append(prefix)
                    ok = try c.seek(atLeast: prefix + [0xff, 0xff])
                    while ok && c.keyHasPrefix(prefix) { ok = try c.next() }
                } else {
                    keys.append(key)
                    ok = try c.next()
                }
            }
            done = !ok
        }
        budget -= keys.count
        for key in keys {
            report.checked += 1
            switch phase {
            case .records, .childOnly:
                guard key.count == 17, key[0] != 0 else { continue }
                let ref = RecordRef(kind: RecordKindID(rawValue: key[0]), id: RecordID(bytes: key[1...])!)
                if phase == .childOnly, try txn.contains(schema.records, key: key) { continue }
                try scrubRecord(ref, ready: ready, &report, txn)
            case .leaves:
                try key.withUnsafeBytes { k in
                    guard let (scope, position, ref) = DigestKeys.parseLeaf(k) else {
                        _ = try txn.delete(schema.digestLeaves, key: key)
                        report.fixed += 1
                        return
                    }
                    try scrubLeaf(scope, position, ref, key, &report, txn)
                }
            case .buckets:
                try scrubBucket(key, &report, txn)
            }
        }
        return (keys.last ?? after, done)
    }

    /// Hashes a record again from scratch. A leaf of its own organisation that changed
    /// means its bytes changed under the store (once digests are built): damage.
    private func scrubRecord(_ ref: RecordRef, ready: Bool, _ report: inout ScrubReport, _ txn: WriteTransaction) throws {
        // An edit of this group may have written the record before this step (a merge
        // with new children): the leaf below already holds them, so the end of the
        // transaction must hash it whole again rather than add them a second time.
        digestWork.recompute.insert(ref)
        let changed: [String]
        do {
            changed = try updateLeaves(ref, newChildren: [], force: true, txn)
        } catch is CorruptRecord {
            // Bytes that do not even decode: its leaves stay as they were (what the record
            // held when last written), so the digest shows a difference only after a peer
            // is compared; marked damaged, a repair replaces it.
            try txn.put(schema.digestDamaged, key: Keys.record(ref.kind.rawValue, ref.id), value: [])
            report.damaged.append(ref)
            return
        }
        guard !changed.isEmpty else { return }
        report.fixed += changed.count
        if ready && changed.contains(organisation) {
            try txn.put(schema.digestDamaged, key: Keys.record(ref.kind.rawValue, ref.id), value: [])
            report.damaged.append(ref)
        }
    }

    /// Removes a leaf whose record is gone or no longer counts in the leaf's scope.
    private func scrubLeaf(_ scope: String, _ position: UInt16, _ ref: RecordRef, _ key: [UInt8],
                           _ report: inout ScrubReport, _ txn: WriteTransaction) throws {
        var keep = false
        if let schema = kinds[ref.kind], position == DigestHashing.position(ref.kind, ref.id) {
            let record = (try? loadRecord(schema, ref.id, txn)) ?? nil
            if try record != nil || hasChildren(ref, txn) {
                keep = try digestScopes(schema, record, ref.id, txn).contains { $0.scope == scope && $0.filter != nil }
            }
        }
        if keep {
            // A bucket lost under the store is counted again from its leaves.
            let bucket = DigestKeys.bucket(scope, position)
            if try !txn.contains(self.schema.digestBuckets, key: bucket) { try scrubBucket(bucket, &report, txn) }
            return
        }
        _ = try txn.delete(schema.digestLeaves, key: key)
        report.fixed += 1
        // The bucket is set right by the bucket phase.
    }

    /// Sets a bucket's sum and count to those of its leaves.
    private func scrubBucket(_ key: [UInt8], _ report: inout ScrubReport, _ txn: WriteTransaction) throws {
        var sum = DigestSum.zero
        var count: UInt64 = 0
        try txn.withCursor(schema.digestLeaves) { c in
            var ok = try c.seek(atLeast: key)
            while ok && c.keyHasPrefix(key) && c.key.count == key.count + 17 {
                sum += try DigestLeaf.decode(c.value).value
                count += 1
                ok = try c.next()
            }
        }
        let stored = try txn.withValue(schema.digestBuckets, key: key) { b in try? DigestKeys.parseBucket(b) } ?? nil
        if let stored, stored.0 == sum, stored.1 == count { return }
        report.fixed += 1
        if count == 0 { _ = try txn.delete(schema.digestBuckets, key: key) } else {
            try txn.put(schema.digestBuckets, key: key, value: DigestKeys.bucketValue(sum, count))
        }
    }
}
