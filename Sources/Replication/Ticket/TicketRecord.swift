import CaseModel

/// The ticket kind's table (proto/ekc/replication/v2/ticket.proto): its registers,
/// who writes each, their byte budgets, checks and how a conflict is shown; its
/// collections. Adding a field of a ticket is a line here, a line in the proto and
/// its place in `Ticket.registerValues` / `materialise`.
public enum TicketRecord {
    public static let kind = RecordKindID(rawValue: 1)
    /// The origin organisation writes what the citizen said; the owner organisation how it is handled.
    public static let origin = Role("origin")
    public static let owner = Role("owner")
    /// Granted by the ticket's transfers (`Grants`), not told by its registers: an
    /// organisation it was transferred to or from adds notes and history; the receiver
    /// of its accepted REDIRECT writes the owner register, taking ownership.
    public static let partner = Role("partner")
    public static let successor = Role("successor")

    public enum Register: Int, CaseIterable, Sendable {
        case header, statement, citizen, progress, assignee, priority, topic, owner, citizenName, citizenSnils, citizenPhone

        /// The register holding one citizen detail of a transfer's personal-data scope.
        public static func holding(_ field: CitizenField) -> Register {
            switch field {
            case .ref: return .citizen
            case .name: return .citizenName
            case .snils: return .citizenSnils
            case .phone: return .citizenPhone
            }
        }
    }

    /// The registers that hold personal data of the citizen: a partner receives only
    /// those its transfers' scopes name.
    public static let citizenRegisters: [Register] = [.citizen, .citizenName, .citizenSnils, .citizenPhone]

    /// The organisation of a ticket's origin node, from the header's winning value.
    public static func originOrganisation(_ state: RecordState, _ directory: Directory) -> String? {
        guard let h = state.registers[Register.header.rawValue].value, let header = try? TicketValues.header(h, checked: false) else {
            return nil
        }
        return directory.org(header.originNode)
    }

    /// Whether a replica holds enough of a ticket to show it: every register but the
    /// citizen's details, which a partner holds only as far as its scope reaches.
    public static func isComplete<V>(_ winners: [V?]) -> Bool {
        winners.count == schema.registers.count && winners.indices.allSatisfy { i in
            winners[i] != nil || i == Register.citizenName.rawValue || i == Register.citizenSnils.rawValue
                || i == Register.citizenPhone.rawValue
        }
    }

    public enum Collection: UInt8, CaseIterable, Sendable {
        case notes = 1, history = 2
    }

    private static func checked<T>(_ decode: @escaping @Sendable (ValueBytes, Directory) throws(Refusal) -> T)
        -> @Sendable (ValueBytes, CheckContext) throws(Refusal) -> Void
    {
        { b, ctx throws(Refusal) in _ = try decode(b, ctx.directory) }
    }

    private static func shown<T>(_ decode: @escaping @Sendable (ValueBytes) throws(Refusal) -> T,
                                 _ show: @escaping @Sendable (T) -> String) -> @Sendable (ValueBytes) -> String {
        { b in (try? decode(b)).map(show) ?? "(unreadable)" }
    }

    /// The fields of a register holding several, named in `names`, each shown by `show`.
    private static func fields<T>(_ decode: @escaping @Sendable (ValueBytes) throws(Refusal) -> T, _ names: [String],
                                  _ show: @escaping @Sendable (T) -> [String?]) -> @Sendable (ValueBytes) -> [ShownField] {
        { b in
            guard let v = try? decode(b) else { return names.map { ShownField($0, "(unreadable)") } }
            return zip(names, show(v)).map { ShownField($0, $1) }
        }
    }

    private static func detail(_ number: UInt8, _ d: TicketValues.CitizenDetail) -> RegisterDescriptor {
        RegisterDescriptor(number: number, name: "citizen\(d.rawValue.prefix(1).uppercased())\(d.rawValue.dropFirst())", writer: origin, maxValueBytes: 260,
                           check: checked { b, _ throws(Refusal) in try TicketValues.citizenDetail(d, b) },
                           show: shown({ b throws(Refusal) in try TicketValues.citizenDetail(d, b, checked: false) }) { $0 ?? "none" })
    }

