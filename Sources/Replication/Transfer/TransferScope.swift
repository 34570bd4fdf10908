import CaseModel

/// What one organisation may hold of a ticket, decided by the ticket's transfers alone
/// (DOMAIN.md: a fund receives only the tickets transferred to it, and only the citizen
/// fields in that transfer's scope). Pure: the store hands it the transfers it holds.
///
/// A transfer is one of the ticket's `Link`s: its order (who sent it to whom, what kind,
/// which citizen fields) and the state its steps add up to.
public struct TicketScope: Sendable, Equatable {
    public struct Link: Sendable, Equatable {
        public var order: TransferOrder
        public var state: TransferState
        /// The receiver's node that accepted it first (nil: not accepted, or not known).
        public var acceptedBy: NodeID?
        public init(order: TransferOrder, state: TransferState, acceptedBy: NodeID? = nil) {
            self.order = order
            self.state = state
            self.acceptedBy = acceptedBy
        }
    }

    /// Who handles a ticket, as its transfers decide it on every replica alike (issue 18):
    /// the receiver of its REDIRECT that stands ACCEPTED or COMPLETED, else its origin.
    /// A ticket is redirected only by its origin and only while it handles it, so at most
    /// one redirect stands; should two (the origin's two nodes each sent one while apart,
    /// and both were accepted), the one sent first stands, then the lesser organisation
    /// id, so that every replica names the same. A rejected, cancelled or returned
    /// redirect gives the ticket back to its origin whatever was written on the way.
    public struct Handler: Sendable, Equatable {
        public let organisation: String
        /// The redirect that made `organisation` the handler (nil: the origin's own).
        public let redirect: Link?
    }

    public static func handler(origin: String, links: [Link]) -> Handler {
        guard let first = standing(origin: origin, links: links).min(by: { a, b in
            a.order.createdAt != b.order.createdAt ? a.order.createdAt < b.order.createdAt
                : a.order.toOrganisation < b.order.toOrganisation
        }) else { return Handler(organisation: origin, redirect: nil) }
        return Handler(organisation: first.order.toOrganisation, redirect: first)
    }

    /// Who handles a ticket as a node of `mine` can tell. The origin holds every redirect
    /// of the ticket and derives it (`handler(origin:links:)`). Any other organisation
    /// holds only the transfers to itself (a fund with a COPY of a ticket another
    /// organisation took over sees no REDIRECT at all), so its transfers tell it only
    /// whether it handles the ticket itself; when they do not, the owner register names
    /// who does (the origin keeps it to what it derived, `CaseStore.keepOwnerRegister`),
    /// unless the register still names `mine`, whose redirect no longer stands.
    ///
    /// A receiver whose redirect stands cannot see a rival one: the origin's two nodes may
    /// each have sent one while apart, and both been accepted. The origin, which sees
    /// both, names the handler in the register (`registeredByOrigin`: the register's
    /// value was written by a node of the origin); a receiver it does not name there has
    /// been overruled, and handles the ticket no more.
    public static func handler(origin: String, links: [Link], mine: String, registered: String?,
                               registeredByOrigin: Bool = false) -> Handler {
        let derived = handler(origin: origin, links: links)
        guard mine != origin else { return derived }
        if derived.organisation == mine {
            guard registeredByOrigin, let registered, registered != mine else { return derived }
            return Handler(organisation: registered, redirect: nil)
        }
        if let registered, registered != mine { return Handler(organisation: registered, redirect: nil) }
        return Handler(organisation: origin, redirect: nil)
    }

    /// How many REDIRECTs stand (ACCEPTED or COMPLETED) among `links`: more than one only
    /// when the origin's nodes each sent one while apart.
    public static func standingRedirects(origin: String, links: [Link]) -> Int {
        standing(origin: origin, links: links).count
    }

    private static func standing(origin: String, links: [Link]) -> [Link] {
        links.filter { l in
            l.order.kind == .redirect && l.order.fromOrganisation == origin && (l.state == .accepted || l.state == .completed)
        }
    }

    /// The citizen fields the partner may hold (the reference always: without it the
    /// receiver cannot tell whom the request is about, and it is no document number).
    public let fields: Set<CitizenField>

    /// What a partner sends the ticket's home: every citizen field (the home's own), and
    /// the children any partner may see (never the partner's internal notes).
    public static let home = TicketScope(fields: Set(CitizenField.allCases))

