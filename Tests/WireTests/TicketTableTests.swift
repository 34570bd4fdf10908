import CaseModel
import Foundation
import Replication
import SwiftProtobuf
import TestSupport
import Testing
@testable import Wire

/// A message of one enum field, to read an enum value's name as the .proto spells it
/// (its JSON form): swift-protobuf keeps the names, and the model must agree with them.
struct EnumProbe<E: SwiftProtobuf.Enum>: SwiftProtobuf.Message, SwiftProtobuf._MessageImplementationBase,
    SwiftProtobuf._ProtoNameProviding where E.RawValue == Int
{
    static var protoMessageName: String { "ekc.test.EnumProbe" }
    static var _protobuf_nameMap: SwiftProtobuf._NameMap { SwiftProtobuf._NameMap(bytecode: "\0\u{1}value\0") }
    var value: E
    var unknownFields = SwiftProtobuf.UnknownStorage()

    init() { value = E() }
    init(_ value: E) { self.value = value }

    mutating func decodeMessage<D: SwiftProtobuf.Decoder>(decoder: inout D) throws {
        while let n = try decoder.nextFieldNumber() {
            if n == 1 { try decoder.decodeSingularEnumField(value: &value) }
        }
    }

    func traverse<V: SwiftProtobuf.Visitor>(visitor: inout V) throws {
        if value.rawValue != 0 { try visitor.visitSingularEnumField(value: value, fieldNumber: 1) }
        try unknownFields.traverse(visitor: &visitor)
    }

    static func == (a: Self, b: Self) -> Bool { a.value == b.value && a.unknownFields == b.unknownFields }

    /// The .proto name of `value`, e.g. TICKET_REGISTER_HEADER.
    static func protoName(_ value: E) throws -> String {
        let json = try EnumProbe(value).jsonString()
        guard json.hasPrefix("{\"value\":\""), json.hasSuffix("\"}") else { return json }
        return String(json.dropFirst(10).dropLast(2))
    }
}

/// The ticket's table and the model's enums against ticket.proto, through the generated code.
@Suite struct TicketTableTests {
    /// `lowerCamel` as the .proto's UPPER_SNAKE: inWork → IN_WORK, appeal59FZ → APPEAL_59FZ.
    func snake(_ name: String) -> String {
        var out = ""
        var previous: Character?
        for c in name {
            if let p = previous, (c.isUppercase && p.isLowercase) || (c.isNumber && p.isLetter) { out += "_" }
            out += c.uppercased()
            previous = c
        }
        return out
    }

    @Test func snakeCase() {
        #expect(snake("inWork") == "IN_WORK" && snake("appeal59FZ") == "APPEAL_59FZ" && snake("header") == "HEADER")
        #expect(snake("transferredOut") == "TRANSFERRED_OUT" && snake("videoSign") == "VIDEO_SIGN")
    }

    @Test func registerNumbersAndNames() throws {
        let schema = TicketRecord.schema
        let generated = Ekc_Replication_V2_TicketRegister.allCases.filter { $0 != .unspecified }
        #expect(schema.registers.count == generated.count)
        #expect(TicketRecord.Register.allCases.count == generated.count)
        for g in generated {
            let name = String(describing: g)   // the generated case: .header
            #expect(try EnumProbe.protoName(g) == "TICKET_REGISTER_" + snake(name))
            let i = try #require(schema.registerIndex(number: UInt64(g.rawValue)), "\(name)")
            #expect(schema.registers[i].name == name)
            #expect(schema.registerIndex(named: name) == i)
            let model = try #require(TicketRecord.Register(rawValue: i))
            #expect(String(describing: model) == name)
        }
        #expect(schema.kind.rawValue == Ekc_Replication_V2_RecordKind.ticket.rawValue)
        #expect(try EnumProbe.protoName(Ekc_Replication_V2_RecordKind.ticket) == "RECORD_KIND_TICKET")
        #expect(schema.name == String(describing: Ekc_Replication_V2_RecordKind.ticket))
    }

