import Testing
@testable import CaseModel

/// The lifecycle of DOMAIN.md written out independently of `Lifecycle.rules`.
private enum Expected {
    typealias S = TicketStatus
    /// Operator edits of the status field.
    static let operatorEdits: [(S, S)] = [
        (.new, .registered),
        (.registered, .inWork), (.registered, .deferred), (.registered, .closed),
        (.inWork, .waiting), (.inWork, .answered), (.inWork, .deferred),
        (.waiting, .inWork),
        (.deferred, .inWork), (.deferred, .answered), (.deferred, .closed),
        (.answered, .closed), (.answered, .inWork),
        (.closed, .reopened),
        (.reopened, .inWork), (.reopened, .answered),
    ]
    /// Only the transfer workflow may make these.
    static let transfers: [(S, S)] = [
        (.registered, .transferPending), (.inWork, .transferPending), (.reopened, .transferPending),
        (.transferPending, .transferredOut), (.transferPending, .inWork),
        (.transferredOut, .inWork),
    ]
    /// Only the merge workflow may make these.
    static let merges: [(S, S)] = [
        (.new, .merged), (.registered, .merged), (.inWork, .merged), (.waiting, .merged),
        (.deferred, .merged), (.answered, .merged), (.closed, .merged), (.reopened, .merged),
    ]

    static func cause(_ from: S, _ to: S) -> Lifecycle.Cause? {
        if operatorEdits.contains(where: { $0 == (from, to) }) { return .operatorEdit }
        if transfers.contains(where: { $0 == (from, to) }) { return .transfer }
        if merges.contains(where: { $0 == (from, to) }) { return .merge }
        return nil
    }
}

private let causes: [Lifecycle.Cause] = [.operatorEdit, .transfer, .merge]

private func outcome(_ from: TicketStatus, _ to: TicketStatus, _ regime: LegalRegime,
                     _ cause: Lifecycle.Cause) -> TicketError? {
    do {
        try Lifecycle.check(from: from, to: to, regime: regime, cause: cause)
        return nil
    } catch {
        return error
    }
}

@Suite("Lifecycle table")
struct LifecycleTests {
    @Test("the expected table has no duplicate pairs")
    func expectedTableIsConsistent() {
        let all = Expected.operatorEdits + Expected.transfers + Expected.merges
        let keys = Set(all.map { "\($0.0.rawValue)>\($0.1.rawValue)" })
        #expect(keys.count == all.count)
        #expect(all.count == 16 + 6 + 8)
    }

    @Test("every (from, to, cause) of a consultation is accepted or refused exactly as the table says")
    func everyPairConsultation() {
        var mismatches: [String] = []
        var checked = 0
        var accepted = 0
        for from in TicketStatus.allCases {
            for to in TicketStatus.allCases {
                for cause in causes {
                    checked += 1
                    let got = outcome(from, to, .consultation, cause)
                    let want: TicketError?
                    switch Expected.cause(from, to) {
                    case nil: want = .transitionNotAllowed(from: from, to: to)
                    case let needed? where needed == cause: want = nil
                    case let needed?: want = .transitionNeedsWorkflow(from: from, to: to, workflow: needed)
                    }
                    if want == nil { accepted += 1 }
                    if got != want {
                        mismatches.append("\(from.rawValue)→\(to.rawValue) \(cause): got \(String(describing: got)), want \(String(describing: want))")
                    }
                }
            }
        }
        #expect(checked == 11 * 11 * 3)
        #expect(accepted == 30)
        #expect(mismatches.isEmpty, "\(mismatches.joined(separator: "\n"))")
    }

    @Test("every (from, to, cause) of a 59-FZ appeal: the table plus the appeal guards")
    func everyPairAppeal() {
        var mismatches: [String] = []
        for from in TicketStatus.allCases {
            for to in TicketStatus.allCases {
                for cause in causes {
                    let got = outcome(from, to, .appeal59FZ, cause)
                    var want: TicketError?
                    switch Expected.cause(from, to) {
                    case nil: want = .transitionNotAllowed(from: from, to: to)
                    case let needed? where needed == cause: want = nil
                    case let needed?: want = .transitionNeedsWorkflow(from: from, to: to, workflow: needed)
                    }
                    if want == nil {
                        if to == .closed && (from == .registered || from == .deferred) {
                            want = .appealNeedsAnswer(from: from)
                        } else if to == .deferred {
                            want = .deferralOnlyForConsultations
                        }
                    }
                    if got != want {
                        mismatches.append("\(from.rawValue)→\(to.rawValue) \(cause): got \(String(describing: got)), want \(String(describing: want))")
                    }
                }
            }
        }
        #expect(mismatches.isEmpty, "\(mismatches.joined(separator: "\n"))")
    }

