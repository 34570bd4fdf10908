import Testing
@testable import CaseModel

private let hour: Millis = 3_600_000
private let day: Millis = 86_400_000
private let friNoonUTC: Millis = 1_795_132_800_000 + 4 * hour   // Friday 2026-11-20 04:00 UTC, 12:00 Irkutsk
private let node = NodeID("irk-main")!
private let number = TicketNumber(region: "38", year: 2026, sequence: 1)
private let ticketID = TicketID(millis: UInt64(friNoonUTC), randomHigh: 1, randomLow: 2)
private let operatorActor = Actor(user: "ivanova", role: "operator")

private func draft(_ channel: Channel = .web, regime: LegalRegime = .consultation) -> TicketDraft {
    TicketDraft(channel: channel, topic: "child-benefits", supportMeasure: "unified-benefit",
                subject: "Пособие", statement: "Когда придёт единое пособие?", legalRegime: regime)
}

private func ctx(_ now: Millis = friNoonUTC, stamp: UInt16 = 1) -> EditContext {
    EditContext(actor: operatorActor, node: node, now: now, stamp: Stamp(millis: now, logical: stamp),
                workingHours: WorkingHours(offsetMinutes: 480))
}

private func open(_ d: TicketDraft, now: Millis = friNoonUTC) throws -> Ticket {
    try d.open(id: ticketID, number: number, node: node, now: now, stamp: Stamp(millis: now, logical: 0))
}

@Suite("TicketDraft")
struct DraftTests {
    @Test("assisted channels register at once; the others start NEW")
    func initialStatusByChannel() throws {
        for channel in Channel.allCases where channel != .messenger {
            let t = try open(draft(channel))
            let assisted = [Channel.phone, .walkIn, .videoSign, .callback].contains(channel)
            #expect(t.status == (assisted ? .registered : .new), "\(channel)")
            #expect(t.registeredAt == (assisted ? friNoonUTC : nil), "\(channel)")
            #expect(channel.isAssisted == assisted)
        }
        // the messenger carries no citizen, but a general question is fine
        #expect(try open(draft(.messenger)).status == .new)
    }

    @Test("an opened ticket carries every draft field, version 1 and its deadlines")
    func openFields() throws {
        var d = draft(.phone, regime: .appeal59FZ)
        d.citizen = Citizen(ref: "CIT-7F3K2", phone: "+79140001267")
        d.priority = .high
        d.assignee = "petrov"
        let t = try open(d)
        #expect(t.id == ticketID && t.number == number)
        #expect(t.originNode == node && t.ownerNode == node)
        #expect(t.channel == .phone && t.topic == "child-benefits" && t.supportMeasure == "unified-benefit")
        #expect(t.citizen == d.citizen && t.priority == .high && t.assignee == "petrov")
        #expect(t.legalRegime == .appeal59FZ)
        #expect(t.version == 1)
        #expect(t.receivedAt == friNoonUTC && t.updatedAt == friNoonUTC)
        #expect(t.deadlines.registerBy == friNoonUTC + 3 * day)
        #expect(t.deadlines.forwardBy == friNoonUTC + 7 * day)
        #expect(t.deadlines.answerBy == friNoonUTC + 30 * day)
        #expect(t.duplicateOf == nil)
    }

    @Test("receivedAt earlier than entry starts the register clock at receipt")
    func receivedEarlier() throws {
        var d = draft(.voicemail)
        d.receivedAt = friNoonUTC - 10 * hour
        let t = try open(d)
        #expect(t.receivedAt == friNoonUTC - 10 * hour)
        #expect(t.deadlines.registerBy == friNoonUTC - 10 * hour + 3 * day)
        #expect(t.status == .new && t.updatedAt == friNoonUTC)
    }

