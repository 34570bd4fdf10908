import CaseModel
import Foundation
import TestSupport
import Testing
@testable import CaseStore

@Suite("Case store: listing")
struct QueryTests {
    /// Seven tickets, one minute apart:
    /// 0 web NEW · 1 phone REGISTERED petrov · 2 web NEW petrov · 3 phone→IN_WORK sidorova
    /// 4 web NEW · 5 phone appeal REGISTERED petrov · 6 phone→IN_WORK petrov
    func seed(_ store: CaseStore, _ clock: TestClock) async throws -> [Ticket] {
        let plan: [(Channel, LegalRegime, String?)] = [
            (.web, .consultation, nil), (.phone, .consultation, "petrov"), (.web, .consultation, "petrov"),
            (.phone, .consultation, "sidorova"), (.web, .consultation, nil), (.phone, .appeal59FZ, "petrov"),
            (.phone, .consultation, "petrov"),
        ]
        var out: [Ticket] = []
        for (i, p) in plan.enumerated() {
            clock.now = t0 + Millis(i) * 60_000
            var t = try await store.create(draft(p.0, regime: p.1, assignee: p.2), actor: ivanova)
            if i == 3 || i == 6 { t = try await store.patch(.id(t.id), TicketPatch(status: .inWork)) }
            out.append(t)
        }
        return out
    }

    func pages(_ store: CaseStore, _ q: TicketQuery) throws -> [[TicketID]] {
        var q = q
        var result: [[TicketID]] = []
        for _ in 0..<100 {
            let p = try store.list(q)
            result.append(p.items.map(\.id))
            guard let next = p.next else { return result }
            q.cursor = next
        }
        Issue.record("pagination did not end")
        return result
    }

    @Test("filters: none, status, assignee, updatedSince, dueBefore, and combinations")
    func filters() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let clock = TestClock(t0)
        let store = try CaseStore(path: dir.path(), configuration: configuration(clock))
        defer { store.close() }
        let t = try await seed(store, clock)
        let ids = t.map(\.id)

        #expect(try store.list(TicketQuery()).items.map(\.id) == ids)
        #expect(try store.list(TicketQuery()).next == nil)
        #expect(try store.list(TicketQuery(status: .new)).items.map(\.id) == [ids[0], ids[2], ids[4]])
        #expect(try store.list(TicketQuery(status: .registered)).items.map(\.id) == [ids[1], ids[5]])
        #expect(try store.list(TicketQuery(status: .inWork)).items.map(\.id) == [ids[3], ids[6]])
        #expect(try store.list(TicketQuery(status: .closed)).items.isEmpty)
        #expect(Set(try store.list(TicketQuery(assignee: "petrov")).items.map(\.id)) == [ids[1], ids[2], ids[5], ids[6]])
        #expect(try store.list(TicketQuery(assignee: "sidorova")).items.map(\.id) == [ids[3]])
        #expect(try store.list(TicketQuery(assignee: "petro")).items.isEmpty)   // not a prefix match
        #expect(try store.list(TicketQuery(assignee: "nobody")).items.isEmpty)
        #expect(try store.list(TicketQuery(status: .registered, assignee: "petrov")).items.map(\.id) == [ids[1], ids[5]])
        #expect(try store.list(TicketQuery(status: .new, assignee: "petrov")).items.map(\.id) == [ids[2]])

        // updatedSince is inclusive, walks in update order
        let since = try store.list(TicketQuery(updatedSince: t0 + 4 * 60_000)).items.map(\.id)
        #expect(since == [ids[4], ids[5], ids[6]])
        #expect(try store.list(TicketQuery(updatedSince: t0 + 10 * 60_000)).items.isEmpty)
        #expect(try store.list(TicketQuery(updatedSince: 0)).items.count == 7)

        // dueBefore: NEW tickets are due 3 days after receipt; the registered appeal 30 days after
        // registration; registered consultations have no deadline.
        let due3 = t0 + 3 * day
        #expect(try store.list(TicketQuery(dueBefore: due3 + 1)).items.map(\.id) == [ids[0]])
        #expect(try store.list(TicketQuery(dueBefore: due3)).items.isEmpty)
        #expect(try store.list(TicketQuery(dueBefore: due3 + 5 * 60_000)).items.map(\.id) == [ids[0], ids[2], ids[4]])
        #expect(try store.list(TicketQuery(dueBefore: t0 + 31 * day)).items.map(\.id) == [ids[0], ids[2], ids[4], ids[5]])
        #expect(try store.list(TicketQuery(status: .new, dueBefore: due3 + 3 * 60_000)).items.map(\.id) == [ids[0], ids[2]])
        #expect(try store.list(TicketQuery(assignee: "petrov", dueBefore: t0 + 31 * day)).items.map(\.id) == [ids[2], ids[5]])

