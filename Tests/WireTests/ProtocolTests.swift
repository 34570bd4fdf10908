import CaseModel
import Foundation
import Replication
import SwiftProtobuf
import TestSupport
import Testing
@testable import Wire

/// The pull protocol's constants and request checks (proto/README.md); the session
/// rules (resume point, batch sequences) are the session machines' and tested with them.
@Suite struct ProtocolTests {
    func checkpoint(_ id: [UInt8], _ seq: UInt64) -> WireCheckpoint {
        var c = WireCheckpoint()
        c.sourceStoreID = Data(id)
        c.sequence = seq
        return c
    }

    /// The constants the node hands its session machines are the protocol's, and the
    /// machines' own defaults agree with them (the checks themselves are the sessions',
    /// tested in ReplicationTests).
    @Test func constantsAgreeWithTheSessions() {
        #expect(Int(ReplicationProtocol.defaultBatchChanges) == BatchSequence.defaultLimit)
        #expect(Int(ReplicationProtocol.maxBatchChanges) == BatchSequence.maximumLimit)
        #expect(ReplicationProtocol.maxRequestBytes == FeedSession.Configuration(pullPath: "/", supportedVersions: 2...2).maxRequestBytes)
        #expect(ReplicationProtocol.version == 2 && ReplicationProtocol.supportedVersions == 2...2)
        #expect(ReplicationProtocol.pullPath == "/replication/v2/pull" && ReplicationProtocol.otherVersionPaths == ["/replication/v1/pull"])
        #expect(SessionTimers.protocolDefaults.heartbeatInterval == .seconds(5) && SessionTimers.protocolDefaults.idleTimeout == .seconds(15))
    }

    @Test func errorStatuses() {
        let statuses: [(WireStreamError.Code, Int)] = [(.protocolVersionMismatch, 400), (.badRequest, 400), (.unauthenticated, 401),
                                                        (.forbidden, 403), (.shuttingDown, 503), (.internal, 500), (.unspecified, 500),
                                                        (.UNRECOGNIZED(40), 500)]
        for (code, status) in statuses { #expect(WireStreamError(code, "m").httpStatus == status, "\(code)") }
    }

    @Test func requestBodyParses() throws {
        var r = WirePullRequest()
        r.protocolVersion = 2
        r.checkpoint = checkpoint(Array(repeating: 0x11, count: 16), 77)
        r.maxBatch = 100
        let bytes = try WireCoding.serialize(r)
        #expect(try WireCoding.parse(WirePullRequest.self, from: bytes) == r)
        #expect(try WireCoding.parse(WirePullRequest.self, from: ([0xEE] + bytes + [0xEE])[1..<(bytes.count + 1)]) == r)
        #expect(throws: WireError.self) { try WireCoding.parse(WirePullRequest.self, from: [0x0A, 0x05]) }
        // Field numbers of the envelope are those of version 1: a v1 puller's request reads as one.
        #expect(Array(bytes.prefix(2)) == [0x08, 0x02] && bytes.contains(0x12) && bytes.suffix(2) == [0x18, 0x64])
    }

    @Test func frameConstructors() {
        let h = WireFrame.header(node: irkutskNodes[0], storeID: [1, 2], resumeAfter: 5, checkpointReset: true, lastSequence: 9)
        #expect(h.header.protocolVersion == 2 && h.header.node == "irk-main" && h.header.storeID == Data([1, 2]))
        #expect(h.header.resumeAfter == 5 && h.header.checkpointReset && h.header.lastSequence == 9)
        let hb = WireFrame.heartbeat(sourceLastSequence: 4, sourceStamp: Stamp(millis: testNow, logical: 3))
        #expect(hb.heartbeat.sourceLastSequence == 4 && hb.heartbeat.sourceStamp == Stamp(millis: testNow, logical: 3).raw)
        let e = WireFrame.error(.forbidden, "no")
        #expect(e.error.code == .forbidden && e.error.message == "no")
    }
}
