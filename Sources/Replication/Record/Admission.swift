import CaseModel

/// A part of a remote delta refused by admission, for the log and the metrics.
public struct PartRefusal: Hashable, Sendable {
    public enum Part: Hashable, Sendable {
        case register(Int)
        /// A child, by its index in the delta's children.
        case child(Int)
        /// The record as a whole (its authority refused: no part of it is judged).
        case record
    }
    public let recordID: RecordID
    public let refusal: Refusal
    public var part: Part = .record
    /// The organisation of the write's author, where the directory knows it.
    public var authorOrganisation: String?
}

extension RecordSchema {
    /// What of a checked delta received from `sender` may be merged (DESIGN principle
    /// 3): every write must come from an organisation that plays one of the part's
    /// roles for this record (its own registers' or `grants`'), be relayed by a node of
    /// the author's own organisation, of this node's, or of the record's home
    /// organisation, and carry a stamp no further than `maxSkew` ahead of `now`. A
    /// register is admitted whole or not at all; a child alone.
    ///
    /// What a node of the record's home organisation sends a partner is taken as the home
    /// took it, the author's entitlement not judged again: a ticket travels only from its
    /// origin (proto/README.md §9) and a partner holds only the transfers to itself, so it
    /// can judge neither the region that took the request over by redirect nor the writes
    /// the origin made while it still owned the request; the origin holds every transfer
    /// of it and judged them all. A node of this node's own organisation may relay any
    /// organisation's writes, which are then judged here (a node of the organisation may
    /// be wrong or hostile too); the home organisation's own writes relayed by its own
    /// nodes are taken as the relaying node took them, and so are the writes a node of a
    /// partner relays to another node of that partner (but for the register naming the home).
    ///
    /// Only what would change this replica is judged: a part it already holds is passed
    /// over, whoever relays it. Authority is judged against this replica's copy (`local`; the delta itself for
    /// a record not seen before), extended by the delta's own authority registers once
    /// those are admitted: an owner change and the new owner's first edit may arrive
    /// together.
    public func admit(_ delta: RecordDelta, from sender: NodeID, local: RecordState?, directory: Directory,
                      now: Millis, maxSkew: Millis, grants: Grants = .none,
                      localOrganisation: String? = nil) -> (RecordDelta, [PartRefusal]) {
        var refusals: [PartRefusal] = []
        let senderOrg = directory.org(sender)
        var homeOrganisation: String?
        // Most writes of a delta are one node's: its organisation is looked up once.
        var lastNode: NodeID?
        var lastOrg: String?
        var part = PartRefusal.Part.record

        func allowed(_ dot: Dot, _ entitled: (String) -> Bool, namesHome: Bool = false, _ path: @autoclosure () -> String) -> Bool {
            if dot.node != lastNode {
                lastNode = dot.node
                lastOrg = directory.org(dot.node)
            }
            guard let authorOrg = lastOrg else {
                refusals.append(PartRefusal(recordID: delta.id, refusal: Refusal(
                    .cannotSpeakFor, "\(path()): \(sender) may not relay writes of \(dot.node)")))
                return false
            }
            // What a node of the record's home organisation sends a partner is taken as the
            // home took it (its own writes, and those of the organisations it passed the
            // record to).
            let fromHome = senderOrg != nil && senderOrg == homeOrganisation && senderOrg != localOrganisation
            guard authorOrg == senderOrg || (senderOrg != nil && senderOrg == localOrganisation) || fromHome else {
                refusals.append(PartRefusal(recordID: delta.id, refusal: Refusal(
                    .cannotSpeakFor, "\(path()): \(sender) may not relay writes of \(dot.node)")))
                return false
            }
            // The home organisation's own writes, relayed by its own nodes, are taken as the
            // relaying node took them (`RecordSchema.homeRole`).
            let ours = homeOrganisation != nil && homeOrganisation == localOrganisation
                && authorOrg == localOrganisation && senderOrg == localOrganisation
            // A partner's nodes hold the same transfers of a record homed elsewhere, and
            // its first node took some writes as the home sent them (an owner the home's
            // transfer to a third organisation made, which no partner can judge): another
            // node of the partner takes them as that node did, or the two would never
            // agree. The register naming the home is still judged (a record fabricated to
            // claim a foreign home is refused by it), and the home organisation judges
            // everything.
            let sameOrganisationForeignHome = !namesHome && homeOrganisation != nil && homeOrganisation != localOrganisation
                && senderOrg != nil && senderOrg == localOrganisation
            guard ours || fromHome || sameOrganisationForeignHome || entitled(authorOrg) else {
                refusals.append(PartRefusal(recordID: delta.id, refusal: Refusal(
                    .notAuthorised, "\(path()): organisation \(authorOrg) of \(dot.node) does not write it"),
                    part: part, authorOrganisation: authorOrg))
                return false
            }
            let ahead = dot.stamp.millis - now
            guard ahead <= maxSkew else {
                refusals.append(PartRefusal(recordID: delta.id, refusal: Refusal(
                    .stampTooFarAhead, "\(path()): stamp of \(dot.node) is \(ahead) ms ahead of this node's clock")))
                return false
            }
            return true
        }

        // What is admitted: the delta itself until a part of it is passed over or refused,
        // then a copy without those parts (a delta admitted whole is not copied).
        var out = delta
        var dropped = false
        func drop(register i: Int) {
            out.state.registers[i] = Register()
            dropped = true
        }
        /// An authority register the home role writes (a ticket's header): it says which
        /// organisation is the record's home.
        func namesHome(_ i: Int) -> Bool {
            guard let homeRole, authorityRegisters.contains(i) else { return false }
            return registers[i].writers.contains(homeRole)
        }
        func admitRegister(_ i: Int, _ roles: [Role: String]) {
            let r = delta.state.registers[i]
            guard !r.isEmpty else { return }
            // What changes nothing here needs no admission: a register this replica holds
            // already (every delta carries the authority registers, whoever relays it).
            if let local, local.registers[i].merged(r) == local.registers[i] { return drop(register: i) }
            let writers = registers[i].writers
            part = .register(i)
            // The versions this replica has seen (held, or superseded by a write it holds)
            // were judged when they came, and the merge keeps nothing of them that is not
            // here already: only the new ones are judged. A partner that took the origin's
            // owner write from the origin and sends the register back with its own write
            // is not refused for relaying the origin's (issue 18: the origin then never had
            // the partner's write, and their digests differed for good). A register that
            // brings no new version but would change this replica (a context that claims
            // to supersede what is here) is judged whole, as before.
            // (A version of a dot held here with another value, a forged variant, is judged.)
            var judged = r.versions
            if let here = local?.registers[i] {
                judged = r.versions.filter { v in
                    guard here.seen.contains(v.dot) else { return true }
                    return here.versions.contains { $0.dot == v.dot && $0.value != v.value }
                }
            }
            if judged.isEmpty { judged = r.versions }
            for v in judged where !allowed(v.dot, { grants.entitles($0, among: writers, roles: roles) },
                                           namesHome: namesHome(i), "registers[\(registers[i].name)]") {
                return drop(register: i)
            }
        }

        // The roles as this replica knows them, then as the admitted authority registers make them.
        let base = local ?? delta.state
        let before = roles(base, directory)
        homeOrganisation = homeRole.flatMap { before[$0] }
        for i in authorityRegisters { admitRegister(i, before) }
        // A record not seen before whose authority was refused has no one entitled to
        // any part of it: it is refused for that reason alone, not part by part.
        if local == nil && !refusals.isEmpty {
            return (RecordDelta(state: emptyState(delta.id)), refusals.map { r in var r = r; r.part = .record; return r })
        }
        // Unchanged authority (a new record admitted whole, or an edit that touches
        // neither header nor owner) needs no second reading of it.
        let authorityChanged = authorityRegisters.contains { !out.state.registers[$0].isEmpty }
        let after = (local == nil && !dropped) || !authorityChanged
            ? before : roles(local.map { $0.merged(out.state) } ?? out.state, directory)
        for i in registers.indices where !authorityRegisters.contains(i) { admitRegister(i, after) }

        if !delta.children.isEmpty {
            var admitted = [Bool](repeating: true, count: delta.children.count)
            for (k, c) in delta.children.enumerated() {
                guard let coll = collection(number: UInt64(c.collection)) else { admitted[k] = false; continue }
                part = .child(k)
                admitted[k] = allowed(c.dot, { grants.entitles($0, among: coll.writers, roles: after) },
                                      "children[\(coll.name)/\(c.id)]")
            }
            if admitted.contains(false) { out.children = delta.children.indices.filter { admitted[$0] }.map { delta.children[$0] } }
        }
        return (out, refusals)
    }
}
