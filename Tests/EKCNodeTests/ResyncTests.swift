import CaseModel
import CaseStore
import Foundation
import Testing
import Wire
@testable import EKCNode

/// What a puller reports when a peer cannot resume from its checkpoint.
@Suite struct ResyncTests {
    func header(resumeAfter: UInt64, reset: Bool) -> Ekc_Replication_V1_StreamHeader {
        var h = Ekc_Replication_V1_StreamHeader()
        h.node = "irk-main"
        h.resumeAfter = resumeAfter
        h.checkpointReset = reset
        return h
    }

    let checkpoint = Checkpoint(sourceStoreID: Array(repeating: 7, count: 16), sequence: 500)

    @Test func honouredCheckpointIsNoResync() {
        #expect(PullStream.resync(checkpoint: checkpoint, header: header(resumeAfter: 500, reset: false)) == nil)
        // A first pull has nothing to resume.
        #expect(PullStream.resync(checkpoint: nil, header: header(resumeAfter: 0, reset: false)) == nil)
        #expect(PullStream.resync(checkpoint: Checkpoint(sourceStoreID: [], sequence: 0),
                                  header: header(resumeAfter: 0, reset: true)) == nil)
    }

    @Test func resetIsReported() throws {
        let r = try #require(PullStream.resync(checkpoint: checkpoint, header: header(resumeAfter: 0, reset: true)))
        #expect(r.reason == .checkpointReset && r.checkpointSequence == 500 && r.resumedAfter == 0)
    }

    @Test func rewoundPeerIsReported() throws {
        let r = try #require(PullStream.resync(checkpoint: checkpoint, header: header(resumeAfter: 320, reset: false)))
        #expect(r.reason == .peerRewound && r.checkpointSequence == 500 && r.resumedAfter == 320)
    }
}
