import CaseModel

/// One entry of a peer's feed as the puller decoded and checked it: a delta ready to
/// merge, or the refusal of a record that failed its checks (reported, never merged).
public struct RemoteRecord: Sendable {
    public let sequence: UInt64
    public let content: Content

    public enum Content: Sendable {
        case delta(RecordDelta)
        /// Refused before merging: the kind and id when they could be read.
        case refused(kind: RecordKindID?, id: RecordID?, Refusal)
    }

    public init(sequence: UInt64, delta: RecordDelta) {
        self.sequence = sequence
        content = .delta(delta)
    }

    public init(sequence: UInt64, refusedKind kind: RecordKindID?, id: RecordID?, _ refusal: Refusal) {
        self.sequence = sequence
        content = .refused(kind: kind, id: id, refusal)
    }
}

