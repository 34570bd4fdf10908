import Testing
@testable import CaseModel

private let hour: Millis = 3_600_000
private let day: Millis = 86_400_000
// Midnight UTC of known days, seconds since the epoch × 1000 (checked with `date -u -d`).
private let fri20Nov2026: Millis = 1_795_132_800_000   // Friday
private let mon23Nov2026: Millis = 1_795_392_000_000   // Monday
private let thu01Jan2026: Millis = 1_767_225_600_000   // Thursday
private let fri01Jan2027: Millis = 1_798_761_600_000   // Friday

@Suite("Deadlines (59-FZ)")
struct DeadlineTests {
    @Test("register within 3 days of receipt; nothing else runs yet")
    func onReceipt() {
        let d = Deadlines.onReceipt(receivedAt: fri20Nov2026)
        #expect(d.registerBy == fri20Nov2026 + 3 * day)
        #expect(d.forwardBy == nil && d.answerBy == nil && d.callbackBy == nil)
        #expect(d.extensionDays == 0)
    }

    @Test("forward 7 days and answer 30 days after registration, appeals only")
    func registered() {
        let r = fri20Nov2026 + 5 * hour
        let base = Deadlines.onReceipt(receivedAt: fri20Nov2026 - day)
        let appeal = base.registered(at: r, regime: .appeal59FZ)
        #expect(appeal.registerBy == fri20Nov2026 + 2 * day)
        #expect(appeal.forwardBy == r + 7 * day)
        #expect(appeal.answerBy == r + 30 * day)
        let consultation = base.registered(at: r, regime: .consultation)
        #expect(consultation.forwardBy == nil)
        #expect(consultation.answerBy == nil)
        #expect(consultation == base)
    }

    @Test("one extension of 1…30 days")
    func extension59() throws {
        let r = fri20Nov2026
        let d = Deadlines.onReceipt(receivedAt: r).registered(at: r, regime: .appeal59FZ)
        for days in [1, 15, 30] {
            let e = try d.extended(byDays: days)
            #expect(e.answerBy == r + Millis(30 + days) * day)
            #expect(e.extensionDays == days)
            #expect(e.forwardBy == d.forwardBy)
            #expect(throws: TicketError.extensionAlreadyUsed) { try e.extended(byDays: 1) }
        }
        for bad in [0, 31, -1, 365] {
            #expect(throws: TicketError.self) { try d.extended(byDays: bad) }
            do {
                _ = try d.extended(byDays: bad)
            } catch {
                #expect(error.field == "extendAnswerByDays")
                if case .invalidField = error {} else { Issue.record("\(bad) days: \(error)") }
            }
        }
        let consultation = Deadlines.onReceipt(receivedAt: r).registered(at: r, regime: .consultation)
        #expect(throws: TicketError.extensionNotApplicable) { try consultation.extended(byDays: 5) }
    }

    @Test("next deadline for each status")
    func next() {
        var d = Deadlines(registerBy: 100, forwardBy: 200, answerBy: 300)
        #expect(d.next(for: .new) == 100)
        for s in [TicketStatus.registered, .inWork, .waiting, .reopened, .transferPending] {
            #expect(d.next(for: s) == 300, "\(s)")
        }
        for s in [TicketStatus.answered, .closed, .merged, .transferredOut] {
            #expect(d.next(for: s) == nil, "\(s)")
        }
        #expect(d.next(for: .deferred) == 300)
        d.callbackBy = 150
        #expect(d.next(for: .deferred) == 150)
        let consultation = Deadlines(registerBy: 100)
        #expect(consultation.next(for: .inWork) == nil)
        #expect(consultation.next(for: .deferred) == nil)
    }
}

@Suite("Working hours")
struct WorkingHoursTests {
    let irkutsk = WorkingHours(offsetMinutes: 480)
    let moscow = WorkingHours(offsetMinutes: 180)

    @Test("Friday 16:00 Irkutsk + 8 h → Monday 15:00 Irkutsk")
    func fridayAfternoonIrkutsk() {
        let start = fri20Nov2026 + 8 * hour           // 16:00 at UTC+8
        let want = mon23Nov2026 + 7 * hour            // 15:00 at UTC+8
        #expect(irkutsk.adding(hours: 8, to: start) == want)
    }

