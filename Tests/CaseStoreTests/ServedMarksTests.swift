import CaseModel
import Foundation
import Replication
import TestSupport
import Testing
@testable import CaseStore

@Suite("Case store: how far the feed was served to each peer")
struct ServedMarksTests {
    @Test("a mark rides along with the next commit, never goes back, and persistServed writes it on an idle node")
    func marksPersist() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let clock = TestClock(t0)
        do {
            let store = try CaseStore(path: dir.path(), configuration: configuration(clock))
            #expect(try store.served(to: office) == nil)
            _ = try await store.create(draft(), actor: ivanova)
            store.noteServed(office, through: 1)
            store.noteServed(office, through: 5)
            store.noteServed(office, through: 3)   // an older stream finishing late
            store.noteServed(fundNode, through: 1)
            #expect(try store.served(to: office) == 5)
            // No commit of its own: the next edit carries the marks.
            let seq = store.lastSequence
            _ = try await store.create(draft(), actor: ivanova)
            #expect(store.lastSequence == seq + 1)
            #expect(try store.served(to: office) == 5 && store.served(to: fundNode) == 1)
            store.close()
        }
        do {
            let store = try CaseStore(path: dir.path(), configuration: configuration(clock))
            #expect(try store.served(to: office) == 5 && store.served(to: fundNode) == 1)
            store.noteServed(office, through: 9)
            let seq = store.lastSequence
            await store.persistServed()
            #expect(store.lastSequence == seq)   // the marks' own commit does not move the feed
            await store.persistServed()          // nothing pending: no commit
            store.close()
        }
        let store = try CaseStore(path: dir.path(), configuration: configuration(clock))
        defer { store.close() }
        #expect(try store.served(to: office) == 9)
        #expect(try store.served(to: irkutskNodes[2]) == nil)
    }
}
