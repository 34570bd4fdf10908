import CaseModel
import LMDB
import Replication

/// Who handles a ticket here, derived from its transfers (`TicketScope.handler`), never
/// from the order in which the writes of a handover arrived (issue 18: a completion on
/// one node of a fund that beat a return on its other left every replica with the
/// region as owner, read-only as transferred out; a second acceptance after a return
/// made the fund the owner again). The owner register still records who took it over
/// (its history says so), but the organisation that handles the ticket — the owner the
/// views show, and the one whose operators may edit it — is the transfers' to decide.
struct TicketHandling {
    /// The organisation that handles the ticket, and the node shown as its owner.
    let organisation: String
    let node: NodeID
    /// The redirect the handler took it over by (nil: the origin handles it).
    let redirect: TicketScope.Link?
}

extension CaseStore {
    /// Who handles the ticket, or nil when its transfers leave the owner register as it
    /// is (no transfer: the ticket never left its origin). `links`: the ticket's
    /// transfers, when the caller has them.
    func handling(_ record: StoredRecord, links known: [TicketScope.Link]? = nil,
                  _ txn: some TransactionProtocol) throws -> TicketHandling? {
        let id = record.state.id
        let links = try known ?? links(ofTicket: id, txn)
        guard !links.isEmpty else { return nil }
        let directory = configuration.directory
        guard let headerBytes = record.state.registers[TicketRecord.Register.header.rawValue].value,
              let header = try? TicketValues.header(headerBytes, checked: false) else { return nil }
        let origin = directory.org(header.originNode) ?? organisation
        let owner = record.state.registers[TicketRecord.Register.owner.rawValue]
        let registered = owner.value.flatMap { try? TicketValues.owner($0, checked: false) }
        let handler = TicketScope.handler(origin: origin, links: links, mine: organisation,
                                          registered: registered.flatMap { directory.org($0) },
                                          registeredByOrigin: owner.winner.map { directory.org($0.dot.node) == origin } ?? false)
        let node: NodeID
        if let registered, directory.org(registered) == handler.organisation {
            node = registered                                         // the register agrees
        } else if let redirect = handler.redirect {
            node = redirect.acceptedBy ?? registered ?? header.originNode
        } else {
            // Back with its origin: the node that sent the redirect that ended last.
            let ended = links.filter { $0.order.kind == .redirect && $0.order.fromOrganisation == origin }
                .max { $0.order.createdAt < $1.order.createdAt }
            node = ended?.order.fromNode ?? header.originNode
        }
        return TicketHandling(organisation: handler.organisation, node: node, redirect: handler.redirect)
    }

    /// The progress (status, registration, deadlines) the handler's organisation wrote:
    /// the register's winner when the handler wrote it, else its latest value the register
    /// still holds, else the origin's write made after the acceptance (its return's, which
    /// kept the receiver's deadlines), else what taking over means (REGISTERED at the
    /// acceptance, its 59-FZ clock from then; IN_WORK for an origin that got it back).
    func handledProgress(_ record: StoredRecord, _ h: TicketHandling, _ txn: some TransactionProtocol) throws -> ValueBytes? {
        let register = record.state.registers[TicketRecord.Register.progress.rawValue]
        let directory = configuration.directory
        guard let winner = register.winner else { return nil }
        if directory.org(winner.dot.node) == h.organisation { return winner.value }
        if let own = register.versions.last(where: { directory.org($0.dot.node) == h.organisation }) { return own.value }
        guard var progress = try? TicketValues.progress(winner.value, checked: false) else { return winner.value }
        if let redirect = h.redirect {
            let transfers = try transferIDs(ofTicket: record.state.id, txn).compactMap { try loadTransfer($0, txn) }
            let at = transfers.first { $0.order == redirect.order }?.steps.acceptedAt
            let regime = record.state.registers[TicketRecord.Register.header.rawValue].value
                .flatMap { try? TicketValues.header($0, checked: false).legalRegime } ?? .consultation
            // The origin wrote it after the acceptance: it took the ticket back on a return
            // that a completion on the receiver's other node then overruled, keeping the
            // receiver's registration and deadlines (an extension among them) as it saw
            // them. Those stand, with the status the origin gave (one the receiver can act on).
            if let at, winner.dot.stamp.millis >= at { return winner.value }
            progress.status = .registered
            if let at {
                progress.registeredAt = at
                progress.deadlines = Deadlines.onReceipt(receivedAt: at).registered(at: at, regime: regime)
            }
        } else {
            progress.status = .inWork
        }
        return TicketValues.encode(progress)
    }
}
