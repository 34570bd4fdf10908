import CaseModel

/// Which organisation each node belongs to (a region's code or a fund's), from the topology.
public struct Directory: Sendable {
    public let organisation: [NodeID: String]
    public init(_ organisation: [NodeID: String]) { self.organisation = organisation }
    public func org(_ node: NodeID) -> String? { organisation[node] }
}

/// A remote write refused on arrival, for the log and the metrics.
public struct Rejection: Hashable, Sendable {
    public enum Reason: Hashable, Sendable {
        /// The author's organisation does not write this field of this ticket.
        case notAuthorised(field: String, author: NodeID)
        /// The sending node may not relay writes of this author.
        case cannotSpeakFor(author: NodeID, sender: NodeID)
        /// The write's stamp is further ahead of local time than the clock accepts.
        case stampTooFarAhead(author: NodeID, aheadMillis: Millis)
    }
    public let ticketID: TicketID
    public let reason: Reason
}

extension ReplicatedTicket {
    /// What of a record received from `sender` may be merged: every write must come
    /// from an organisation entitled to that field (the origin's for what the citizen
    /// said, the owner's for handling), be relayed by a node of the author's own
    /// organisation, and carry a stamp no further than `maxSkew` ahead of `now`.
    /// `local` is this replica's copy (nil for a ticket not seen before): authority
    /// is judged against the origin and owner it records, not against the claims of
    /// the incoming record.
    public func admitted(from sender: NodeID, local: ReplicatedTicket?, directory: Directory, now: Millis,
                         maxSkew: Millis) -> (ReplicatedTicket, [Rejection]) {
        var rejections: [Rejection] = []
        let senderOrg = directory.org(sender)
        // The origin organisation is fixed by the first header; a new ticket's header
        // must be written by a node of the origin it names.
        let originOrg = (local?.header.value ?? header.value).flatMap { directory.org($0.originNode) }
        let ownerOrg = (local?.owner.value ?? owner.value).flatMap { directory.org($0) }

        func allowed(_ field: String, _ group: Field.Group, _ dot: Dot) -> Bool {
            let authorOrg = directory.org(dot.node)
            if authorOrg == nil || authorOrg != senderOrg {
                rejections.append(Rejection(ticketID: id, reason: .cannotSpeakFor(author: dot.node, sender: sender)))
                return false
            }
            let entitled = group == .origin ? originOrg : ownerOrg
            if authorOrg != entitled {
                rejections.append(Rejection(ticketID: id, reason: .notAuthorised(field: field, author: dot.node)))
                return false
            }
            let ahead = dot.stamp.millis - now
            if ahead > maxSkew {
                rejections.append(Rejection(ticketID: id, reason: .stampTooFarAhead(author: dot.node, aheadMillis: ahead)))
                return false
            }
            return true
        }
        func check<V>(_ r: Register<V>, _ f: Field) -> Register<V> {
            r.filtered { allowed(f.rawValue, f.group, $0.dot) }
        }
        var out = ReplicatedTicket(id: id)
        out.header = check(header, .header)
        out.statement = check(statement, .statement)
        out.citizen = check(citizen, .citizen)
        out.progress = check(progress, .progress)
        out.assignee = check(assignee, .assignee)
        out.priority = check(priority, .priority)
        out.topic = check(topic, .topic)
        out.owner = check(owner, .owner)
        // Notes and history: written by the origin's or the owner's organisation.
        func noteAllowed(_ node: NodeID, _ stamp: Stamp, _ what: String) -> Bool {
            let org = directory.org(node)
            let group: Field.Group = org == originOrg ? .origin : .owner
            return allowed(what, group, Dot(node: node, stamp: stamp))
        }
        // Removing the refused from a copy shares storage when nothing is refused.
        out.notes = notes
        for (id, n) in notes where !noteAllowed(n.node, n.stamp, "note") { out.notes[id] = nil }
        out.history = history
        for (id, e) in history where !noteAllowed(e.node, e.stamp, "history") { out.history[id] = nil }
        return (out, rejections)
    }
}
