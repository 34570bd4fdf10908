import CaseModel
import Foundation
import LMDB
import TestSupport
import Testing
@testable import CaseStore

/// Bytes of the LMDB file that LMDB itself never checks, damaged under a closed store.
@Suite("Case store: a damaged file is reported, never trapped on")
struct DamagedFileTests {
    /// Sets `md_branch_pages` of the named database `name` to Int.max in every copy of its
    /// record in `data.mdb` (main-database nodes: mn_lo 48, mn_hi 0, F_SUBDATA, key size,
    /// the name, then MDB_db { pad u32, flags u16, depth u16, branch_pages, leaf_pages, … }).
    static func damagePageCounts(_ path: String, database name: String) throws -> Int {
        let file = URL(fileURLWithPath: path + "/data.mdb")
        var bytes = [UInt8](try Data(contentsOf: file))
        let key = Array(name.utf8)
        let pattern: [UInt8] = [48, 0, 0, 0, 0x02, 0, UInt8(key.count), 0] + key
        var patched = 0
        var i = 0
        while i + pattern.count + 48 <= bytes.count {
            if bytes[i] == 48, bytes[i..<i + pattern.count].elementsEqual(pattern) {
                let branch = i + pattern.count + 8
                for k in 0..<8 { bytes[branch + k] = k == 7 ? 0x7f : 0xff }
                patched += 1
            }
            i += 1
        }
        try Data(bytes).write(to: file)
        return patched
    }

    @Test("page counts that add up past Int (kept in the file, unchecked by LMDB) are a corrupt store for stats and health")
    func pageCountsPastInt() async throws {
        let dir = try TemporaryDirectory(prefix: "casestore-pages")
        defer { dir.remove() }
        let clock = TestClock(t0)
        let before = try CaseStore(path: dir.path(), configuration: configuration(clock))
        _ = try await before.create(draft(), actor: ivanova)
        #expect(try before.stats().tables.first { $0.name == "tickets" }?.pages == 1)
        before.close()
        #expect(try DamagedFileTests.damagePageCounts(dir.path(), database: "tickets") >= 1)

        let store = try CaseStore(path: dir.path(), configuration: configuration(clock))
        defer { store.close() }
        #expect(throws: StoreError.corrupt("database tickets: its page counts add up past \(Int.max)")) { try store.stats() }
        // The tickets themselves read as before.
        #expect(try store.list(TicketQuery()).items.count == 1)
        let inspected = try CaseStore.inspect(path: dir.path())
        #expect(inspected.tables.first { $0.0 == "tickets" }.map { $0.1.pages == nil } == true)
    }
}
