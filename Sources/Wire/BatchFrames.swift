import CaseModel
import Replication

/// Batch frames written straight from the store's encoded deltas: a sender never
/// builds messages for what it only forwards. The layout is the proto's
/// (Frame.batch = 2 { ChangeBatch.changes = 1 { Change.sequence = 1, Change.record = 2 },
/// through_sequence = 2, source_last_sequence = 3 }); tests check it against
/// swift-protobuf's encoding of the same messages.
public enum BatchFrames {
    /// One entry of a batch: a feed sequence and its serialised RecordDelta.
    public typealias Entry = (sequence: UInt64, delta: [UInt8])

    /// One length-prefixed batch frame holding entries from `next` on, until they are
    /// all written or the frame holds `targetBytes` (a single larger entry travels
    /// alone); `through_sequence` is the last entry's sequence. `next` moves past the
    /// entries written.
    public static func next(_ entries: [Entry], from next: inout Int, sourceLastSequence: UInt64,
                            targetBytes: Int = ReplicationProtocol.batchTargetBytes) -> (bytes: [UInt8], through: UInt64, count: Int) {
        precondition(next < entries.count)
        let first = next
        var w = ProtoWriter(capacity: min(targetBytes, entries[next...].reduce(0) { $0 + $1.delta.count + 16 }) + 64)
        let start = w.bytes.count
        w.lengthPrefixed { w in
            w.message(2) { w in
                while next < entries.count {
                    let e = entries[next]
                    w.message(1) { w in
                        w.uint64(1, e.sequence)
                        w.presentBytes(2, e.delta)
                    }
                    next += 1
                    if w.bytes.count - start >= targetBytes { break }
                }
                w.uint64(2, entries[next - 1].sequence)
                w.uint64(3, sourceLastSequence)
            }
        }
        return (w.bytes, entries[next - 1].sequence, next - first)
    }

    /// A batch frame that only advances `through_sequence` (nothing in scope).
    public static func empty(through: UInt64, sourceLastSequence: UInt64) -> [UInt8] {
        var w = ProtoWriter(capacity: 32)
        w.lengthPrefixed { w in
            w.message(2) { w in
                w.uint64(2, through)
                w.uint64(3, sourceLastSequence)
            }
        }
        return w.bytes
    }

    /// All of `entries` as consecutive frames.
    public static func all(_ entries: [Entry], sourceLastSequence: UInt64,
                           targetBytes: Int = ReplicationProtocol.batchTargetBytes) -> [(bytes: [UInt8], through: UInt64, count: Int)] {
        var frames: [(bytes: [UInt8], through: UInt64, count: Int)] = []
        var i = 0
        while i < entries.count { frames.append(next(entries, from: &i, sourceLastSequence: sourceLastSequence, targetBytes: targetBytes)) }
        return frames
    }
}
