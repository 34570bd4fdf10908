/// Where a puller stands in a source's change feed: the identity of the source store
/// its sequence belongs to, and the last sequence of that feed it has applied
/// (proto/README.md §3, §5). Plain values, so the rules below need no wire types.
public struct FeedCheckpoint: Sendable, Hashable {
    public var sourceStoreID: [UInt8]
    public var sequence: UInt64
    /// The capabilities of the streams the puller reached `sequence` in (§8.1): what it
    /// holds of every change up to there. As the wire had them; checked by the sender.
    public var capabilities: [String]

    public init(sourceStoreID: [UInt8], sequence: UInt64, capabilities: [String] = []) {
        self.sourceStoreID = sourceStoreID
        self.sequence = sequence
        self.capabilities = capabilities
    }

    /// A first pull sends no checkpoint, or an empty one; both mean "from 0, no reset".
    public var isEmpty: Bool { sourceStoreID.isEmpty && sequence == 0 }
}

/// Where a stream starts, as the sender decides it (proto/README.md §5), with
/// checkpoints on both ends: the puller's, and how far this store remembers serving it.
public struct ResumePoint: Sendable, Hashable {
    /// The stream carries changes with sequences greater than this.
    public var resumeAfter: UInt64
    /// The checkpoint named another store, or a sequence this store never reached: the
    /// feed restarts from 0 and the header says so.
    public var checkpointReset: Bool
    /// The puller applied more than this store remembers serving it (the store was
    /// restored from a copy): resend from what it remembers rather than skip what it
    /// wrote since. Re-sent changes merge to nothing.
    public var rewound: Bool

    public init(resumeAfter: UInt64, checkpointReset: Bool, rewound: Bool) {
        self.resumeAfter = resumeAfter
        self.checkpointReset = checkpointReset
        self.rewound = rewound
    }

    /// The rule. `served` nil means this store has no record of serving the puller, so
    /// it may have served nothing: it resends from 0 (and reports a rewind if the
    /// checkpoint asked for more).
    public init(checkpoint: FeedCheckpoint?, storeID: [UInt8], lastSequence: UInt64, served: UInt64?) {
        let (resume, reset): (UInt64, Bool)
        if let c = checkpoint, !c.isEmpty {
            // Honoured only if it names this store and a sequence this store has reached.
            (resume, reset) = c.sourceStoreID == storeID && c.sequence <= lastSequence ? (c.sequence, false) : (0, true)
        } else {
            (resume, reset) = (0, false)
        }
        let limit = served ?? 0
        self.init(resumeAfter: min(resume, limit), checkpointReset: reset, rewound: resume > limit)
    }

    /// The rule of §8.1, after the one above: a link that now speaks a capability the
    /// puller's checkpoint was reached without resumes before the first part of it this
    /// store wrote (`since`), so the parts held back from the puller reach it; a
    /// capability this store holds no part of costs nothing.
    public func holdingBack(link: Capabilities, earned: Capabilities, since: [String: UInt64]) -> ResumePoint {
        var r = self
        for c in link.names where !earned.contains(c) {
            guard let first = since[c], first >= 1, first - 1 < r.resumeAfter else { continue }
            r.resumeAfter = first - 1
            r.rewound = true
        }
        return r
    }

    /// The shape `ReplicationProtocol.resumePoint` returns.
    public var tuple: (resumeAfter: UInt64, reset: Bool, rewound: Bool) { (resumeAfter, checkpointReset, rewound) }
}

/// A position in a store's feed, as a peer states it (proto/README.md §4, §11): at most
/// 2^53 − 1, so that every JSON reader of `/v1/replication` reads it exactly (at a
/// million changes a second a store reaches it in 285 years), and a peer's last
/// sequence never goes back within a stream, since its store only grows.
public enum FeedPosition {
    public static let maximum: UInt64 = (1 << 53) - 1

    /// Why `value` (the wire field `field`) cannot be a feed position; nil if it can.
    public static func check(_ value: UInt64, _ field: String) -> String? {
        value <= maximum ? nil : "\(field) \(value) is past the largest feed position, 2^53 − 1"
    }

    /// Why `value`, a peer's last sequence, cannot follow `previous` (what it said before); nil if it can.
    public static func follows(_ value: UInt64, _ previous: UInt64, _ field: String) -> String? {
        if let why = check(value, field) { return why }
        return value >= previous ? nil : "\(field) \(value) is behind \(previous), which the peer said before: its feed only grows"
    }
}

/// The stream's position rules for batches (proto/README.md §4.2, §3).
public enum BatchSequence {
    /// A batch checked against where the stream stands (`after`: the previous batch's
    /// through_sequence, or the header's resume_after): sequences strictly increase, lie
    /// in (after, through], and through advances. A batch that fails must not be applied.
    public static func check(sequences: some Sequence<UInt64>, through: UInt64, after: UInt64)
        throws(BatchSequenceError)
    {
        guard through > after else { throw .throughDoesNotAdvance(through: through, after: after) }
        var previous = after
        for (i, s) in sequences.enumerated() {
            guard s > previous, s <= through else {
                throw .sequenceOutOfRange(index: i, sequence: s, previous: previous, through: through)
            }
            previous = s
        }
    }

    /// Changes per batch when the puller asks for 0, and the most ever sent (§3, §11).
    public static let defaultLimit = 512
    public static let maximumLimit = 4096

    /// Changes per batch for a request's `max_batch`: 0 asks for the sender's default;
    /// anything above the maximum is capped.
    public static func limit(requested: UInt32, defaultLimit: Int = defaultLimit, maximum: Int = maximumLimit) -> Int {
        requested == 0 ? defaultLimit : min(Int(requested), maximum)
    }
}

/// Why a batch failed `BatchSequence.check`, naming the field and the rule.
public enum BatchSequenceError: Error, Sendable, Equatable, CustomStringConvertible {
    case throughDoesNotAdvance(through: UInt64, after: UInt64)
    case sequenceOutOfRange(index: Int, sequence: UInt64, previous: UInt64, through: UInt64)

    /// The wire field at fault, as `WireError.invalidValue` names it.
    public var field: String {
        switch self {
        case .throughDoesNotAdvance: "batch.through_sequence"
        case let .sequenceOutOfRange(i, _, _, _): "batch.changes[\(i)].sequence"
        }
    }

    public var reason: String {
        switch self {
        case let .throughDoesNotAdvance(through, after): "\(through) does not advance past \(after)"
        case let .sequenceOutOfRange(_, s, previous, through): "\(s) is not in (\(previous), \(through)]"
        }
    }

    public var description: String { "\(field): \(reason)" }
}

/// Text a peer sends in an answer (an error frame's message, an error status's body):
/// shown on the link and written to the log, so it is cut to `limit` bytes (on a
/// character boundary) and stripped of control characters — a peer neither fills the
/// link status with megabytes nor forges a log line with a newline.
public enum PeerText {
    public static func shown(_ text: some StringProtocol, limit: Int = 300) -> String {
        var out = ""
        var bytes = 0
        for ch in text {
            let printable = ch.unicodeScalars.allSatisfy { !($0.properties.generalCategory == .control || $0.properties.generalCategory == .format) }
            let piece = printable ? String(ch) : "\u{FFFD}"
            bytes += piece.utf8.count
            guard bytes <= limit else { return out + "…" }
            out += piece
        }
        return out
    }

    /// `shown` of bytes that should be UTF-8 (invalid sequences become U+FFFD).
    public static func shown(bytes: some Collection<UInt8>, limit: Int = 300) -> String {
        shown(String(decoding: bytes.prefix(limit * 4), as: UTF8.self), limit: limit)
    }
}
