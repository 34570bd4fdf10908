import CaseModel

extension RecordSchema {
    /// Checks everything a delta from a peer claims before anything is merged: the
    /// same rules the operator API applies to values (each value through its
    /// register's or collection's check), byte budgets, bounded versions and contexts,
    /// node ids the topology knows, and causally possible contexts. A delta that fails
    /// is refused whole. Runs in time linear in the delta's size: counts are checked
    /// before anything proportional to their square could run.
    public func check(_ delta: RecordDelta, context: CheckContext) throws(Refusal) {
        let directory = context.directory
        for (i, r) in delta.state.registers.enumerated() where !r.isEmpty {
            let d = registers[i]
            // Built only for an error message: building it for every register cost more than checking one.
            var path: String { "registers[\(d.name)]" }
            guard !r.versions.isEmpty else { throw Refusal(.invalidValue, "\(path): a register without a version") }
            guard r.versions.count <= RecordSchema.maxVersions else {
                throw Refusal(.tooLarge, "\(path): \(r.versions.count) versions; at most \(RecordSchema.maxVersions)")
            }
            guard r.seen.sorted.count <= min(RecordSchema.maxContextEntries, max(directory.count, 1)) else {
                throw Refusal(.tooLarge, "\(path).seen: \(r.seen.sorted.count) entries for a federation of \(directory.count) nodes")
            }
            // Versions are few (one per writing node): a scan beats hashing.
            var nodes: [NodeID] = []
            nodes.reserveCapacity(r.versions.count)
            var top = Stamp.zero
            for (k, v) in r.versions.enumerated() {
                guard directory.knows(v.dot.node) else {
                    throw Refusal(.unknownNode, "\(path).versions[\(k)].dot.node: \(v.dot.node) is not in the topology")
                }
                guard !nodes.contains(v.dot.node) else {
                    throw Refusal(.impossibleCausality, "\(path): two concurrent versions by \(v.dot.node), whose writes supersede each other")
                }
                nodes.append(v.dot.node)
                if v.dot.stamp > top { top = v.dot.stamp }
                guard v.value.count <= d.maxValueBytes else {
                    throw Refusal(.tooLarge, "\(path).versions[\(k)].value: \(v.value.count) bytes; at most \(d.maxValueBytes)")
                }
                do throws(Refusal) { try d.check(v.value, context) } catch { throw error.at("\(path).versions[\(k)].value") }
            }
            for e in r.seen.sorted {
                guard directory.knows(e.node) else {
                    throw Refusal(.unknownNode, "\(path).seen: \(e.node) is not in the topology")
                }
                if nodes.contains(e.node) {
                    // The version's own dot: its writer cannot have seen a later write of its own node.
                    guard r.versions.contains(where: { $0.dot.node == e.node && $0.dot.stamp == e.stamp }) else {
                        throw Refusal(.impossibleCausality, "\(path).seen: \(e.node):\(e.stamp) is later than that node's version it holds")
                    }
                } else if e.stamp >= top {
                    // A superseded write was seen by a writer whose write came later.
                    throw Refusal(.impossibleCausality, "\(path).seen: claims \(e.node):\(e.stamp), not earlier than any version it holds")
                }
            }
        }
        var previous: ChildKey?
        for (k, c) in delta.children.enumerated() {
            guard let coll = collection(number: UInt64(c.collection)) else {
                throw Refusal(.unknownKind, "children[\(k)]: \(name) has no collection \(c.collection)")
            }
            var path: String { "children[\(coll.name)/\(c.id)]" }
            if let p = previous, !(p < c.key) {
                throw Refusal(.invalidValue, "\(path): children out of order or repeated")
            }
            previous = c.key
            guard directory.knows(c.dot.node) else {
                throw Refusal(.unknownNode, "\(path).dot.node: \(c.dot.node) is not in the topology")
            }
            guard c.value.count <= coll.maxValueBytes else {
                throw Refusal(.tooLarge, "\(path).value: \(c.value.count) bytes; at most \(coll.maxValueBytes)")
            }
            do throws(Refusal) { try coll.check(c.value, context) } catch { throw error.at("\(path).value") }
        }
        try recordCheck?(delta, context)
    }
}
