import CaseModel
import Foundation
import Replication
import SwiftProtobuf
import Testing
@testable import Wire

@Suite struct MappingRoundTripTests {
    func roundTrip(_ t: ReplicatedTicket) throws -> ReplicatedTicket {
        let bytes = t.wireBytes()
        return try ReplicatedTicket(wireBytes: bytes)
    }

    @Test func openedTicketWithEveryOptionalField() throws {
        let id = TicketID(millis: UInt64(baseTime), randomHigh: 0xBEEF, randomLow: 0x0123_4567_89AB_CDEF)
        let citizen = Citizen(ref: "CIT-7F3K2", name: "Иванова Мария Петровна", snils: Snils(trusted: "11223344595"),
                              phone: "+79140000067")
        var ticket = openedTicket(id: id, at: irkutskNodes[0], now: baseTime, citizen: citizen)
        ticket.deadlines.callbackBy = baseTime + 3_600_000
        ticket.deadlines.extensionDays = 12
        let t = ReplicatedTicket(opened: ticket, dot: Dot(node: irkutskNodes[0], stamp: Stamp(millis: baseTime, logical: 3)))
        #expect(try roundTrip(t) == t)
        #expect(try roundTrip(t).ticket(version: 1) == t.ticket(version: 1))
        // Nothing absent is invented: no citizen, no assignee, no support measure.
        let bare = ReplicatedTicket(
            opened: try TicketDraft(channel: .web, topic: "pension", subject: "s", statement: "t")
                .open(id: id, number: TicketNumber(region: "sfr", year: 2026, sequence: 1), node: irkutskNodes[1],
                      now: baseTime, stamp: Stamp(millis: baseTime, logical: 0)),
            dot: Dot(node: irkutskNodes[1], stamp: Stamp(millis: baseTime, logical: 0)))
        let back = try roundTrip(bare)
        #expect(back == bare)
        #expect(back.citizen.winner?.value == nil && back.citizen.versions.count == 1)
        #expect(back.assignee.winner?.value == nil && back.assignee.versions.count == 1)
        #expect(back.progress.value?.registeredAt == nil)
    }

    @Test func emptyTicketRoundTrips() throws {
        let t = ReplicatedTicket(id: TicketID(high: 1, low: 2))
        #expect(try roundTrip(t) == t)
    }

    /// Every state of random histories (conflicts, notes, history, nil and non-nil
    /// optionals) comes back equal, and equal states encode to equal bytes.
    @Test(arguments: [1, 2, 3, 4] as [UInt64])
    func randomHistoriesRoundTrip(seed: UInt64) throws {
        let pool = statePool(seed: seed, steps: 400)
        var conflicted = 0, withNotes = 0, withHistory = 0
        for t in pool {
            let back = try roundTrip(t)
            #expect(back == t)
            if !t.conflicts.isEmpty { conflicted += 1 }
            if !t.notes.isEmpty { withNotes += 1 }
            if !t.history.isEmpty { withHistory += 1 }
        }
        #expect(conflicted > 10 && withNotes > 10 && withHistory > 10)
        // Canonical encoding: merge order does not change the bytes.
        var rng = SeededRandom(seed: seed)
        for _ in 0..<200 {
            let a = pool.randomElement(using: &rng)!, b = pool.randomElement(using: &rng)!
            #expect(a.merged(b).wireBytes() == b.merged(a).wireBytes())
        }
    }

    @Test func conflictsSurviveTheWire() throws {
        let t = conflictedTicket(idLow: 1)
        #expect(t.progress.isConflicted && t.assignee.isConflicted)
        #expect(t.notes.count == 2 && t.history.count == 2)
        let back = try roundTrip(t)
        #expect(back == t)
        #expect(back.conflicts == t.conflicts)
        // Each version is a typed message with its dot and context on the wire.
        let w = WireTicketState(t)
        #expect(w.progress.count == 2)
        #expect(w.progress.map(\.value.status) == [.inWork, .deferred])
        #expect(w.progress[1].dot.node == "irk-office-1")
        #expect(w.progress[1].context.entries.map(\.node) == ["irk-main", "irk-office-1"])
    }

