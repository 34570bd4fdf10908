import Access
import CaseModel
import Testing

/// The permission table as the issue states it, role by role; and how a patch's fields
/// add actions. Each expectation is the sentence, not a copy of the table.
@Suite struct PermissionTests {
    func principal(_ roles: Set<Role>) -> Principal {
        Principal(subject: "op-ivanova", organisation: "38", roles: roles, expiresAt: 0)
    }

    func allowed(_ action: Action, _ roles: Set<Role>) -> Bool {
        if case .allowed = PermissionTable.decide(action, for: principal(roles)) { return true }
        return false
    }

    static let personalData: Set<Action> = [.ticketsList, .ticketRead, .notesRead, .historyRead, .transfersRead,
                                            .changesRead, .conflictsRead, .personalDataUnmask, .personalDataExport]

    @Test func operatorsWorkTicketsAndTransfersButDoNotAssignReopenExtendResolveOrExport() {
        for a in [Action.ticketCreate, .ticketRead, .ticketEdit, .noteAdd, .notesRead, .transferSend, .transferAnswer,
                  .transferCancel, .personalDataUnmask] {
            #expect(allowed(a, [.operator]), "\(a)")
        }
        for a in [Action.ticketAssign, .ticketReopen, .ticketExtendDeadline, .conflictResolve, .personalDataExport,
                  .auditRead, .healthDetails, .metricsRead, .replicationRead, .replicationRepair] {
            #expect(!allowed(a, [.operator]), "\(a)")
        }
    }

    @Test func supervisorsAlsoAssignReopenExtendResolveAndExport() {
        for a in [Action.ticketAssign, .ticketReopen, .ticketExtendDeadline, .conflictResolve, .personalDataExport] {
            #expect(allowed(a, [.supervisor]), "\(a)")
        }
        // everything an operator may, a supervisor may
        for a in Action.allCases where allowed(a, [.operator]) { #expect(allowed(a, [.supervisor]), "\(a)") }
        #expect(!allowed(.auditRead, [.supervisor]) && !allowed(.metricsRead, [.supervisor]))
    }

    @Test func auditorsReadTheAccessLogOnly() {
        #expect(Action.allCases.filter { allowed($0, [.auditor]) } == [.auditRead])
    }

    @Test func opsNeverSeePersonalData() {
        #expect(Set(Action.allCases.filter { allowed($0, [.ops]) }) == [.healthDetails, .replicationRead, .replicationRepair, .metricsRead])
        for a in PermissionTests.personalData { #expect(!allowed(a, [.ops]), "\(a)") }
    }

    @Test func noRoleMayDoNothingAndEveryActionHasARole() {
        for a in Action.allCases {
            #expect(!allowed(a, []), "\(a)")
            #expect(!PermissionTable.roles(for: a).isEmpty, "\(a) is granted to nobody")
        }
    }

    @Test func theLeastRoleThatAllowsIsRecordedAndADenialNamesWhoWouldBeAllowed() {
        #expect(PermissionTable.decide(.ticketEdit, for: principal([.supervisor, .operator])) == .allowed(by: .operator))
        #expect(PermissionTable.decide(.ticketAssign, for: principal([.supervisor, .operator])) == .allowed(by: .supervisor))
        #expect(PermissionTable.decide(.metricsRead, for: principal([.operator, .ops])) == .allowed(by: .ops))
        #expect(PermissionTable.decide(.ticketAssign, for: principal([.operator])) == .denied(needs: [.supervisor]))
        #expect(PermissionTable.decide([.ticketEdit, .ticketAssign], for: principal([.operator, .supervisor]))
                == .allowed(by: .supervisor))
        #expect(PermissionTable.decide([.ticketEdit, .ticketReopen], for: principal([.operator]))
                == .deniedAction(.ticketReopen, needs: [.supervisor]))
    }

    @Test func aPatchNeedsWhatItsFieldsNeed() {
        let me = "op-ivanova"
        #expect(TicketPatch(priority: .high).actions(by: me) == [.ticketEdit])
        #expect(TicketPatch(assignee: .some(me)).actions(by: me) == [.ticketEdit])
        #expect(TicketPatch(assignee: .some("op-petrova")).actions(by: me) == [.ticketEdit, .ticketAssign])
        #expect(TicketPatch(assignee: .some(nil)).actions(by: me) == [.ticketEdit, .ticketAssign])
        #expect(TicketPatch(status: .reopened).actions(by: me) == [.ticketEdit, .ticketReopen])
        #expect(TicketPatch(status: .inWork).actions(by: me) == [.ticketEdit])
        #expect(TicketPatch(extendAnswerByDays: 30).actions(by: me) == [.ticketEdit, .ticketExtendDeadline])
    }
}