    @Test("Friday 16:00 Moscow + 8 h → Monday 15:00 Moscow")
    func fridayAfternoonMoscow() {
        let start = fri20Nov2026 + 13 * hour          // 16:00 at UTC+3
        #expect(moscow.adding(hours: 8, to: start) == mon23Nov2026 + 12 * hour)
    }

    @Test("before opening, the clock starts at 9:00 local")
    func beforeOpening() {
        // Monday 07:00 Moscow = 04:00 UTC → 09:00 + 8 h = 17:00 Moscow = 14:00 UTC.
        #expect(moscow.adding(hours: 8, to: mon23Nov2026 + 4 * hour) == mon23Nov2026 + 14 * hour)
        // Monday 07:00 Irkutsk = Sunday 23:00 UTC: the local day, not the UTC day, decides.
        #expect(irkutsk.adding(hours: 8, to: mon23Nov2026 - hour) == mon23Nov2026 + 9 * hour)
    }

    @Test("a weekend start waits for Monday")
    func weekend() {
        let saturdayNoonMoscow = fri20Nov2026 + day + 9 * hour
        #expect(moscow.adding(hours: 8, to: saturdayNoonMoscow) == mon23Nov2026 + 14 * hour)
        let sundayLateIrkutsk = fri20Nov2026 + 2 * day + 15 * hour   // Sunday 23:00 local
        #expect(irkutsk.adding(hours: 1, to: sundayLateIrkutsk) == mon23Nov2026 + 2 * hour)  // Monday 10:00
    }

    @Test("after closing, the clock starts the next working day")
    func afterClosing() {
        let wed = fri20Nov2026 - 2 * day
        // Wednesday 19:00 Moscow + 8 h → Thursday 17:00 Moscow
        #expect(moscow.adding(hours: 8, to: wed + 16 * hour) == wed + day + 14 * hour)
        // Thursday 10:00 + 16 h → Friday 17:00 (8 h each day)
        #expect(moscow.adding(hours: 16, to: wed + day + 7 * hour) == fri20Nov2026 + 14 * hour)
    }

    @Test("whole days fill exactly to closing; one more hour moves to the next day")
    func exactFill() {
        let monOpen = mon23Nov2026 + 6 * hour  // 09:00 Moscow
        #expect(moscow.adding(hours: 9, to: monOpen) == mon23Nov2026 + 15 * hour)           // 18:00
        #expect(moscow.adding(hours: 10, to: monOpen) == mon23Nov2026 + day + 7 * hour)     // Tue 10:00
        #expect(moscow.adding(hours: 45, to: monOpen) == mon23Nov2026 + 4 * day + 15 * hour) // Fri 18:00
        #expect(moscow.adding(hours: 46, to: monOpen) == mon23Nov2026 + 7 * day + 7 * hour)  // next Mon 10:00
        #expect(moscow.adding(hours: 0, to: monOpen) == monOpen)
    }

    @Test("a zone west of UTC (UTC−5)")
    func westOfUTC() {
        let newYork = WorkingHours(offsetMinutes: -300)
        // Friday 17:00 local = Friday 22:00 UTC; 1 h on Friday, 7 h on Monday → Monday 16:00 local = 21:00 UTC
        #expect(newYork.adding(hours: 8, to: fri20Nov2026 + 22 * hour) == mon23Nov2026 + 21 * hour)
        // Friday 20:00 local = Saturday 01:00 UTC → Monday 09:00 + 8 h = 17:00 local = 22:00 UTC
        #expect(newYork.adding(hours: 8, to: fri20Nov2026 + 25 * hour) == mon23Nov2026 + 22 * hour)
    }

    @Test("custom hours and working days")
    func custom() {
        let sixDays = WorkingHours(offsetMinutes: 0, startHour: 8, endHour: 20, workdays: [0, 1, 2, 3, 4, 5])
        // Friday 19:00 UTC + 3 h → 1 h Friday, Saturday 08:00 + 2 h = 10:00
        #expect(sixDays.adding(hours: 3, to: fri20Nov2026 + 19 * hour) == fri20Nov2026 + day + 10 * hour)
    }
}