    /// Wire numbers are fixed by the .proto, never by Swift case order.
    @Test func enumNumbersAreExplicit() throws {
        let status: [TicketStatus: Int] = [.new: 1, .registered: 2, .inWork: 3, .waiting: 4, .deferred: 5, .answered: 6,
                                           .closed: 7, .reopened: 8, .transferPending: 9, .transferredOut: 10, .merged: 11]
        #expect(status.count == TicketStatus.allCases.count)
        for (s, n) in status {
            #expect(Ekc_Replication_V1_TicketStatus(s).rawValue == n)
            #expect(try Ekc_Replication_V1_TicketStatus(rawValue: n)!.model("s") == s)
        }
        let channel: [Channel: Int] = [.phone: 1, .walkIn: 2, .videoSign: 3, .callback: 4, .web: 5, .epgu: 6,
                                       .chatbot: 7, .voicemail: 8, .email: 9, .messenger: 10]
        #expect(channel.count == Channel.allCases.count)
        for (c, n) in channel {
            #expect(Ekc_Replication_V1_Channel(c).rawValue == n)
            #expect(try Ekc_Replication_V1_Channel(rawValue: n)!.model("c") == c)
        }
        let priority: [Priority: Int] = [.low: 1, .normal: 2, .high: 3, .urgent: 4]
        #expect(priority.count == Priority.allCases.count)
        for (p, n) in priority {
            #expect(Ekc_Replication_V1_Priority(p).rawValue == n)
            #expect(try Ekc_Replication_V1_Priority(rawValue: n)!.model("p") == p)
        }
        let regime: [LegalRegime: Int] = [.consultation: 1, .appeal59FZ: 2]
        #expect(regime.count == LegalRegime.allCases.count)
        for (r, n) in regime {
            #expect(Ekc_Replication_V1_LegalRegime(r).rawValue == n)
            #expect(try Ekc_Replication_V1_LegalRegime(rawValue: n)!.model("r") == r)
        }
        let visibility: [NoteVisibility: Int] = [.shared: 1, .internal: 2]
        #expect(visibility.count == NoteVisibility.allCases.count)
        for (v, n) in visibility {
            #expect(Ekc_Replication_V1_NoteVisibility(v).rawValue == n)
            #expect(try Ekc_Replication_V1_NoteVisibility(rawValue: n)!.model("v") == v)
        }
    }
}

@Suite struct MappingErrorTests {
    let good = WireTicketState(conflictedTicket(idLow: 2))

    func decode(_ w: WireTicketState) throws(WireError) -> ReplicatedTicket { try ReplicatedTicket(wire: w) }

    /// Through bytes, so the refusal holds for what a peer actually sends.
    func decodeBytes(_ w: WireTicketState) throws(WireError) -> ReplicatedTicket {
        try ReplicatedTicket(wireBytes: try WireCoding.serialize(w))
    }

    @Test func goodStateDecodes() throws {
        #expect(try decode(good) == conflictedTicket(idLow: 2))
    }

    @Test func badTicketIDs() {
        for n in [0, 15, 17] {
            var w = good
            w.id = Data(repeating: 7, count: n)
            #expect(throws: WireError.invalidID(field: "id", byteCount: n)) { try decodeBytes(w) }
        }
        var w = good
        w.notes[1].id = Data([1, 2, 3])
        #expect(throws: WireError.invalidID(field: "notes[1].id", byteCount: 3)) { try decodeBytes(w) }
        w = good
        w.history[0].id = Data()
        #expect(throws: WireError.invalidID(field: "history[0].id", byteCount: 0)) { try decodeBytes(w) }
    }

    @Test func unknownAndUnspecifiedEnums() {
        var w = good
        w.progress[1].value.status = .UNRECOGNIZED(99)
        #expect(throws: WireError.invalidEnum(field: "progress[1].value.status", value: 99)) { try decodeBytes(w) }
        w = good
        w.priority[0].value = .unspecified
        #expect(throws: WireError.invalidEnum(field: "priority[0].value", value: 0)) { try decodeBytes(w) }
        w = good
        w.header[0].value.channel = .UNRECOGNIZED(42)
        #expect(throws: WireError.invalidEnum(field: "header[0].value.channel", value: 42)) { try decodeBytes(w) }
        w = good
        w.header[0].value.legalRegime = .unspecified
        #expect(throws: WireError.invalidEnum(field: "header[0].value.legal_regime", value: 0)) { try decodeBytes(w) }
        w = good
        w.notes[0].visibility = .UNRECOGNIZED(3)
        #expect(throws: WireError.invalidEnum(field: "notes[0].visibility", value: 3)) { try decodeBytes(w) }
    }

