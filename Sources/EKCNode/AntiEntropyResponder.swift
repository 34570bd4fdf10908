import CaseModel
import CaseStore
import Foundation
import Replication
import Wire

/// The source's side of anti-entropy (proto/README.md §13): a level of the caller's
/// scope's digest, and whole records of that scope. The scope is the caller's
/// organisation, from its certificate; nothing in the request widens it.
enum AntiEntropyResponder {
    struct Reply {
        var status: Int
        var contentType: String
        var body: [UInt8]

        static func refused(_ status: Int, _ message: String) -> Reply {
            Reply(status: status, contentType: "text/plain; charset=utf-8", body: Array(message.utf8))
        }
    }

    static func handles(_ path: String) -> Bool {
        path == ReplicationProtocol.digestPath || path == ReplicationProtocol.recordsPath
    }

    /// A request body past the protocol's 64 KiB, named as the request it was meant to be.
    static func bodyTooLarge(path: String) -> Reply {
        path == ReplicationProtocol.digestPath
            ? .refused(400, "the DigestRequest exceeds \(ReplicationProtocol.maxRequestBytes) bytes")
            : .refused(400, "the RecordsRequest exceeds \(ReplicationProtocol.maxRequestBytes) bytes "
                + "(records: at most \(ReplicationProtocol.maxRecordsPerRequest) per request)")
    }

    /// `partner`: the caller's organisation ("" for a peer the topology does not name).
    /// `link`: what the caller's pull stream last spoke (proto/README §8.1); none known
    /// yet is the base protocol, so that a repair never carries what the caller cannot hold.
    static func answer(method: String, path: String, body: [UInt8], allowed: Bool, partner: String, store: CaseStore,
                       link: Capabilities = .base) -> Reply {
        guard allowed, !partner.isEmpty else { return .refused(403, "not a peer of this node") }
        guard method == "POST" else { return .refused(405, "POST only") }
        do {
            switch path {
            case ReplicationProtocol.digestPath:
                let request: WireDigestRequest
                do { request = try WireCoding.parse(WireDigestRequest.self, from: body) } catch {
                    return .refused(400, "DigestRequest: \(error)")
                }
                guard request.protocolVersion == ReplicationProtocol.version else {
                    return .refused(400, "protocol_version \(request.protocolVersion): this node speaks \(ReplicationProtocol.version)")
                }
                return try digest(request, partner: partner, store: store)
            default:
                let request: WireRecordsRequest
                do { request = try WireCoding.parse(WireRecordsRequest.self, from: body) } catch {
                    return .refused(400, "RecordsRequest: \(error)")
                }
                guard request.protocolVersion == ReplicationProtocol.version else {
                    return .refused(400, "protocol_version \(request.protocolVersion): this node speaks \(ReplicationProtocol.version)")
                }
                guard request.records.count <= ReplicationProtocol.maxRecordsPerRequest else {
                    return .refused(400, "records: at most \(ReplicationProtocol.maxRecordsPerRequest) per request")
                }
                var refs: [RecordRef] = []
                for r in request.records {
                    guard (1...255).contains(r.kind.rawValue), let id = RecordID(bytes: Array(r.id)) else {
                        return .refused(400, "records: each names a known kind and a 16-byte id")
                    }
                    refs.append(RecordRef(kind: RecordKindID(rawValue: UInt8(r.kind.rawValue)), id: id))
                }
                let found = try store.wholeRecords(refs, for: partner, maxBytes: ReplicationProtocol.recordsResponseBytes, link: link)
                let entries = found.enumerated().map { (sequence: UInt64($0.offset + 1), delta: $0.element.1) }
                return Reply(status: 200, contentType: ReplicationProtocol.responseContentType,
                             body: BatchFrames.all(entries, sourceLastSequence: store.lastSequence).flatMap(\.bytes))
            }
        } catch {
            return .refused(500, "\(error)")
        }
    }

    private static func digest(_ request: WireDigestRequest, partner: String, store: CaseStore) throws -> Reply {
        var reply = WireDigestReply()
        reply.storeID = Data(store.storeIDBytes)
        reply.scope = partner
        reply.ready = store.digestsReady
        switch request.level {
        case 0:
            let summary = try store.digestSummary(scope: partner)
            reply.records = summary.records
            reply.ranges = ranges(summary.ranges)
        case 1:
            guard request.position <= 0xff else { return .refused(400, "level 1: position is a range, 0-255") }
            reply.ranges = ranges(try store.digestBuckets(scope: partner, range: UInt8(request.position)))
        case 2:
            guard request.position <= 0xffff else { return .refused(400, "level 2: position is a bucket, 0-65535") }
            reply.entries = records(try store.digestEntries(scope: partner, bucket: UInt16(request.position)))
        default:
            return .refused(400, "level \(request.level): 0 (ranges), 1 (buckets of a range) or 2 (records of a bucket)")
        }
        return Reply(status: 200, contentType: ReplicationProtocol.requestContentType, body: try WireCoding.serialize(reply))
    }

    /// A level's ranges or buckets as a DigestReply lists them.
    static func ranges(_ nodes: [DigestNode]) -> [WireDigestRange] {
        nodes.map { n in
            var r = WireDigestRange()
            r.position = UInt32(n.position)
            r.sum = Data(n.sum.bytes)
            r.records = n.records
            return r
        }
    }

    /// A bucket's records as a DigestReply lists them.
    static func records(_ entries: [DigestEntry]) -> [WireDigestRecord] {
        entries.map { e in
            var r = WireDigestRecord()
            r.kind = .init(rawValue: Int(e.kind.rawValue)) ?? .unspecified
            r.id = Data(e.id.bytes)
            r.sum = Data(e.value.bytes)
            return r
        }
    }
}