    /// A transfer keeps its partner in scope while it is under way or done; a
    /// cancelled, rejected or returned one no longer does (updates stop and the
    /// receiver purges what it received).
    public static func isLive(_ s: TransferState) -> Bool {
        switch s {
        case .sent, .delivered, .accepted, .completed: return true
        case .cancelled, .rejected, .returned: return false
        }
    }

    /// What `partner` may receive of the ticket from a node of `mine`: nil when no live
    /// transfer joins the two organisations.
    public static func of(partner: String, mine: String, links: [Link]) -> TicketScope? {
        var fields: Set<CitizenField> = [.ref]
        var live = false
        for l in links where isLive(l.state) {
            let o = l.order
            guard (o.fromOrganisation == mine && o.toOrganisation == partner)
                || (o.fromOrganisation == partner && o.toOrganisation == mine) else { continue }
            live = true
            fields.formUnion(o.scope)
        }
        return live ? TicketScope(fields: fields) : nil
    }

    /// The organisations a ticket's change at a node of `mine` may concern: the other
    /// side of every transfer `mine` is a side of (in any state; what is sent is decided
    /// when it is read, by `of`).
    public static func partners(of mine: String, links: [Link]) -> Set<String> {
        var out = Set<String>()
        for l in links {
            if l.order.fromOrganisation == mine { out.insert(l.order.toOrganisation) }
            if l.order.toOrganisation == mine { out.insert(l.order.fromOrganisation) }
        }
        return out
    }

    /// Roles the ticket's transfers grant (`TicketRecord.partner`, `.successor`): every
    /// side of a transfer is a partner; both sides of a REDIRECT that was accepted
    /// (completed, returned) may write the owner's registers: the receiver takes
    /// ownership, the sender takes it back on a return. Admission grants a former owner
    /// too, so that a write it made while it owned the ticket (concurrently with the
    /// acceptance, in a partition) is kept by every replica alike, not refused by some:
    /// replicas converge and the rival values are listed as a conflict. A node's own
    /// edits are held to the current owner (`CaseStore.checkEntitled`).
    public static func grants(_ links: [Link]) -> Grants {
        var partners = Set<String>(), successors = Set<String>()
        for l in links {
            partners.insert(l.order.fromOrganisation)
            partners.insert(l.order.toOrganisation)
            guard l.order.kind == .redirect else { continue }
            switch l.state {
            case .accepted, .completed, .returned:
                successors.insert(l.order.toOrganisation)
                successors.insert(l.order.fromOrganisation)
            default: break
            }
        }
        return Grants([TicketRecord.partner: partners, TicketRecord.successor: successors])
    }

    /// The status a node of `mine` shows for a ticket it redirected (DOMAIN.md):
    /// TRANSFER_PENDING until the receiver accepts (read-only here), then
    /// TRANSFERRED_OUT (a mirror of the receiver's status); nil when no redirect of
    /// `mine` is under way or accepted, and the ticket's own status stands.
    public static func shownStatus(mine: String, links: [Link]) -> TicketStatus? {
        var shown: TicketStatus?
        for l in links where l.order.kind == .redirect && l.order.fromOrganisation == mine {
            switch l.state {
            case .sent, .delivered: return .transferPending
            case .accepted, .completed: shown = .transferredOut
            case .cancelled, .rejected, .returned: break
            }
        }
        return shown
    }

    /// The ticket's registers a partner receives: everything but the citizen's details
    /// outside the scope.
    public var registers: RegisterSet {
        var s = TicketRecord.schema.allRegisters
        for r in TicketRecord.citizenRegisters { s.remove(r.rawValue) }
        for f in fields { s.insert(TicketRecord.Register.holding(f).rawValue) }
        return s
    }

    /// History a partner needs to follow the request: its creation, its status, its
    /// owner and its transfers; not who it was assigned to, nor edits of what the
    /// citizen said, nor the existence of internal notes.
    public static func partnerNeeds(historyOf field: String) -> Bool {
        ["ticket", "status", "owner", "transfer"].contains(field) || field.hasPrefix("deadlines.")
    }

    /// Whether a child of the ticket goes to the partner: shared notes and the history
    /// it needs. A child that cannot be read goes nowhere.
    public func admits(_ c: Child, ticket: TicketID) -> Bool {
        switch c.collection {
        case TicketRecord.Collection.notes.rawValue:
            return (try? TicketValues.note(c, ticket: ticket, checked: false))?.visibility == .shared
        case TicketRecord.Collection.history.rawValue:
            guard let e = try? TicketValues.event(c, ticket: ticket, checked: false) else { return false }
            return TicketScope.partnerNeeds(historyOf: e.field)
        default:
            return false
        }
    }
}