    @Test func badNodeIDsAndStamps() {
        var w = good
        w.progress[0].dot.node = "Irk Main"
        #expect(throws: WireError.invalidNodeID(field: "progress[0].dot.node", value: "Irk Main")) { try decodeBytes(w) }
        w = good
        w.owner[0].value = ""
        #expect(throws: WireError.invalidNodeID(field: "owner[0].value", value: "")) { try decodeBytes(w) }
        w = good
        w.header[0].value.originNode = "-x"
        #expect(throws: WireError.invalidNodeID(field: "header[0].value.origin_node", value: "-x")) { try decodeBytes(w) }
        w = good
        w.assignee[0].context.entries[0].node = "ÿ"
        #expect(throws: WireError.invalidNodeID(field: "assignee[0].context.entries[0].node", value: "ÿ")) { try decodeBytes(w) }
        w = good
        w.statement[0].dot.stamp = 0
        #expect(throws: WireError.invalidValue(field: "statement[0].dot.stamp", reason: "a stamp is never 0")) { try decodeBytes(w) }
        w = good
        w.notes[0].stamp = 0
        #expect(throws: WireError.invalidValue(field: "notes[0].stamp", reason: "a stamp is never 0")) { try decodeBytes(w) }
    }

    @Test func missingFields() throws {
        var w = good
        w.topic[0].clearDot()
        #expect(throws: WireError.missingField("topic[0].dot")) { try decodeBytes(w) }
        w = good
        w.header[0].clearValue()
        #expect(throws: WireError.missingField("header[0].value")) { try decodeBytes(w) }
        w = good
        w.progress[0].value.clearDeadlines()
        #expect(throws: WireError.missingField("progress[0].value.deadlines")) { try decodeBytes(w) }
        w = good
        w.header[0].value.clearNumber()
        #expect(throws: WireError.missingField("header[0].value.number")) { try decodeBytes(w) }
        w = good
        w.notes[0].clearAuthor()
        #expect(throws: WireError.missingField("notes[0].author")) { try decodeBytes(w) }
        // Where absence has a meaning, it is not an error: a ticket about no citizen.
        w = good
        w.citizen[0].clearValue()
        #expect(try decodeBytes(w).citizen.value == Citizen?.none)
    }

    @Test func duplicatesAndBadValues() {
        var w = good
        w.progress.append(w.progress[0])
        #expect(throws: WireError.duplicate(field: "progress", key: "irk-main@\(Stamp(raw: good.progress[0].dot.stamp))")) {
            try decodeBytes(w)
        }
        w = good
        w.notes.append(w.notes[0])
        #expect(throws: WireError.self) { try decodeBytes(w) }
        w = good
        w.history[1].id = w.history[0].id
        #expect(throws: WireError.self) { try decodeBytes(w) }
        w = good
        w.owner[0].context.entries.append(w.owner[0].context.entries[0])
        #expect(throws: WireError.duplicate(field: "owner[0].context.entries", key: "irk-main")) { try decodeBytes(w) }
        w = good
        w.citizen[0].value.snils = "112-233-445 95"
        #expect(throws: WireError.invalidValue(field: "citizen[0].value.snils", reason: "must be 11 digits without separators")) {
            try decodeBytes(w)
        }
        w = good
        w.header[0].value.number.region = "Иркутск"
        #expect(throws: WireError.self) { try decodeBytes(w) }
    }

    @Test func garbageBytesAreMalformed() {
        #expect(throws: WireError.self) { try ReplicatedTicket(wireBytes: [0x0A, 0x10, 1, 2]) }
        do {
            _ = try ReplicatedTicket(wireBytes: [0xFF, 0xFF, 0xFF])
            Issue.record("garbage decoded")
        } catch {
            guard case .malformedMessage = error else { Issue.record("wrong error \(error)"); return }
        }
    }

    /// Unknown fields (from a later minor revision of v1) are carried, not refused.
    @Test func unknownFieldsAreIgnored() throws {
        var bytes = try WireCoding.serialize(good)
        bytes += [0xA0, 0x06, 0x01]  // field 100, varint 1
        #expect(try ReplicatedTicket(wireBytes: bytes) == conflictedTicket(idLow: 2))
    }
}