    @Test("a refused transition names both states")
    func refusalNamesBothStates() {
        #expect(throws: TicketError.transitionNotAllowed(from: .new, to: .closed)) {
            try Lifecycle.check(from: .new, to: .closed, regime: .consultation, cause: .operatorEdit)
        }
        #expect(throws: TicketError.transitionNotAllowed(from: .closed, to: .inWork)) {
            try Lifecycle.check(from: .closed, to: .inWork, regime: .consultation, cause: .operatorEdit)
        }
        #expect(throws: TicketError.transitionNotAllowed(from: .merged, to: .inWork)) {
            try Lifecycle.check(from: .merged, to: .inWork, regime: .consultation, cause: .merge)
        }
        let e = TicketError.transitionNotAllowed(from: .waiting, to: .closed)
        #expect(e.message.contains("WAITING") && e.message.contains("CLOSED"))
        #expect(e.field == "status")
    }

    @Test("transfer and merge transitions need their workflow")
    func workflows() {
        #expect(throws: TicketError.transitionNeedsWorkflow(from: .inWork, to: .transferPending, workflow: .transfer)) {
            try Lifecycle.check(from: .inWork, to: .transferPending, regime: .consultation, cause: .operatorEdit)
        }
        #expect(throws: TicketError.transitionNeedsWorkflow(from: .answered, to: .merged, workflow: .merge)) {
            try Lifecycle.check(from: .answered, to: .merged, regime: .consultation, cause: .operatorEdit)
        }
        #expect(throws: Never.self) {
            try Lifecycle.check(from: .transferPending, to: .transferredOut, regime: .appeal59FZ, cause: .transfer)
        }
        #expect(Lifecycle.cause(from: .transferredOut, to: .inWork) == .transfer)
        #expect(Lifecycle.cause(from: .merged, to: .inWork) == nil)
    }

    @Test("the workflow refusal names the workflow that may make the transition")
    func workflowMessage() {
        let transfer = TicketError.transitionNeedsWorkflow(from: .inWork, to: .transferPending, workflow: .transfer)
        #expect(transfer.message.contains("transfer workflow"))
        let merge = TicketError.transitionNeedsWorkflow(from: .inWork, to: .merged, workflow: .merge)
        #expect(merge.message.contains("merge of duplicates"))
        // A transfer or merge asking for an operator-only transition (e.g. REGISTERED → IN_WORK):
        // the needed cause is .operatorEdit, and the message must not send the caller to the merge workflow.
        do {
            try Lifecycle.check(from: .registered, to: .inWork, regime: .consultation, cause: .transfer)
            Issue.record("a transfer made an operator-only transition")
        } catch {
            #expect(error == .transitionNeedsWorkflow(from: .registered, to: .inWork, workflow: .operatorEdit))
            #expect(!error.message.contains("merge"), "\(error.message)")
        }
    }

    @Test("appeal guards: a 59-FZ appeal cannot close without an answer, nor be deferred")
    func regimeGuards() {
        #expect(throws: TicketError.appealNeedsAnswer(from: .registered)) {
            try Lifecycle.check(from: .registered, to: .closed, regime: .appeal59FZ, cause: .operatorEdit)
        }
        #expect(throws: TicketError.appealNeedsAnswer(from: .deferred)) {
            try Lifecycle.check(from: .deferred, to: .closed, regime: .appeal59FZ, cause: .operatorEdit)
        }
        #expect(throws: TicketError.deferralOnlyForConsultations) {
            try Lifecycle.check(from: .registered, to: .deferred, regime: .appeal59FZ, cause: .operatorEdit)
        }
        #expect(throws: TicketError.deferralOnlyForConsultations) {
            try Lifecycle.check(from: .inWork, to: .deferred, regime: .appeal59FZ, cause: .operatorEdit)
        }
        // A consultation may do all of these.
        for (f, t) in [(TicketStatus.registered, TicketStatus.closed), (.deferred, .closed), (.registered, .deferred), (.inWork, .deferred)] {
            #expect(throws: Never.self) { try Lifecycle.check(from: f, to: t, regime: .consultation, cause: .operatorEdit) }
        }
        // An answered appeal may close.
        #expect(throws: Never.self) { try Lifecycle.check(from: .answered, to: .closed, regime: .appeal59FZ, cause: .operatorEdit) }
    }

    @Test("status codes round-trip and are dense")
    func statusCodes() {
        for (i, s) in TicketStatus.allCases.enumerated() {
            #expect(Int(s.code) == i)
            #expect(TicketStatus(code: s.code) == s)
        }
        #expect(TicketStatus(code: UInt8(TicketStatus.allCases.count)) == nil)
        #expect(TicketStatus.answered.isOpen == false && TicketStatus.waiting.isOpen)
    }
}
