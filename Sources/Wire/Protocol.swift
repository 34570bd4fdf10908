import CaseModel
import Foundation
import Replication

public typealias WireFrame = Ekc_Replication_V2_Frame
public typealias WirePullRequest = Ekc_Replication_V2_PullRequest
public typealias WireStreamError = Ekc_Replication_V2_StreamError
public typealias WireStreamHeader = Ekc_Replication_V2_StreamHeader
public typealias WireHeartbeat = Ekc_Replication_V2_Heartbeat
public typealias WireCheckpoint = Ekc_Replication_V2_Checkpoint
public typealias WireDigestRequest = Ekc_Replication_V2_DigestRequest
public typealias WireDigestReply = Ekc_Replication_V2_DigestReply
public typealias WireDigestRange = Ekc_Replication_V2_DigestRange
public typealias WireDigestRecord = Ekc_Replication_V2_DigestRecord
public typealias WireRecordsRequest = Ekc_Replication_V2_RecordsRequest
public typealias WireRecordRef = Ekc_Replication_V2_RecordRef

/// The constants of the pull protocol (proto/README.md), shared by the sender and the
/// puller so that both apply them identically. The session rules themselves (resume
/// point, batch sequence checks, timers) are in Replication's session state machines.
public enum ReplicationProtocol {
    /// The protocol version of proto/ekc/replication/v2.
    public static let version: UInt32 = 2
    /// The versions this build can serve and pull. Version 1 shipped whole tickets;
    /// a v1 peer is answered PROTOCOL_VERSION_MISMATCH (proto/README.md §8).
    public static let supportedVersions: ClosedRange<UInt32> = 2...2
    /// Per protocol version, the first tagged release that speaks it (CHANGELOG.md): what a
    /// version mismatch tells a node's operators to install. Version 2 came untagged with
    /// issue 7; 0.18.0 is the first release that names it.
    public static let firstReleases: [UInt32: String] = [2: "0.18.0"]
    /// The capabilities (proto/README.md §8.1) this build supports beyond the base protocol.
    /// None yet: the first arrives with the first register, collection or kind added after
    /// release 0.18.0, which is then sent only over links whose two ends support it.
    public static let capabilities = Capabilities(known: [])

    public static let pullPath = "/replication/v2/pull"
    /// Paths of other versions, answered with a version mismatch rather than 404.
    public static let otherVersionPaths = ["/replication/v1/pull"]
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

    /// Anti-entropy (proto/README.md §13): a level of the caller's scope's digest.
    public static let digestPath = "/replication/v2/digest"
    /// Anti-entropy: whole records of the caller's scope, by kind and id.
    public static let recordsPath = "/replication/v2/records"
    /// Most records one records request names.
    public static let maxRecordsPerRequest = 1000
    /// About how many bytes of records one records response carries (at least one record).
    public static let recordsResponseBytes = 4 << 20
}

// MARK: - Frames

extension Ekc_Replication_V2_StreamError {
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

extension Ekc_Replication_V2_Frame {
    public static func header(node: NodeID, storeID: [UInt8], resumeAfter: UInt64, checkpointReset: Bool,
                              lastSequence: UInt64, protocolVersion: UInt32 = ReplicationProtocol.version,
                              capabilities: Capabilities = ReplicationProtocol.capabilities) -> Self {
        var h = Ekc_Replication_V2_StreamHeader()
        h.capabilities = capabilities.names
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

    public static func heartbeat(sourceLastSequence: UInt64, sourceStamp: Stamp) -> Self {
        var h = Ekc_Replication_V2_Heartbeat()
        h.sourceLastSequence = sourceLastSequence
        h.sourceStamp = sourceStamp.raw
        var f = Self()
        f.heartbeat = h
        return f
    }

    public static func error(_ e: Ekc_Replication_V2_StreamError) -> Self {
        var f = Self()
        f.error = e
        return f
    }

    public static func error(_ code: Ekc_Replication_V2_StreamError.Code, _ message: String) -> Self {
        .error(Ekc_Replication_V2_StreamError(code, message))
    }
}