        // an edit moves the ticket in every index
        clock.now = t0 + 20 * 60_000
        _ = try await store.patch(.id(ids[0]), TicketPatch(status: .registered, assignee: .some("sidorova")))
        #expect(try store.list(TicketQuery(status: .new)).items.map(\.id) == [ids[2], ids[4]])
        #expect(try store.list(TicketQuery(assignee: "sidorova")).items.map(\.id) == [ids[0], ids[3]])
        #expect(try store.list(TicketQuery(updatedSince: t0 + 10 * 60_000)).items.map(\.id) == [ids[0]])
        #expect(try store.list(TicketQuery(dueBefore: due3 + 1)).items.isEmpty)
        #expect(try store.tableCounts()["idx_status"] == 7)
        #expect(try store.tableCounts()["idx_updated"] == 7)
        #expect(try store.tableCounts()["idx_assignee"] == 6)
        #expect(try store.tableCounts()["idx_deadline"] == 3)   // 2 NEW + the appeal
    }

    @Test("pagination with limit 2 collects every ticket exactly once", arguments: [
        TicketQuery(limit: 2), TicketQuery(updatedSince: 0, limit: 2), TicketQuery(assignee: "petrov", limit: 2),
        TicketQuery(status: .new, limit: 2), TicketQuery(dueBefore: Millis.max, limit: 2), TicketQuery(limit: 1),
        TicketQuery(limit: 7), TicketQuery(limit: 0),
    ])
    func pagination(query: TicketQuery) async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let clock = TestClock(t0)
        let store = try CaseStore(path: dir.path(), configuration: configuration(clock))
        defer { store.close() }
        let t = try await seed(store, clock)
        let expected = t.filter { query.matches($0) }.map(\.id)
        let p = try pages(store, query)
        let all = p.flatMap { $0 }
        #expect(all.count == expected.count)
        #expect(Set(all) == Set(expected))
        let limit = max(query.limit, 1)
        #expect(p.allSatisfy { $0.count <= limit })
        #expect(p.dropLast().allSatisfy { $0.count == limit })
        if query.limit == 2 && query.status == nil && query.assignee == nil {
            #expect(p.map(\.count) == [2, 2, 2, 1] || query.dueBefore != nil)
        }
    }

    @Test("pages stay consistent while tickets are added between them")
    func paginationWhileWriting() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let clock = TestClock(t0)
        let store = try CaseStore(path: dir.path(), configuration: configuration(clock))
        defer { store.close() }
        let t = try await seed(store, clock)
        let first = try store.list(TicketQuery(limit: 3))
        clock.advance(hour)
        let late = try await store.create(draft(), actor: ivanova)
        var q = TicketQuery(limit: 3, cursor: first.next)
        var rest: [TicketID] = []
        while true {
            let p = try store.list(q)
            rest += p.items.map(\.id)
            guard let n = p.next else { break }
            q.cursor = n
        }
        #expect(first.items.map(\.id) + rest == t.map(\.id) + [late.id])
    }

    @Test("bad cursors are refused with QueryError.invalidCursor")
    func badCursors() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let clock = TestClock(t0)
        let store = try CaseStore(path: dir.path(), configuration: configuration(clock))
        defer { store.close() }
        _ = try await seed(store, clock)
        for bad in ["", "z", "abc", "zz", "ABCD", "69", String(repeating: "0", count: 34), String(repeating: "ab", count: 300)] {
            #expect(throws: QueryError.invalidCursor, "\(bad)") { try store.list(TicketQuery(cursor: bad)) }
        }
        let byStatus = try #require(try store.list(TicketQuery(status: .new, limit: 1)).next)
        let byAssignee = try #require(try store.list(TicketQuery(assignee: "petrov", limit: 1)).next)
        let byID = try #require(try store.list(TicketQuery(limit: 1)).next)
        let byUpdated = try #require(try store.list(TicketQuery(updatedSince: 0, limit: 1)).next)
        // each cursor works with its own query
        #expect(try store.list(TicketQuery(status: .new, limit: 1, cursor: byStatus)).items.count == 1)
        #expect(try store.list(TicketQuery(assignee: "petrov", limit: 1, cursor: byAssignee)).items.count == 1)
        #expect(try store.list(TicketQuery(limit: 1, cursor: byID)).items.count == 1)
        // and is refused with another index, or another key range of the same index
        #expect(throws: QueryError.invalidCursor) { try store.list(TicketQuery(assignee: "petrov", cursor: byStatus)) }
        #expect(throws: QueryError.invalidCursor) { try store.list(TicketQuery(status: .registered, cursor: byStatus)) }
        #expect(throws: QueryError.invalidCursor) { try store.list(TicketQuery(assignee: "sidorova", cursor: byAssignee)) }
        #expect(throws: QueryError.invalidCursor) { try store.list(TicketQuery(status: .new, cursor: byID)) }
        #expect(throws: QueryError.invalidCursor) { try store.list(TicketQuery(cursor: byUpdated)) }
        #expect(throws: QueryError.invalidCursor) { try store.list(TicketQuery(updatedSince: 0, cursor: byID)) }
        #expect(throws: QueryError.invalidCursor) { try store.list(TicketQuery(dueBefore: .max, cursor: byID)) }
        // a cursor cut short
        #expect(throws: QueryError.invalidCursor) { try store.list(TicketQuery(cursor: String(byID.dropLast(2)))) }
    }
}