@Suite("Calendar")
struct CalendarTests {
    @Test("year of an instant around New Year depends on the offset")
    func newYear() {
        let t = fri01Jan2027 - 4 * hour  // 2026-12-31 20:00 UTC
        #expect(Calendar59.year(of: t, offsetMinutes: 0) == 2026)
        #expect(Calendar59.year(of: t, offsetMinutes: 180) == 2026)   // 23:00 Moscow
        #expect(Calendar59.year(of: t, offsetMinutes: 240) == 2027)   // 00:00 Samara
        #expect(Calendar59.year(of: t, offsetMinutes: 480) == 2027)   // 04:00 Irkutsk
        #expect(Calendar59.year(of: t, offsetMinutes: 720) == 2027)   // Kamchatka
        #expect(Calendar59.year(of: fri01Jan2027, offsetMinutes: 0) == 2027)
        #expect(Calendar59.year(of: fri01Jan2027 - 1, offsetMinutes: 0) == 2026)
        #expect(Calendar59.year(of: fri01Jan2027 + 3 * hour, offsetMinutes: -300) == 2026)  // 22:00 on Dec 31
        #expect(Calendar59.year(of: thu01Jan2026 - 1, offsetMinutes: 60) == 2026)
        #expect(Calendar59.year(of: thu01Jan2026 - 1, offsetMinutes: 0) == 2025)
        #expect(Calendar59.year(of: -1, offsetMinutes: 0) == 1969)
    }

    @Test("civil dates of known days")
    func civil() {
        #expect(Calendar59.civil(daysSinceEpoch: 0) == (1970, 1, 1))
        #expect(Calendar59.civil(daysSinceEpoch: -1) == (1969, 12, 31))
        #expect(Calendar59.civil(daysSinceEpoch: 20_777) == (2026, 11, 20))
        #expect(Calendar59.civil(daysSinceEpoch: 19_782) == (2024, 2, 29))
        #expect(Calendar59.civil(daysSinceEpoch: 19_783) == (2024, 3, 1))
        #expect(Calendar59.civil(daysSinceEpoch: 11_017) == (2000, 3, 1))
        #expect(Calendar59.civil(daysSinceEpoch: 11_016) == (2000, 2, 29))
        #expect(Calendar59.civil(daysSinceEpoch: 20_819) == (2027, 1, 1))
        #expect(Calendar59.civil(daysSinceEpoch: 20_818) == (2026, 12, 31))
    }

    @Test("civil dates advance by exactly one day, every day of four centuries")
    func civilContinuity() {
        var prev = Calendar59.civil(daysSinceEpoch: -70_000)
        let daysIn: [Int] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
        for d in Int64(-69_999)...Int64(80_000) {
            let c = Calendar59.civil(daysSinceEpoch: d)
            let leap = prev.year % 4 == 0 && (prev.year % 100 != 0 || prev.year % 400 == 0)
            let monthLen = prev.month == 2 && leap ? 29 : daysIn[prev.month - 1]
            let want: (Int, Int, Int) = prev.day < monthLen ? (prev.year, prev.month, prev.day + 1)
                : prev.month < 12 ? (prev.year, prev.month + 1, 1) : (prev.year + 1, 1, 1)
            if c != want { Issue.record("day \(d): \(c) after \(prev)"); break }
            prev = c
        }
    }

    @Test("weekdays")
    func weekday() {
        #expect(Calendar59.weekday(daysSinceEpoch: 0) == 3)        // Thursday
        #expect(Calendar59.weekday(daysSinceEpoch: 20_777) == 4)   // Friday
        #expect(Calendar59.weekday(daysSinceEpoch: 20_780) == 0)   // Monday
        #expect(Calendar59.weekday(daysSinceEpoch: -1) == 2)       // Wednesday
        #expect(Calendar59.weekday(daysSinceEpoch: -4) == 6)       // Sunday
    }
}
