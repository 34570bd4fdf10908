import CaseModel
import CaseStore
import Foundation
import NIOCore
import Replication

/// Replica digests on the operator API (ops): a scope's digest level by level, and a
/// repair round with a peer on demand.
extension OperatorAPI {
    /// `GET /v1/digest?scope=ORG[&range=0-255 | &bucket=0-65535]`: the scope's root and
    /// ranges, one range's buckets, or one bucket's records. The scope is this node's
    /// organisation (everything it holds) or a partner's (what a transfer lets it hold).
    func digest(_ q: [String: String]) throws -> APIResponse {
        try checkQuery(q, allowed: ["scope", "range", "bucket"])
        let organisation = store.organisation
        let scope = q["scope"] ?? organisation
        guard !scope.isEmpty, scope.utf8.count <= 64, !scope.utf8.contains(0) else {
            throw APIError.badRequest("invalid_parameter", "scope is an organisation code (1-64 characters)", field: "scope")
        }
        guard q["range"] == nil || q["bucket"] == nil else {
            throw APIError.badRequest("invalid_parameter", "give range or bucket, not both", field: "bucket")
        }
        var w = JSONWriter()
        w.beginObject()
        w.field("node", node.value)
        w.field("organisation", organisation)
        w.field("scope", scope)
        w.key("ready"); w.bool(store.digestsReady)
        if let r = q["range"] {
            guard let range = UInt8(r) else {
                throw APIError.badRequest("invalid_parameter", "range is a number from 0 to 255", field: "range")
            }
            w.field("range", range)
            w.key("buckets"); nodes(&w, try store.digestBuckets(scope: scope, range: range), name: "bucket")
        } else if let b = q["bucket"] {
            guard let bucket = UInt16(b) else {
                throw APIError.badRequest("invalid_parameter", "bucket is a number from 0 to 65535", field: "bucket")
            }
            w.field("bucket", bucket)
            w.key("entries"); w.beginArray()
            for e in try store.digestEntries(scope: scope, bucket: bucket) {
                w.beginObject()
                w.field("kind", store.kinds[e.kind]?.name ?? "\(e.kind)")
                w.field("id", e.id.description)
                w.field("sum", e.value.description)
                w.endObject()
            }
            w.endArray()
        } else {
            let summary = try store.digestSummary(scope: scope)
            w.field("records", summary.records)
            w.field("root", summary.root.hex)
            w.key("ranges"); nodes(&w, summary.ranges, name: "range")
        }
        w.endObject()
        return .json(.ok, w)
    }

    private func nodes(_ w: inout JSONWriter, _ nodes: [DigestNode], name: String) {
        w.beginArray()
        for n in nodes {
            w.beginObject()
            w.key(name); w.int(n.position)
            w.field("records", n.records)
            w.field("sum", n.sum.description)
            w.endObject()
        }
        w.endArray()
    }

    /// `POST /v1/digest/repair {"peer": NODE}`: compares with the peer now and pulls
    /// what differs; answers what the round found and did.
    func repair(_ req: APIRequest, _ loop: EventLoop) throws -> EventLoopFuture<APIResponse> {
        var r = try ObjectReader(try jsonBody(req))
        let peer = try r.requiredString("peer")
        try r.rejectUnknown()
        guard let antiEntropy else {
            throw APIError.unprocessable("invalid_value", "this node replicates with no peer", field: "peer")
        }
        guard let node = NodeID(peer), antiEntropy.peers.contains(where: { $0.node == node }) else {
            throw APIError.unprocessable("invalid_value", "\(peer) is not a peer of this node (GET /v1/replication lists them)",
                                         field: "peer")
        }
        let promise = loop.makePromise(of: APIResponse.self)
        promise.completeWithTask {
            let round = await antiEntropy.round(with: node)
            var w = JSONWriter()
            OperatorAPI.write(round, &w)
            return .json(round.error == nil ? .ok : .badGateway, w)
        }
        return promise.futureResult
    }

    static func write(_ round: RepairRound, _ w: inout JSONWriter) {
        w.beginObject()
        w.field("peer", round.peer.value)
        w.field("at", time: Millis(round.at.timeIntervalSince1970 * 1000))
        w.field("scope", round.scope)
        let o = round.outcome
        w.key("ready"); w.bool(o.ready)
        w.key("equal"); w.bool(o.equal)
        w.field("ourRecords", o.ourRecords)
        w.field("theirRecords", o.theirRecords)
        w.field("ourRoot", round.ourRoot)
        w.field("theirRoot", round.theirRoot)
        w.field("differingRanges", o.differingRanges)
        w.field("differingBuckets", o.differingBuckets)
        w.field("differingRecords", o.differingRecords)
        w.field("pulled", o.pulled)
        w.field("repaired", o.repaired)
        w.field("refused", o.refused)
        w.field("damagedReplaced", o.damagedReplaced)
        w.field("calls", o.calls)
        w.field("bytes", o.bytes)
        w.field("result", round.result)
        w.key("refusal")
        if let r = round.refusal {
            w.beginObject()
            w.field("reason", r.reason.rawValue)
            w.field("detail", r.detail)
            w.endObject()
        } else {
            w.null()
        }
        w.field("error", round.error)
        w.endObject()
    }
}
