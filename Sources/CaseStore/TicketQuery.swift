import CaseModel
import LMDB
import Replication

/// A filtered, paginated listing. The most selective index that the filters allow
/// is walked in key order; the other filters are checked on each ticket.
public struct TicketQuery: Sendable, Equatable {
    public var status: TicketStatus?
    public var assignee: String?
    public var updatedSince: Millis?
    public var dueBefore: Millis?
    public var limit: Int
    /// Opaque: the `next` of the previous page.
    public var cursor: String?

    public static let maxLimit = 500

    public init(status: TicketStatus? = nil, assignee: String? = nil, updatedSince: Millis? = nil,
                dueBefore: Millis? = nil, limit: Int = 50, cursor: String? = nil) {
        self.status = status
        self.assignee = assignee
        self.updatedSince = updatedSince
        self.dueBefore = dueBefore
        self.limit = limit
        self.cursor = cursor
    }

    func matches(_ t: Ticket) -> Bool {
        if let status, t.status != status { return false }
        if let assignee, t.assignee != assignee { return false }
        if let updatedSince, t.updatedAt < updatedSince { return false }
        if let dueBefore {
            guard let due = t.deadlines.next(for: t.status), due < dueBefore else { return false }
        }
        return true
    }
}

public struct TicketPage: Sendable {
    public let items: [Ticket]
    public let next: String?
}

public enum QueryError: Error, Equatable, Sendable {
    case invalidCursor
}

/// One entry of the change feed of tickets: the parts of a ticket that changed
/// together at this sequence and still sit there, and the ticket as it is now.
public struct Change: Sendable {
    public let sequence: UInt64
    public let ticket: Ticket
    /// Names of the registers whose latest change is at this sequence.
    public let registers: [String]
    /// Children added at this sequence, by collection name.
    public let children: [String: Int]
}

public struct ChangePage: Sendable {
    public let changes: [Change]
    /// The store's last sequence when the page was read.
    public let lastSequence: UInt64
}

extension CaseStore {
    private enum Walk: UInt8 {
        case byID = 0x69, byStatus = 0x73, byAssignee = 0x61, byUpdated = 0x75, byDeadline = 0x64
    }

    public func list(_ q: TicketQuery) throws -> TicketPage {
        let limit = min(max(q.limit, 1), TicketQuery.maxLimit)
        let walk: Walk, db: Database, prefix: [UInt8]
        var start: [UInt8]
        if let s = q.status {
            (walk, db, prefix) = (.byStatus, schema.byStatus, [s.code])
            start = prefix
        } else if let a = q.assignee {
            (walk, db, prefix) = (.byAssignee, schema.byAssignee, Array(a.utf8) + [0])
            start = prefix
        } else if let since = q.updatedSince {
            (walk, db, prefix) = (.byUpdated, schema.byUpdated, [])
            start = UInt64(max(0, since)).bigEndianBytes
        } else if q.dueBefore != nil {
            (walk, db, prefix) = (.byDeadline, schema.byDeadline, [])
            start = []
        } else {
            (walk, db, prefix) = (.byID, schema.tickets, [])
            start = []
        }
        var after: [UInt8]? = nil
        if let c = q.cursor {
            guard let bytes = CaseStore.decodeCursor(c), bytes.first == walk.rawValue else { throw QueryError.invalidCursor }
            let key = Array(bytes.dropFirst())
            guard key.starts(with: prefix), key.count >= 16 else { throw QueryError.invalidCursor }
            after = key
            start = key
        }
        // Bound the work of one page when filters reject most of what the index yields.
        let scanBudget = limit * 20 + 1_000
        return try readTxn { txn in
            try txn.withCursor(db) { c in
                var items: [Ticket] = []
                var scanned = 0
                var lastKey: [UInt8]? = nil
                var ok = start.isEmpty ? try c.first() : try c.seek(atLeast: start)
                if ok, let after, Array(c.key) == after { ok = try c.next() }
                while ok && c.keyHasPrefix(prefix) {
                    if walk == .byDeadline, let due = q.dueBefore,
                       let t = UInt64(bigEndianBytes: c.key), t >= UInt64(max(0, due)) { break }
                    if items.count == limit || scanned == scanBudget {
                        return TicketPage(items: items, next: lastKey.map { CaseStore.encodeCursor([walk.rawValue] + $0) })
                    }
                    scanned += 1
                    let key = c.key
                    // A key that names no ticket (a damaged table) is a corrupt store, not a trap.
                    guard walk == .byID ? key.count == 16 : key.count >= 16 else {
                        throw CorruptRecord(what: "ticket listing: a key of \(key.count) bytes")
                    }
                    let ticket: Ticket?
                    if walk == .byID {
                        ticket = try TicketView.decode(c.value, id: TicketID(raw: key))
                    } else {
                        let id = TicketID(raw: UnsafeRawBufferPointer(rebasing: key[(key.count - 16)...]))
                        ticket = try loadTicket(id, txn)
                    }
                    lastKey = Array(key)
                    if let ticket, q.matches(ticket) { items.append(ticket) }
                    ok = try c.next()
                }
                return TicketPage(items: items, next: nil)
            }
        }
    }

    static func encodeCursor(_ bytes: [UInt8]) -> String {
        let hex: [UInt8] = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        for b in bytes { out.append(hex[Int(b >> 4)]); out.append(hex[Int(b & 15)]) }
        return String(decoding: out, as: UTF8.self)
    }

    static func decodeCursor(_ s: String) -> [UInt8]? {
        let u = Array(s.utf8)
        guard u.count % 2 == 0, u.count <= 512, !u.isEmpty else { return nil }
        func nib(_ c: UInt8) -> UInt8? {
            switch c {
            case 48...57: return c - 48
            case 97...102: return c - 87
            default: return nil
            }
        }
        var out: [UInt8] = []
        var i = 0
        while i < u.count {
            guard let h = nib(u[i]), let l = nib(u[i + 1]) else { return nil }
            out.append(h << 4 | l)
            i += 2
        }
        return out
    }

    /// Entries of the change feed after local sequence `since` that name tickets, oldest first.
    public func changes(since: UInt64, limit: Int) throws -> ChangePage {
        let limit = min(max(limit, 1), 10_000)
        let tickets = TicketRecord.schema
        return try readTxn { txn in
            let last = try txn.u64(schema.meta, Schema.MetaKey.lastSequence) ?? 0
            let changes = try txn.withCursor(schema.feed) { c in
                var out: [Change] = []
                var ok = since == .max ? false : try c.seek(atLeast: (since &+ 1).bigEndianBytes)
                while ok && out.count < limit {
                    guard c.key.count == 8, let seq = UInt64(bigEndianBytes: c.key) else {
                        throw CorruptRecord(what: "change feed: a key of \(c.key.count) bytes")
                    }
                    let entry = try FeedEntry.decode(c.value)
                    if entry.kind == TicketRecord.kind, let t = try loadTicket(entry.id, txn) {
                        var counts: [String: Int] = [:]
                        for k in entry.children {
                            counts[tickets.collection(number: UInt64(k.collection))?.name ?? "\(k.collection)", default: 0] += 1
                        }
                        out.append(Change(sequence: seq, ticket: t,
                                          registers: tickets.indexes(numbers: entry.registerNumbers).map { tickets.registers[$0].name },
                                          children: counts))
                    }
                    ok = try c.next()
                }
                return out
            }
            return ChangePage(changes: changes, lastSequence: last)
        }
    }
}