    public static let schema = RecordSchema(
        kind: kind, name: "ticket",
        registers: [
            RegisterDescriptor(number: 1, name: "header", writer: origin, maxValueBytes: 256,
                               check: checked { b, d throws(Refusal) in try TicketValues.header(b, directory: d) },
                               show: shown({ b throws(Refusal) in try TicketValues.header(b) }) { "\($0.number)" }),
            RegisterDescriptor(number: 2, name: "statement", writer: origin,
                               maxValueBytes: Budget.subjectBytes + Budget.statementBytes + 16,
                               check: checked { b, _ throws(Refusal) in try TicketValues.statement(b) },
                               show: shown({ b throws(Refusal) in try TicketValues.statement(b, checked: false) }) { $0.subject },
                               fields: fields({ b throws(Refusal) in try TicketValues.statement(b, checked: false) }, ["subject", "statement"]) {
                                   [$0.subject, $0.text]
                               }),
            RegisterDescriptor(number: 3, name: "citizen", writer: origin, maxValueBytes: 512,
                               check: checked { b, _ throws(Refusal) in try TicketValues.citizen(b) },
                               show: shown({ b throws(Refusal) in try TicketValues.citizen(b, checked: false) }) { $0?.ref ?? "none" }),
            RegisterDescriptor(number: 4, name: "progress", writers: [owner, successor], maxValueBytes: 128,
                               check: checked { b, _ throws(Refusal) in try TicketValues.progress(b) },
                               show: shown({ b throws(Refusal) in try TicketValues.progress(b) }) { $0.status.rawValue },
                               fields: fields({ b throws(Refusal) in try TicketValues.progress(b) }, ["status", "extensionDays"]) {
                                   [$0.status.rawValue, $0.deadlines.extensionDays == 0 ? nil : "\($0.deadlines.extensionDays)"]
                               }),
            RegisterDescriptor(number: 5, name: "assignee", writers: [owner, successor], maxValueBytes: 80,
                               check: checked { b, _ throws(Refusal) in try TicketValues.assignee(b) },
                               show: shown({ b throws(Refusal) in try TicketValues.assignee(b) }) { $0 ?? "none" }),
            RegisterDescriptor(number: 6, name: "priority", writers: [owner, successor], maxValueBytes: 8,
                               check: checked { b, _ throws(Refusal) in try TicketValues.priority(b) },
                               show: shown({ b throws(Refusal) in try TicketValues.priority(b) }) { $0.rawValue }),
            RegisterDescriptor(number: 7, name: "topic", writers: [owner, successor], maxValueBytes: 160,
                               check: checked { b, _ throws(Refusal) in try TicketValues.topic(b) },
                               show: shown({ b throws(Refusal) in try TicketValues.topic(b) }) { $0.topic },
                               fields: fields({ b throws(Refusal) in try TicketValues.topic(b) }, ["topic", "supportMeasure"]) {
                                   [$0.topic, $0.supportMeasure]
                               }),
            RegisterDescriptor(number: 8, name: "owner", writers: [owner, successor], maxValueBytes: 80,
                               check: checked { b, d throws(Refusal) in try TicketValues.owner(b, directory: d) },
                               show: shown({ b throws(Refusal) in try TicketValues.owner(b) }) { $0.value }),
            detail(9, .name), detail(10, .snils), detail(11, .phone),
        ],
        collections: [
            CollectionDescriptor(number: Collection.notes.rawValue, name: "notes", writers: [origin, owner, partner],
                                 maxValueBytes: Budget.noteBytes + 256,
                                 check: { b, _ throws(Refusal) in
                                     _ = try TicketValues.note(.checking(b, in: Collection.notes.rawValue), ticket: RecordID(high: 0, low: 0))
                                 }),
            CollectionDescriptor(number: Collection.history.rawValue, name: "history", writers: [origin, owner, partner],
                                 maxValueBytes: 2 * Budget.historyValueBytes + 512,
                                 check: { b, _ throws(Refusal) in
                                     _ = try TicketValues.event(.checking(b, in: Collection.history.rawValue), ticket: RecordID(high: 0, low: 0))
                                 }),
        ],
        authorityRegisters: [Register.header.rawValue, Register.owner.rawValue],
        homeRole: origin,
        recordCheck: { delta, _ throws(Refusal) in try citizenOnChannel(delta) },
        roles: { state, directory in
            var roles: [Role: String] = [:]
            if let h = state.registers[Register.header.rawValue].value,
               let header = try? TicketValues.header(h), let org = directory.org(header.originNode) {
                roles[origin] = org
            }
            if let o = state.registers[Register.owner.rawValue].value,
               let node = try? TicketValues.owner(o), let org = directory.org(node) {
                roles[owner] = org
            }
            return roles
        })

    /// A ticket of a foreign messenger holds no citizen data (`Channel.validate(carriesCitizen:)`,
    /// which the operator API applies to a draft). Judged against the header every
    /// delta carries (an authority register, §1.4): any version of a citizen register
    /// that holds a citizen or a detail is refused with the whole record.
    static func citizenOnChannel(_ delta: RecordDelta) throws(Refusal) {
        let regs = delta.state.registers
        func holds(_ r: Register, _ b: ValueBytes) -> Bool {
            switch r {
            case .citizen: return (try? TicketValues.citizen(b, checked: false)) != nil
            case .citizenName: return (try? TicketValues.citizenDetail(.name, b, checked: false)) != nil
            case .citizenSnils: return (try? TicketValues.citizenDetail(.snils, b, checked: false)) != nil
            case .citizenPhone: return (try? TicketValues.citizenDetail(.phone, b, checked: false)) != nil
            default: return false
            }
        }
        // Most deltas carry no citizen data (an empty value is none): the header is read only when one does.
        guard citizenRegisters.contains(where: { r in regs[r.rawValue].versions.contains { !$0.value.isEmpty } }) else { return }
        for h in regs[Register.header.rawValue].versions {
            guard let channel = try? TicketValues.header(h.value, checked: false).channel else { continue }
            do throws(TicketError) { try channel.validate(carriesCitizen: true) } catch {
                if let r = citizenRegisters.first(where: { r in regs[r.rawValue].versions.contains { holds(r, $0.value) } }) {
                    throw Refusal(.invalidValue, "registers[\(schema.registers[r.rawValue].name)]: \(error.message)")
                }
            }
        }
    }