    @Test("initialStatus overrides the channel, but only NEW or REGISTERED")
    func initialStatus() throws {
        var d = draft(.web)
        d.initialStatus = .registered
        #expect(try open(d).status == .registered)
        d = draft(.phone)
        d.initialStatus = .new
        #expect(try open(d).status == .new)
        for s in TicketStatus.allCases where s != .new && s != .registered {
            d.initialStatus = s
            #expect(throws: TicketError.invalidField(field: "status", rule: "a new ticket starts as NEW or REGISTERED")) {
                try d.validate(now: friNoonUTC)
            }
        }
    }

    @Test("no personal data through a foreign messenger")
    func messenger() {
        var d = draft(.messenger)
        d.citizen = Citizen(ref: "CIT-1")
        #expect(throws: TicketError.personalDataOnMessenger) { try d.validate(now: friNoonUTC) }
        #expect(throws: TicketError.personalDataOnMessenger) { try open(d) }
        d.channel = .chatbot
        #expect(throws: Never.self) { try d.validate(now: friNoonUTC) }
    }

    private func refusedField(_ d: TicketDraft, now: Millis = friNoonUTC) -> String? {
        do {
            try d.validate(now: now)
            return nil
        } catch {
            return error.field
        }
    }

    @Test("each field's rule")
    func fieldRules() {
        var d = draft()
        #expect(refusedField(d) == nil)

        d = draft(); d.subject = ""
        #expect(refusedField(d) == "subject")
        d = draft(); d.subject = "  \n\t "
        #expect(refusedField(d) == "subject")
        d = draft(); d.subject = String(repeating: "я", count: 300)
        #expect(refusedField(d) == nil)
        d = draft(); d.subject = String(repeating: "я", count: 301)
        #expect(refusedField(d) == "subject")
        d = draft(); d.subject = "bell\u{07}"
        #expect(refusedField(d) == "subject")

        d = draft(); d.statement = String(repeating: "я", count: 20_000)
        #expect(refusedField(d) == nil)
        d = draft(); d.statement = String(repeating: "я", count: 20_000) + "a"
        #expect(refusedField(d) == "statement")
        // The budget is bytes: 2,000 characters of 21 bytes each (a letter with twenty
        // combining marks) are refused, though far fewer than 20,000 characters.
        d = draft(); d.statement = String(repeating: "a" + String(repeating: "\u{0301}", count: 10), count: 2_000)
        #expect(refusedField(d) == "statement")
        d = draft(); d.statement = String(repeating: "ж", count: 20_001)
        #expect(throws: TicketError.tooLong(field: "statement", bytes: 40_002, limit: Budget.statementBytes)) { try open(d) }
        d = draft(); d.statement = "line one\nline two\ttab\r\n"
        #expect(refusedField(d) == nil)
        d = draft(); d.statement = "nul\u{00}byte"
        #expect(refusedField(d) == "statement")
        d = draft(); d.statement = "escape \u{1B}[31m"
        #expect(refusedField(d) == "statement")

        for bad in ["", "Child-Benefits", "child benefits", "-child", "пособие", String(repeating: "a", count: 65)] {
            d = draft(); d.topic = bad
            #expect(refusedField(d) == "topic", "\(bad)")
        }
        for good in ["a", "child-benefits", "victory_card.2026", String(repeating: "a", count: 64)] {
            d = draft(); d.topic = good
            #expect(refusedField(d) == nil, "\(good)")
        }
        d = draft(); d.supportMeasure = "Bad Code"
        #expect(refusedField(d) == "supportMeasure")
        d = draft(); d.assignee = "ivan ivanov"
        #expect(refusedField(d) == "assignee")
        d = draft(); d.assignee = "i.ivanov@irk"
        #expect(refusedField(d) == nil)
        d = draft(); d.citizen = Citizen(ref: "CIT-1", phone: "8914")
        #expect(refusedField(d) == "citizen.phone")
    }

    @Test("receivedAt must not be in the future nor more than a year back")
    func receivedAtRules() {
        var d = draft()
        d.receivedAt = friNoonUTC + 1
        #expect(throws: TicketError.invalidField(field: "receivedAt", rule: "must not be in the future")) {
            try d.validate(now: friNoonUTC)
        }
        d.receivedAt = friNoonUTC
        #expect(throws: Never.self) { try d.validate(now: friNoonUTC) }
        d.receivedAt = friNoonUTC - 366 * day
        #expect(throws: Never.self) { try d.validate(now: friNoonUTC) }
        d.receivedAt = friNoonUTC - 366 * day - 1
        #expect(throws: TicketError.self) { try d.validate(now: friNoonUTC) }
    }
}

@Suite("Ticket.applying")
struct ApplyTests {
    func newTicket(_ channel: Channel = .web, regime: LegalRegime = .consultation) throws -> Ticket {
        try open(draft(channel, regime: regime))
    }

