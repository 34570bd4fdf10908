import CaseModel
import Foundation
import Replication

public typealias WireFrame = Ekc_Replication_V1_Frame
public typealias WirePullRequest = Ekc_Replication_V1_PullRequest
public typealias WireStreamError = Ekc_Replication_V1_StreamError

/// The constants and pure rules of the pull protocol (proto/README.md), shared by
/// the sender and the puller so both sides apply them identically.
public enum ReplicationProtocol {
    /// The protocol version of proto/ekc/replication/v1.
    public static let version: UInt32 = 1
    /// The versions this build can serve and pull.
    public static let supportedVersions: ClosedRange<UInt32> = 1...1

    public static let pullPath = "/replication/v1/pull"
    public static let requestContentType = "application/x-protobuf"
    public static let responseContentType = "application/x-ekc-frames"
    /// ALPN protocol of the TLS connection.
    public static let alpn = "h2"

    /// The largest frame (body length, excluding its prefix) a receiver must accept.
    public static let maxFrameBytes = 16 << 20
    /// The largest PullRequest body a sender reads.
    public static let maxRequestBytes = 64 << 10
    /// Changes per batch when the puller asks for 0 (the default), and the most ever sent.
    public static let defaultBatchChanges: UInt32 = 512
    public static let maxBatchChanges: UInt32 = 4096
    /// A sender closes a batch once its encoded changes reach this size.
    public static let batchTargetBytes = 1 << 20
    /// A sender with nothing to send emits a heartbeat after this long.
    public static let heartbeatInterval: Duration = .seconds(5)
    /// A puller that has received nothing for this long drops the stream and reconnects.
    public static let idleTimeout: Duration = .seconds(15)

    /// How many changes a sender puts in one batch for a request's `max_batch`.
    public static func batchLimit(requested: UInt32) -> Int {
        Int(requested == 0 ? defaultBatchChanges : min(requested, maxBatchChanges))
    }

    /// Where a stream starts, as the sender decides it from the puller's checkpoint
    /// and its own store: the checkpoint is honoured only if it names this store and a
    /// sequence this store has reached; otherwise the stream restarts from 0 and says
    /// so. An absent or empty checkpoint (a first pull) starts from 0 without a reset.
    public static func resumePoint(checkpoint: Ekc_Replication_V1_Checkpoint?, storeID: [UInt8],
                                   lastSequence: UInt64) -> (resumeAfter: UInt64, reset: Bool) {
        guard let c = checkpoint, !(c.sourceStoreID.isEmpty && c.sequence == 0) else { return (0, false) }
        guard Array(c.sourceStoreID) == storeID, c.sequence <= lastSequence else { return (0, true) }
        return (c.sequence, false)
    }

    /// The resume rule with checkpoints on both ends: never resume past `served`, how far
    /// this store remembers serving the puller (nil: no record, so from 0). A store
    /// restored from a copy remembers less than the puller applied and must send again
    /// what it has written since instead of skipping it; re-sent changes merge to nothing.
    public static func resumePoint(checkpoint: Ekc_Replication_V1_Checkpoint?, storeID: [UInt8],
                                   lastSequence: UInt64, served: UInt64?)
        -> (resumeAfter: UInt64, reset: Bool, rewound: Bool)
    {
        let (resume, reset) = resumePoint(checkpoint: checkpoint, storeID: storeID, lastSequence: lastSequence)
        let limit = served ?? 0
        return resume > limit ? (limit, reset, true) : (resume, reset, false)
    }

    /// The sender's checks of a request before anything is streamed: nil if it may be
    /// served, or the error to answer with (and its HTTP status).
    public static func check(_ request: Ekc_Replication_V1_PullRequest) -> Ekc_Replication_V1_StreamError? {
        guard supportedVersions.contains(request.protocolVersion) else {
            var e = Ekc_Replication_V1_StreamError(
                .protocolVersionMismatch,
                "protocol version \(request.protocolVersion) is not supported; this node speaks \(supportedVersions.lowerBound)–\(supportedVersions.upperBound)")
            e.minProtocolVersion = supportedVersions.lowerBound
            e.maxProtocolVersion = supportedVersions.upperBound
            return e
        }
        if request.hasCheckpoint, request.checkpoint.sourceStoreID.count > 64 {
            return .init(.badRequest, "checkpoint.source_store_id is longer than 64 bytes")
        }
        return nil
    }

