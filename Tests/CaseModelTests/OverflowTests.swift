import Testing
@testable import CaseModel

/// Values at the edges of Int64 arrive from clients (epoch milliseconds); the model
/// must refuse them, never trap on arithmetic overflow.
@Suite struct OverflowTests {
    @Test(arguments: [Int64.min, Int64.min + 1, -1_000_000_000_000_000, Int64.max, Int64.max - 1])
    func extremeReceivedAtIsRefused(_ r: Int64) {
        let now: Millis = 1_795_305_793_589
        let d = TicketDraft(channel: .phone, topic: "pension", subject: "s", statement: "t", receivedAt: r)
        #expect(throws: TicketError.self) { try d.validate(now: now) }
    }
}