    /// A note or history event as a child record of its ticket.
    public static func child(_ n: Note) -> Child {
        Child(collection: Collection.notes.rawValue, id: n.id, dot: Dot(node: n.node, stamp: n.stamp), value: TicketValues.encode(n))
    }

    public static func child(_ e: HistoryEvent) -> Child {
        Child(collection: Collection.history.rawValue, id: e.id, dot: Dot(node: e.node, stamp: e.stamp), value: TicketValues.encode(e))
    }
}

/// A decoded optional value, or nil when decoding failed (`try?` would flatten the two).
private func attempt<T>(_ body: () throws(Refusal) -> T?) -> T?? {
    do { return .some(try body()) } catch { return nil }
}

extension Ticket: ReplicatedRecord {
    public static var schema: RecordSchema { TicketRecord.schema }

    public var registerValues: [ValueBytes] {
        [
            TicketValues.encode(TicketHeader(number: number, originNode: originNode, channel: channel,
                                             legalRegime: legalRegime, receivedAt: receivedAt)),
            TicketValues.encode(Statement(subject: subject, text: statement)),
            TicketValues.encode(citizen.map { Citizen(ref: $0.ref) }),
            TicketValues.encode(Progress(status: status, registeredAt: registeredAt, deadlines: deadlines)),
            TicketValues.encode(assignee: assignee),
            TicketValues.encode(priority),
            TicketValues.encode(Topic(topic: topic, supportMeasure: supportMeasure)),
            TicketValues.encode(owner: ownerNode),
            TicketValues.encode(detail: citizen?.name),
            TicketValues.encode(detail: citizen?.snils?.digits),
            TicketValues.encode(detail: citizen?.phone),
        ]
    }

    /// The operator's view: every register's winner. Values in a store were checked
    /// on arrival, so they are read without checking again.
    public static func materialise(_ state: RecordState, local: LocalRecordInfo) -> Ticket? {
        ticket(id: state.id, winners: state.registers.map(\.value), local: local, latest: state.latestStamp)
    }

    /// A ticket from the winning value of each register (aligned with the table).
    public static func ticket<V: ValueSource>(id: TicketID, winners v: [V?], local: LocalRecordInfo, latest: Stamp) -> Ticket? {
        typealias R = TicketRecord.Register
        guard TicketRecord.isComplete(v),
              let hb = v[R.header.rawValue], let sb = v[R.statement.rawValue], let cb = v[R.citizen.rawValue],
              let pb = v[R.progress.rawValue], let ab = v[R.assignee.rawValue], let prb = v[R.priority.rawValue],
              let tb = v[R.topic.rawValue], let ob = v[R.owner.rawValue],
              let h = try? TicketValues.header(hb, checked: false), let s = try? TicketValues.statement(sb, checked: false),
              let c = attempt({ () throws(Refusal) in try TicketValues.citizen(cb, checked: false) }),
              let p = try? TicketValues.progress(pb, checked: false),
              let a = attempt({ () throws(Refusal) in try TicketValues.assignee(ab, checked: false) }),
              let pr = try? TicketValues.priority(prb, checked: false),
              let tp = try? TicketValues.topic(tb, checked: false), let o = try? TicketValues.owner(ob, checked: false)
        else { return nil }
        // A detail comes from its own register where that holds one (a partner may hold
        // none: out of its scope), else from register 3 as written before the split.
        func detail(_ r: R, _ d: TicketValues.CitizenDetail, _ legacy: String?) -> String? {
            guard let b = v[r.rawValue] else { return legacy }
            return attempt({ () throws(Refusal) in try TicketValues.citizenDetail(d, b, checked: false) }) ?? nil
        }
        let citizen = c.map { c in
            Citizen(ref: c.ref, name: detail(.citizenName, .name, c.name),
                    snils: detail(.citizenSnils, .snils, c.snils?.digits).map { Snils(trusted: $0) },
                    phone: detail(.citizenPhone, .phone, c.phone))
        }
        return Ticket(
            id: id, number: h.number, originNode: h.originNode, ownerNode: o, channel: h.channel, topic: tp.topic,
            supportMeasure: tp.supportMeasure, subject: s.subject, statement: s.text, citizen: citizen,
            status: p.status, assignee: a, priority: pr, legalRegime: h.legalRegime, deadlines: p.deadlines,
            receivedAt: h.receivedAt, registeredAt: p.registeredAt, updatedAt: latest.millis, updatedStamp: latest,
            version: local.version, duplicateOf: nil)
    }
}