    @Test func collectionNumbersAndNames() throws {
        let schema = TicketRecord.schema
        let generated = Ekc_Replication_V2_TicketCollection.allCases.filter { $0 != .unspecified }
        #expect(schema.collections.count == generated.count)
        #expect(TicketRecord.Collection.allCases.count == generated.count)
        for g in generated {
            let name = String(describing: g)
            #expect(try EnumProbe.protoName(g) == "TICKET_COLLECTION_" + snake(name))
            let c = try #require(schema.collection(number: UInt64(g.rawValue)), "\(name)")
            #expect(c.name == name)
            let model = try #require(TicketRecord.Collection(rawValue: UInt8(g.rawValue)))
            #expect(String(describing: model) == name)
        }
    }

    /// Every model case has the generated case of the same name at its wire number, and
    /// the other way round; the proto's own names say the same.
    func sameEnum<M: StoredCode, G: SwiftProtobuf.Enum & CaseIterable>(_: M.Type, _: G.Type, prefix: String) throws
        where G.RawValue == Int
    {
        let generated = G.allCases.filter { $0.rawValue != 0 }
        #expect(generated.count == M.allCases.count, "\(M.self)")
        for m in M.allCases {
            let name = String(describing: m).lowercased()
            let g = try #require(generated.first { String(describing: $0).lowercased() == name }, "\(M.self).\(m)")
            #expect(g.rawValue == m.wireNumber, "\(M.self).\(m)")
            #expect(M(wireNumber: g.rawValue) == m)
            #expect(try EnumProbe.protoName(g) == prefix + snake(String(describing: m)), "\(M.self).\(m)")
        }
        #expect(M(wireNumber: 0) == nil && M(wireNumber: generated.count + 1) == nil)
    }

    @Test func modelEnumsMatchTheProto() throws {
        try sameEnum(TicketStatus.self, Ekc_Replication_V2_TicketStatus.self, prefix: "TICKET_STATUS_")
        try sameEnum(Channel.self, Ekc_Replication_V2_Channel.self, prefix: "CHANNEL_")
        try sameEnum(Priority.self, Ekc_Replication_V2_Priority.self, prefix: "PRIORITY_")
        try sameEnum(LegalRegime.self, Ekc_Replication_V2_LegalRegime.self, prefix: "LEGAL_REGIME_")
        try sameEnum(NoteVisibility.self, Ekc_Replication_V2_NoteVisibility.self, prefix: "NOTE_VISIBILITY_")
    }

    /// Wire numbers are fixed by the .proto, never by the order of Swift's cases: the
    /// numbers as they were published.
    @Test func enumNumbersAreThePublishedOnes() {
        let status: [TicketStatus: Int] = [.new: 1, .registered: 2, .inWork: 3, .waiting: 4, .deferred: 5, .answered: 6,
                                           .closed: 7, .reopened: 8, .transferPending: 9, .transferredOut: 10, .merged: 11]
        let channel: [Channel: Int] = [.phone: 1, .walkIn: 2, .videoSign: 3, .callback: 4, .web: 5, .epgu: 6,
                                       .chatbot: 7, .voicemail: 8, .email: 9, .messenger: 10]
        let priority: [Priority: Int] = [.low: 1, .normal: 2, .high: 3, .urgent: 4]
        let regime: [LegalRegime: Int] = [.consultation: 1, .appeal59FZ: 2]
        let visibility: [NoteVisibility: Int] = [.shared: 1, .internal: 2]
        #expect(status.count == TicketStatus.allCases.count && status.allSatisfy { $0.key.wireNumber == $0.value })
        #expect(channel.count == Channel.allCases.count && channel.allSatisfy { $0.key.wireNumber == $0.value })
        #expect(priority.count == Priority.allCases.count && priority.allSatisfy { $0.key.wireNumber == $0.value })
        #expect(regime.count == LegalRegime.allCases.count && regime.allSatisfy { $0.key.wireNumber == $0.value })
        #expect(visibility.count == NoteVisibility.allCases.count && visibility.allSatisfy { $0.key.wireNumber == $0.value })
        let registers = ["header": 1, "statement": 2, "citizen": 3, "progress": 4, "assignee": 5, "priority": 6, "topic": 7, "owner": 8,
                         "citizenName": 9, "citizenSnils": 10, "citizenPhone": 11]
        #expect(Dictionary(uniqueKeysWithValues: TicketRecord.schema.registers.map { ($0.name, Int($0.number)) }) == registers)
        #expect(TicketRecord.schema.collections.map { "\($0.name)=\($0.number)" } == ["notes=1", "history=2"])
    }
}
