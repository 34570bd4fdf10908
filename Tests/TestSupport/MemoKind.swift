import CaseModel
import Replication

/// A record kind used only by tests: two registers and one child collection, to show
/// that a new kind is a conformance and its table, and nothing else. Its values are
/// protobuf messages like every kind's: `MemoTitle { string author = 1; string text = 2; }`,
/// `MemoStatus { string status = 1; }`, `MemoComment { string text = 1; }`.
public struct Memo: ReplicatedRecord, Hashable {
    public var id: RecordID
    /// The node whose organisation writes the memo (its role "author").
    public var author: NodeID
    public var title: String
    public var status: String
    public var version: UInt64

    public init(id: RecordID, author: NodeID, title: String, status: String, version: UInt64 = 1) {
        self.id = id
        self.author = author
        self.title = title
        self.status = status
        self.version = version
    }

    public static let kind = RecordKindID(rawValue: 200)
    public static let authorRole = Role("author")
    public static let comments: UInt8 = 1

    public static func encodeTitle(author: NodeID, text: String) -> ValueBytes {
        var w = ProtoWriter()
        w.string(1, author.value)
        w.string(2, text)
        return w.bytes
    }

    public static func encodeStatus(_ s: String) -> ValueBytes {
        var w = ProtoWriter()
        w.string(1, s)
        return w.bytes
    }

    public static func encodeComment(_ s: String) -> ValueBytes {
        var w = ProtoWriter()
        w.string(1, s)
        return w.bytes
    }

    /// The string fields of a memo value, checked: 1 to 200 bytes, no control characters.
    static func strings(_ b: ValueBytes, _ count: Int) throws(Refusal) -> [String] {
        var out = [String](repeating: "", count: count)
        do throws(ProtoError) {
            try b.readProto { r throws(ProtoError) in
                while let (n, t) = try r.field() {
                    if t == 2 && n >= 1 && n <= count { out[n - 1] = try r.string() } else { try r.skip(t) }
                }
            }
        } catch {
            throw Refusal(.malformed, "\(error)")
        }
        for (i, s) in out.enumerated() where s.isEmpty || s.utf8.count > 200 || s.utf8.contains(where: { $0 < 32 }) {
            throw Refusal(.invalidValue, "field \(i + 1): 1 to 200 bytes of text")
        }
        return out
    }

    static func title(_ b: ValueBytes, _ directory: Directory?) throws(Refusal) -> (NodeID, String) {
        let s = try strings(b, 2)
        guard let node = NodeID(s[0]) else { throw Refusal(.invalidValue, "author: not a node id") }
        if let directory, !directory.knows(node) { throw Refusal(.unknownNode, "author: \(node) is not in the topology") }
        return (node, s[1])
    }

    public static let schema = makeSchema()

    /// The kind's table; with `statusCapability`/`commentsCapability`, as a later release
    /// would have it had it added the status register or the comments collection after
    /// the base protocol (proto/README §8.1).
    public static func makeSchema(statusCapability: String? = nil, commentsCapability: String? = nil) -> RecordSchema {
        RecordSchema(
        kind: kind, name: "memo",
        registers: [
            RegisterDescriptor(number: 1, name: "title", writer: authorRole, maxValueBytes: 512,
                               check: { b, ctx throws(Refusal) in _ = try title(b, ctx.directory) },
                               show: { b in (try? title(b, nil).1) ?? "?" }),
            RegisterDescriptor(number: 2, name: "status", writer: authorRole, maxValueBytes: 256,
                               check: { b, _ throws(Refusal) in _ = try strings(b, 1) },
                               show: { b in (try? strings(b, 1)[0]) ?? "?" }, capability: statusCapability),
        ],
        collections: [
            CollectionDescriptor(number: comments, name: "comments", writers: [authorRole], maxValueBytes: 256,
                                 check: { b, _ throws(Refusal) in _ = try strings(b, 1) }, capability: commentsCapability),
        ],
        authorityRegisters: [0],
        roles: { state, directory in
            guard let v = state.registers[0].value, let (node, _) = try? title(v, nil), let org = directory.org(node) else { return [:] }
            return [authorRole: org]
        })
    }

    public var registerValues: [ValueBytes] {
        [Memo.encodeTitle(author: author, text: title), Memo.encodeStatus(status)]
    }

    public static func materialise(_ state: RecordState, local: LocalRecordInfo) -> Memo? {
        guard let t = state.registers[0].value, let s = state.registers[1].value,
              let (author, title) = try? title(t, nil), let status = try? strings(s, 1)[0] else { return nil }
        return Memo(id: state.id, author: author, title: title, status: status, version: local.version)
    }
}
