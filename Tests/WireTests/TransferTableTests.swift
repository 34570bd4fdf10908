import CaseModel
import Foundation
import SwiftProtobuf
import TestSupport
import Testing
@testable import Wire
import Replication

/// The transfer's table, its enums and its value messages against transfer.proto,
/// through the generated code: the hand-written codecs and swift-protobuf read each
/// other's bytes the same way.
@Suite struct TransferTableTests {
    let tables = TicketTableTests()

    @Test func registersCollectionsAndKind() throws {
        let schema = TransferRecord.schema
        let registers = Ekc_Replication_V2_TransferRegister.allCases.filter { $0 != .unspecified }
        #expect(schema.registers.map(\.name) == registers.map { String(describing: $0) })
        #expect(schema.registers.map { Int($0.number) } == registers.map(\.rawValue))
        let collections = Ekc_Replication_V2_TransferCollection.allCases.filter { $0 != .unspecified }
        #expect(schema.collections.map(\.name) == collections.map { String(describing: $0) })
        #expect(schema.collections.map { Int($0.number) } == collections.map(\.rawValue))
        for c in collections { #expect(try EnumProbe.protoName(c) == "TRANSFER_COLLECTION_" + tables.snake(String(describing: c))) }
        #expect(schema.kind.rawValue == Ekc_Replication_V2_RecordKind.transfer.rawValue)
        #expect(schema.name == String(describing: Ekc_Replication_V2_RecordKind.transfer))
    }

    @Test func enumsMatchTheProto() throws {
        try tables.sameEnum(TransferKind.self, Ekc_Replication_V2_TransferKind.self, prefix: "TRANSFER_KIND_")
        try tables.sameEnum(TransferState.self, Ekc_Replication_V2_TransferState.self, prefix: "TRANSFER_STATE_")
        try tables.sameEnum(CitizenField.self, Ekc_Replication_V2_CitizenField.self, prefix: "CITIZEN_FIELD_")
    }

    @Test func orderBytesAreTheProtosBothWays() throws {
        let order = TransferOrder(ticket: RecordID(high: 0x0102, low: 0x0304), fromOrganisation: "38", fromNode: irkutskNodes[0],
                                  toOrganisation: "pension", kind: .infoRequest, reasonCode: "pension-recalc",
                                  reasonText: "Прошу сообщить стаж", scope: [.name, .ref, .phone], createdAt: testNow,
                                  dueAt: testNow + 15 * 86_400_000)
        let g = try Ekc_Replication_V2_TransferOrder(serializedBytes: TransferValues.encode(order))
        #expect(g.ticketID == Data(order.ticket.bytes) && g.fromOrganisation == "38" && g.fromNode == irkutskNodes[0].value)
        #expect(g.toOrganisation == "pension" && g.kind == .infoRequest && g.reasonCode == "pension-recalc")
        #expect(g.scope == [.ref, .name, .phone] && g.createdAt == testNow && g.dueAt == testNow + 15 * 86_400_000)
        // swift-protobuf's bytes (packed scope) read back to the same order.
        let back: [UInt8] = try g.serializedBytes()
        #expect(try TransferValues.order(back) == order)
    }

    @Test func stepBytesAreTheProtosBothWays() throws {
        var g = Ekc_Replication_V2_TransferStep()
        g.state = .returned
        g.actor = .with { $0.user = "op-fund"; $0.role = "operator" }
        g.reasonCode = "no-documents"
        g.reasonText = "Нет документов о стаже"
        let bytes: [UInt8] = try g.serializedBytes()
        let child = Child(collection: TransferRecord.Collection.receiverSteps.rawValue, id: RecordID(high: 5, low: 6),
                          dot: Dot(node: fundNode, stamp: Stamp(millis: testNow, logical: 3)), value: bytes)
        let step = try TransferValues.step(child)
        #expect(step.state == .returned && step.actor == Actor(user: "op-fund", role: "operator") && step.node == fundNode)
        #expect(step.reasonCode == "no-documents" && step.reasonText == "Нет документов о стаже" && step.answer == nil)
        #expect(try Ekc_Replication_V2_TransferStep(serializedBytes: TransferValues.encode(step)) == g)
    }
}
