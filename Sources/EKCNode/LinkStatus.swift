import CaseModel
import Foundation
import Replication

/// A peer to pull from: its node id and replication address.
public struct PeerAddress: Sendable, Hashable {
    public let node: NodeID
    public let host: String
    public let port: Int
    public init(node: NodeID, host: String, port: Int) {
        self.node = node
        self.host = host
        self.port = port
    }
}

/// What `GET /v1/replication` and `ekc cluster health` report of one link.
public struct LinkStatus: Sendable {
    public var peer: NodeID
    public var address: String
    public var connected = false
    public var lastSuccess: Date?
    public var lastError: String?
    /// The peer's last sequence as it last told us.
    public var peerSequence: UInt64 = 0
    /// The last sequence of the peer's feed we have applied.
    public var appliedSequence: UInt64 = 0
    /// Since when we have been behind (nil when caught up).
    public var behindSince: Date?
    public var ourSequence: UInt64 = 0
    public var recordsReceived = 0
    /// The replication protocol version the link last spoke (nil before its first stream).
    public var protocolVersion: UInt32?
    /// What the link last spoke beyond the base protocol: both ends' capabilities in common.
    public var capabilities: Capabilities?
    /// Records, or parts of records, refused from this peer: by reason, and the latest.
    public var rejected = Rejected()

    public struct Rejected: Sendable {
        public var records = 0
        public var byReason: [String: Int] = [:]
        /// The latest 20, newest last.
        public var recent: [Entry] = []

        public struct Entry: Sendable {
            public var at: Date
            public var sequence: UInt64
            public var kind: String?
            public var id: String?
            public var reason: String
            public var detail: String
            public var whole: Bool
        }
    }
    /// The peer's clock minus ours, from its last heartbeat (network delay included);
    /// nil until a heartbeat has arrived.
    public var clockOffsetMillis: Int64?
    /// Numbers of tickets received from this peer that already named another ticket
    /// here (nodes configured with one number series, or a node restored from a copy
    /// reissuing numbers its lost tickets had); the latest 20. Both tickets stay
    /// reachable by id; the number names the one that had it here first.
    public var duplicateNumbers: [String] = []
    /// The last time the peer could not resume from our checkpoint.
    public var resync: Resync?

    /// Why a pull could not resume where this node's checkpoint said.
    public struct Resync: Sendable {
        public enum Reason: String, Sendable {
            /// The peer's store is not the one the checkpoint names, or is behind it
            /// (recreated, or restored without a new identity): the feed restarts from 0.
            case checkpointReset
            /// The peer remembers serving us less than we applied (restored from a copy):
            /// it resends from what it remembers, so nothing it wrote since is skipped.
            case peerRewound
        }
        public var reason: Reason
        public var at: Date
        public var checkpointSequence: UInt64
        public var resumedAfter: UInt64
    }

    public var lagRecords: UInt64 { peerSequence > appliedSequence ? peerSequence - appliedSequence : 0 }
    public func lagSeconds(now: Date) -> Double { behindSince.map { now.timeIntervalSince($0) } ?? 0 }
}