    /// The puller's checks of a batch against where the stream stands (`after`, the
    /// previous batch's through_sequence or the header's resume_after): sequences
    /// strictly increase, lie in (after, through_sequence], and through_sequence
    /// advances. A batch that fails must not be applied; the puller drops the stream.
    public static func check(_ batch: Ekc_Replication_V1_ChangeBatch, after: UInt64) throws(WireError) {
        guard batch.throughSequence > after else {
            throw .invalidValue(field: "batch.through_sequence",
                                reason: "\(batch.throughSequence) does not advance past \(after)")
        }
        var previous = after
        for (i, c) in batch.changes.enumerated() {
            guard c.sequence > previous, c.sequence <= batch.throughSequence else {
                throw .invalidValue(field: "batch.changes[\(i)].sequence",
                                    reason: "\(c.sequence) is not in (\(previous), \(batch.throughSequence)]")
            }
            guard c.hasTicket else { throw .missingField("batch.changes[\(i)].ticket") }
            previous = c.sequence
        }
    }
}

// MARK: - Frames

extension Ekc_Replication_V1_StreamError {
    public init(_ code: Code, _ message: String) {
        self.init()
        self.code = code
        self.message = message
    }

    /// The HTTP status a sender answers with when the error is found before streaming
    /// (after the 200 response head it is sent as the last frame instead).
    public var httpStatus: Int {
        switch code {
        case .protocolVersionMismatch, .badRequest: return 400
        case .unauthenticated: return 401
        case .forbidden: return 403
        case .shuttingDown: return 503
        case .internal, .unspecified, .UNRECOGNIZED: return 500
        }
    }
}

extension Ekc_Replication_V1_Frame {
    public static func header(node: NodeID, storeID: [UInt8], resumeAfter: UInt64, checkpointReset: Bool,
                              lastSequence: UInt64, protocolVersion: UInt32 = ReplicationProtocol.version) -> Self {
        var h = Ekc_Replication_V1_StreamHeader()
        h.protocolVersion = protocolVersion
        h.node = node.value
        h.storeID = Data(storeID)
        h.resumeAfter = resumeAfter
        h.checkpointReset = checkpointReset
        h.lastSequence = lastSequence
        var f = Self()
        f.header = h
        return f
    }

    /// A batch of feed entries, each a ticket at its sequence, in increasing order.
    public static func batch(_ changes: [(sequence: UInt64, ticket: ReplicatedTicket)], throughSequence: UInt64,
                             sourceLastSequence: UInt64) -> Self {
        var b = Ekc_Replication_V1_ChangeBatch()
        b.changes = changes.map { c in
            var w = Ekc_Replication_V1_Change()
            w.sequence = c.sequence
            w.ticket = Ekc_Replication_V1_TicketState(c.ticket)
            return w
        }
        b.throughSequence = throughSequence
        b.sourceLastSequence = sourceLastSequence
        var f = Self()
        f.batch = b
        return f
    }

    public static func heartbeat(sourceLastSequence: UInt64, sourceStamp: Stamp) -> Self {
        var h = Ekc_Replication_V1_Heartbeat()
        h.sourceLastSequence = sourceLastSequence
        h.sourceStamp = sourceStamp.raw
        var f = Self()
        f.heartbeat = h
        return f
    }

    public static func error(_ e: Ekc_Replication_V1_StreamError) -> Self {
        var f = Self()
        f.error = e
        return f
    }

    public static func error(_ code: Ekc_Replication_V1_StreamError.Code, _ message: String) -> Self {
        .error(Ekc_Replication_V1_StreamError(code, message))
    }
}

extension Ekc_Replication_V1_ChangeBatch {
    /// The batch's tickets, decoded; the first malformed one throws, naming its position.
    public func tickets() throws(WireError) -> [(sequence: UInt64, ticket: ReplicatedTicket)] {
        var out: [(sequence: UInt64, ticket: ReplicatedTicket)] = []
        out.reserveCapacity(changes.count)
        for (i, c) in changes.enumerated() {
            do throws(WireError) {
                out.append((c.sequence, try ReplicatedTicket(wire: c.ticket)))
            } catch {
                throw error.at("batch.changes[\(i)].ticket")
            }
        }
        return out
    }
}

extension WireError {
    /// The same error with its field path placed under `prefix`.
    func at(_ prefix: String) -> WireError {
        switch self {
        case let .invalidID(f, n): return .invalidID(field: prefix + "." + f, byteCount: n)
        case let .invalidNodeID(f, v): return .invalidNodeID(field: prefix + "." + f, value: v)
        case let .invalidEnum(f, v): return .invalidEnum(field: prefix + "." + f, value: v)
        case let .missingField(f): return .missingField(prefix + "." + f)
        case let .invalidValue(f, r): return .invalidValue(field: prefix + "." + f, reason: r)
        case let .duplicate(f, k): return .duplicate(field: prefix + "." + f, key: k)
        default: return self
        }
    }
}
