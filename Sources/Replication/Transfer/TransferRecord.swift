import CaseModel

/// The transfer kind's table (proto/ekc/replication/v2/transfer.proto): one register,
/// the order the sender wrote, and the steps of each side as two grow-only
/// collections. Its state is a pure function of the steps (`TransferSteps`), so a
/// concurrent cancellation and acceptance both arrive everywhere and every replica
/// shows the acceptance and lists the cancellation as a conflict.
public enum TransferRecord {
    public static let kind = RecordKindID(rawValue: 2)
    /// The sender organisation writes the order and cancels; the receiver organisation takes the other steps.
    public static let sender = Role("sender")
    public static let receiver = Role("receiver")

    public enum Register: Int, CaseIterable, Sendable {
        case order
    }

    public enum Collection: UInt8, CaseIterable, Sendable {
        case senderSteps = 1, receiverSteps = 2
    }

    /// Checks a step as a child of `collection` (its side decides which states it may hold).
    private static func stepCheck(_ collection: Collection) -> @Sendable (ValueBytes, CheckContext) throws(Refusal) -> Void {
        { b, _ throws(Refusal) in _ = try TransferValues.step(.checking(b, in: collection.rawValue)) }
    }

    public static let schema = RecordSchema(
        kind: kind, name: "transfer",
        registers: [
            RegisterDescriptor(number: 1, name: "order", writer: sender, maxValueBytes: 256 + TransferBudget.reasonTextBytes,
                               check: { b, ctx throws(Refusal) in _ = try TransferValues.order(b, directory: ctx.directory) },
                               show: { b in (try? TransferValues.order(b, checked: false)).map { "\($0.kind.rawValue) to \($0.toOrganisation)" } ?? "(unreadable)" }),
        ],
        collections: [
            CollectionDescriptor(number: Collection.senderSteps.rawValue, name: "senderSteps", writers: [sender],
                                 maxValueBytes: 256 + TransferBudget.reasonTextBytes, check: stepCheck(.senderSteps)),
            CollectionDescriptor(number: Collection.receiverSteps.rawValue, name: "receiverSteps", writers: [receiver],
                                 maxValueBytes: 256 + TransferBudget.reasonTextBytes + TransferBudget.answerBytes,
                                 check: stepCheck(.receiverSteps)),
        ],
        authorityRegisters: [Register.order.rawValue],
        roles: { state, _ in
            guard let b = state.registers[Register.order.rawValue].value,
                  let order = try? TransferValues.order(b, checked: false) else { return [:] }
            return [sender: order.fromOrganisation, receiver: order.toOrganisation]
        })

    /// A step as a child record of its transfer, in its side's collection.
    public static func child(_ s: TransferStep) -> Child {
        let collection: Collection = s.state.takenBy == .sender ? .senderSteps : .receiverSteps
        return Child(collection: collection.rawValue, id: s.id, dot: Dot(node: s.node, stamp: s.stamp), value: TransferValues.encode(s))
    }

    /// The steps of a transfer's children (children that do not decode are left out:
    /// a store holds only admitted ones).
    public static func steps(_ children: [Child]) -> TransferSteps {
        TransferSteps(children.compactMap { try? TransferValues.step($0, checked: false) })
    }
}

extension Transfer: ReplicatedRecord {
    public static var schema: RecordSchema { TransferRecord.schema }

    public var registerValues: [ValueBytes] { [TransferValues.encode(order)] }

    /// The order alone: the steps are children, read beside the record (`TransferRecord.steps`).
    public static func materialise(_ state: RecordState, local: LocalRecordInfo) -> Transfer? {
        guard let b = state.registers[TransferRecord.Register.order.rawValue].value,
              let order = try? TransferValues.order(b, checked: false) else { return nil }
        return Transfer(id: state.id, order: order, version: local.version)
    }
}
