import CaseModel
import TestSupport
import Testing
@testable import Replication

@Suite("Ticket as a replicated record")
struct TicketRecordTests {
    @Test("a ticket's registers materialise into the same ticket")
    func roundTrip() throws {
        let t = openedTicket(id: TicketID(high: 1 << 20, low: 7), at: irkutskNodes[0], now: testNow)
        let r = ticketRecord(t, dot: Dot(node: irkutskNodes[0], stamp: t.updatedStamp))
        for (i, d) in TicketRecord.schema.registers.enumerated() {
            let v = try #require(r.state.registers[i].value)
            #expect(throws: Never.self, "\(d.name)") { try d.check(v, CheckContext(directory: testDirectory)) }
        }
        let back = try #require(Ticket.materialise(r.state, local: LocalRecordInfo(version: t.version)))
        #expect(back == t)
    }
}