    @Test("each field changes, with old and new values, and version + 1")
    func eachField() throws {
        let t = try newTicket()
        let later = friNoonUTC + hour
        let cases: [(TicketPatch, String, String?, String?)] = [
            (TicketPatch(assignee: .some("petrov")), "assignee", nil, "petrov"),
            (TicketPatch(priority: .urgent), "priority", "normal", "urgent"),
            (TicketPatch(topic: "pensions"), "topic", "child-benefits", "pensions"),
            (TicketPatch(supportMeasure: .some(nil)), "supportMeasure", "unified-benefit", nil),
            (TicketPatch(supportMeasure: .some("victory-card")), "supportMeasure", "unified-benefit", "victory-card"),
            (TicketPatch(subject: "Новая тема"), "subject", "Пособие", "Новая тема"),
            (TicketPatch(statement: "Уточнение"), "statement", "Когда придёт единое пособие?", "Уточнение"),
            (TicketPatch(status: .registered), "status", "NEW", "REGISTERED"),
        ]
        for (patch, field, old, new) in cases {
            let (u, changes) = try t.applying(patch, ctx(later, stamp: 9))
            #expect(changes == [FieldChange(field: field, old: old, new: new)], "\(field)")
            #expect(u.version == t.version + 1)
            #expect(u.updatedAt == later)
            #expect(u.updatedStamp == Stamp(millis: later, logical: 9))
            #expect(u.id == t.id && u.number == t.number)
        }
        let (u, _) = try t.applying(TicketPatch(assignee: .some("petrov"), priority: .high), ctx(later))
        #expect(u.assignee == "petrov" && u.priority == .high)
        let (cleared, ch) = try u.applying(TicketPatch(assignee: .some(nil)), ctx(later))
        #expect(cleared.assignee == nil)
        #expect(ch == [FieldChange(field: "assignee", old: "petrov", new: nil)])
        #expect(cleared.version == 3)
    }

    @Test("a patch that changes nothing returns the same ticket and no changes")
    func noOp() throws {
        let t = try newTicket()
        let (u, changes) = try t.applying(TicketPatch(priority: .normal, topic: "child-benefits", subject: "Пособие"),
                                               ctx(friNoonUTC + hour))
        #expect(changes.isEmpty)
        #expect(u == t)
        #expect(u.version == t.version)
        #expect(u.updatedAt == t.updatedAt)
        let (v, c2) = try t.applying(TicketPatch(status: .new), ctx(friNoonUTC + hour))
        #expect(c2.isEmpty && v == t)
    }

    @Test("an empty patch is refused")
    func emptyPatch() throws {
        let t = try newTicket()
        #expect(throws: TicketError.invalidField(field: "body", rule: "name at least one field to change")) {
            try t.applying(TicketPatch(), ctx())
        }
    }

    @Test("subject and statement are editable only while NEW")
    func immutableAfterRegistration() throws {
        let t = try newTicket(.phone)
        #expect(t.status == .registered)
        #expect(throws: TicketError.immutableField(field: "subject", status: .registered)) {
            try t.applying(TicketPatch(subject: "Другое"), ctx())
        }
        #expect(throws: TicketError.immutableField(field: "statement", status: .registered)) {
            try t.applying(TicketPatch(statement: "Другое"), ctx())
        }
        // The same text is not a change, so it is not refused.
        let (_, c) = try t.applying(TicketPatch(subject: t.subject), ctx())
        #expect(c.isEmpty)
        // The rule looks at the status before the patch: a NEW ticket may fix its subject while registering.
        let n = try newTicket()
        let (r, changes) = try n.applying(TicketPatch(status: .registered, subject: "Исправлено"), ctx())
        #expect(r.subject == "Исправлено" && r.status == .registered)
        #expect(changes.map(\.field) == ["subject", "status"])
    }

    @Test("the subject is validated on edit")
    func subjectValidated() throws {
        let t = try newTicket()
        #expect(throws: TicketError.self) { try t.applying(TicketPatch(subject: ""), ctx()) }
        #expect(throws: TicketError.self) { try t.applying(TicketPatch(topic: "Bad Topic"), ctx()) }
        #expect(throws: TicketError.self) { try t.applying(TicketPatch(assignee: .some("no spaces")), ctx()) }
    }

    @Test("REGISTERED sets registeredAt and the 59-FZ clocks")
    func register() throws {
        let t = try newTicket(.web, regime: .appeal59FZ)
        #expect(t.status == .new && t.deadlines.answerBy == nil)
        let at = friNoonUTC + 5 * hour
        let (r, _) = try t.applying(TicketPatch(status: .registered), ctx(at))
        #expect(r.registeredAt == at)
        #expect(r.deadlines.forwardBy == at + 7 * day)
        #expect(r.deadlines.answerBy == at + 30 * day)
        #expect(r.deadlines.registerBy == t.deadlines.registerBy)
        let c = try newTicket(.web)
        let (rc, _) = try c.applying(TicketPatch(status: .registered), ctx(at))
        #expect(rc.registeredAt == at && rc.deadlines.answerBy == nil)
    }

    @Test("DEFERRED sets callbackBy 8 working hours ahead and records it")
    func deferral() throws {
        let t = try newTicket(.phone)
        let fri16Irkutsk = 1_795_132_800_000 + 8 * hour
        let (d, changes) = try t.applying(TicketPatch(status: .deferred), ctx(fri16Irkutsk))
        // Friday 16:00 Irkutsk + 8 working hours = Monday 15:00 Irkutsk = Monday 07:00 UTC
        let monday15 = 1_795_392_000_000 + 7 * hour
        // and from Friday 12:00 Irkutsk: 6 h on Friday, 2 h on Monday → Monday 11:00 Irkutsk = 03:00 UTC
        let (d12, _) = try t.applying(TicketPatch(status: .deferred), ctx(friNoonUTC))
        #expect(d12.deadlines.callbackBy == 1_795_392_000_000 + 3 * hour)
        #expect(d.deadlines.callbackBy == monday15)
        #expect(d.deadlines.next(for: d.status) == monday15)
        #expect(changes.contains(FieldChange(field: "deadlines.callbackBy", old: nil, new: String(monday15))))
        #expect(changes.contains(FieldChange(field: "status", old: "REGISTERED", new: "DEFERRED")))
        #expect(d.version == t.version + 1)
        let appeal = try newTicket(.phone, regime: .appeal59FZ)
        #expect(throws: TicketError.deferralOnlyForConsultations) { try appeal.applying(TicketPatch(status: .deferred), ctx()) }
    }

    @Test("forbidden transitions are refused by the lifecycle")
    func transitions() throws {
        let t = try newTicket()
        #expect(throws: TicketError.transitionNotAllowed(from: .new, to: .closed)) {
            try t.applying(TicketPatch(status: .closed), ctx())
        }
        #expect(throws: TicketError.transitionNeedsWorkflow(from: .new, to: .merged, workflow: .merge)) {
            try t.applying(TicketPatch(status: .merged), ctx())
        }
    }

    @Test("the answer deadline extends once, by 1…30 days, for registered appeals")
    func extendAnswer() throws {
        let t = try newTicket(.phone, regime: .appeal59FZ)
        let (e, changes) = try t.applying(TicketPatch(extendAnswerByDays: 10), ctx())
        #expect(e.deadlines.answerBy == friNoonUTC + 40 * day)
        #expect(changes == [FieldChange(field: "deadlines.answerBy", old: String(friNoonUTC + 30 * day),
                                        new: String(friNoonUTC + 40 * day))])
        #expect(throws: TicketError.extensionAlreadyUsed) { try e.applying(TicketPatch(extendAnswerByDays: 1), ctx()) }
        #expect(throws: TicketError.self) { try t.applying(TicketPatch(extendAnswerByDays: 0), ctx()) }
        #expect(throws: TicketError.self) { try t.applying(TicketPatch(extendAnswerByDays: 31), ctx()) }
        let unregistered = try newTicket(.web, regime: .appeal59FZ)
        #expect(throws: TicketError.extensionNotApplicable) { try unregistered.applying(TicketPatch(extendAnswerByDays: 5), ctx()) }
        let consultation = try newTicket(.phone)
        #expect(throws: TicketError.extensionNotApplicable) { try consultation.applying(TicketPatch(extendAnswerByDays: 5), ctx()) }
    }

    @Test("TRANSFERRED_OUT and MERGED tickets refuse every patch")
    func readOnlyMirror() throws {
        var t = try newTicket(.phone)
        for s in [TicketStatus.transferredOut, .merged] {
            t.status = s
            for p in [TicketPatch(priority: .high), TicketPatch(assignee: .some("x")), TicketPatch(status: .inWork),
                      TicketPatch(topic: "other"), TicketPatch(priority: .normal)] {
                #expect(throws: TicketError.readOnlyMirror(status: s)) { try t.applying(p, ctx()) }
            }
        }
    }

    @Test("a refused patch changes nothing even when an earlier field was valid")
    func refusalIsWhole() throws {
        let t = try newTicket(.phone)
        // priority is fine, status is not: the whole patch is refused (no partial ticket escapes)
        #expect(throws: TicketError.transitionNotAllowed(from: .registered, to: .reopened)) {
            try t.applying(TicketPatch(status: .reopened, priority: .high), ctx())
        }
    }
}
