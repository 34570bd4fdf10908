import Access
import CaseModel
import CaseStore
import Foundation
import Metrics
import NIOCore
import Replication

/// The node's own state for operators and monitoring: health, metrics, replication
/// links, conflicts waiting for a person, the change feed, and the API's document.
extension OperatorAPI {
    /// The OpenAPI document bundled with the node, as it is.
    func openAPI() -> APIResponse {
        APIResponse(status: .ok, headers: ["content-type": "application/yaml"], body: openAPIDocument)
    }

    /// Liveness for anyone (the node's name and organisation, so that a client can
    /// pick its token); details for `ops`.
    func health(_ req: APIRequest) throws -> APIResponse {
        var w = JSONWriter()
        w.beginObject()
        w.field("status", "ok")
        w.field("node", node.value)
        w.field("organisation", access.verifier.provider.organisation)
        guard let p = req.principal, case .allowed = PermissionTable.decide(.healthDetails, for: p) else {
            w.endObject()
            return .json(.ok, w)
        }
        let s = try store.stats()
        w.field("region", region)
        w.key("release"); w.beginObject()
        w.field("name", Release.name)
        w.field("storeFormat", Int(Release.storeFormat))
        w.key("protocolVersions"); w.beginObject()
        w.field("min", Int(Release.protocolVersions.lowerBound))
        w.field("max", Int(Release.protocolVersions.upperBound))
        w.endObject()
        w.key("capabilities"); w.beginArray()
        for n in Release.capabilities.names { w.string(n) }
        w.endArray()
        w.endObject()
        w.field("uptimeSeconds", Int(Date().timeIntervalSince(startedAt)))
        if let r = store.restoreRecord {
            w.key("restore"); w.beginObject()
            w.key("pending"); w.bool(store.restorePending)
            w.field("fromStoreId", r.fromStoreId)
            w.field("backupSequence", r.backupSequence)
            w.field("backupTakenAt", Int(r.backupTakenAt))
            w.field("restoredAt", Int(r.restoredAt))
            w.field("numbersFrom", r.numbersFrom)
            w.field("numbersYear", r.numbersYear)
            w.endObject()
        }
        w.key("store"); w.beginObject()
        w.field("storeId", s.storeID)
        w.field("tickets", s.tickets)
        w.field("lastSequence", s.lastSequence)
        w.field("mapSizeBytes", s.mapSize)
        w.field("usedBytes", s.usedBytes)
        w.field("mapGrowths", s.mapGrowths)
        w.field("commitQueueDepth", store.queueDepth)
        w.endObject()
        // How many records wait for a person to resolve a conflict (the list itself
        // shows values, which is an operator's, not ops', to see).
        w.field("conflicts", s.tables.first { $0.name == "idx_conflicts" }?.entries ?? 0)
        // Unaccepted transfers past their due time are flagged, never silently kept.
        let overdue = try store.overdueTransfers(now: store.configuration.wallClock())
        w.key("transfers"); w.beginObject()
        w.field("overdueIncoming", overdue.incoming)
        w.field("overdueOutgoing", overdue.outgoing)
        // Tickets whose transfer ended, kept until their home holds this node's notes.
        w.field("purgesWaiting", (try? store.heldPurgeCount()) ?? 0)
        w.field("writesAwaitingAcceptance", (try? store.heldAdmissionCount()) ?? 0)
        w.endObject()
        // Digests: built, and what the scrub found (records changed under the store).
        w.key("digests"); w.beginObject()
        w.key("ready"); w.bool(store.digestsReady)
        if let s = scrubber?.status {
            w.key("scrubRunning"); w.bool(s.running)
            w.field("scrubPasses", s.passes)
            w.field("lastScrub", time: s.lastFinished.map { Millis($0.timeIntervalSince1970 * 1000) })
        }
        w.field("damagedRecords", (try? store.damagedRecords().count) ?? 0)
        w.endObject()
        if let expiry = certificateNotValidAfter {
            w.key("certificate"); w.beginObject()
            w.field("notValidAfter", time: Millis(expiry.timeIntervalSince1970 * 1000))
            w.key("daysLeft"); w.double(expiry.timeIntervalSinceNow / 86_400)
            w.endObject()
        }
        w.endObject()
        return .json(.ok, w)
    }

    func metrics() -> APIResponse {
        if let s = try? store.stats() {
            Gauge(label: "ekc_store_tickets").record(s.tickets)
            Gauge(label: "ekc_store_last_sequence").record(Int64(clamping: s.lastSequence))
            Gauge(label: "ekc_store_map_size_bytes").record(s.mapSize)
            Gauge(label: "ekc_store_used_bytes").record(s.usedBytes)
            Gauge(label: "ekc_store_map_growths").record(s.mapGrowths)
            Gauge(label: "ekc_store_commit_queue_depth").record(store.queueDepth)
            Gauge(label: "ekc_conflicts_waiting").record((try? store.conflicts(limit: 10_000).count) ?? 0)
            if let overdue = try? store.overdueTransfers(now: store.configuration.wallClock()) {
                Gauge(label: "ekc_transfers_overdue", dimensions: [("direction", "in")]).record(overdue.incoming)
                Gauge(label: "ekc_transfers_overdue", dimensions: [("direction", "out")]).record(overdue.outgoing)
            }
            let now = Date()
            if let expiry = certificateNotValidAfter {
                Gauge(label: "ekc_tls_certificate_expiry_seconds").record(expiry.timeIntervalSince(now))
            }
            for l in replicator?.links ?? [] {
                let peer = [("peer", l.peer.value)]
                Gauge(label: "ekc_replication_lag_records", dimensions: peer).record(Int64(clamping: l.lagRecords))
                Gauge(label: "ekc_replication_lag_seconds", dimensions: peer).record(l.lagSeconds(now: now))
                Gauge(label: "ekc_replication_connected", dimensions: peer).record(l.connected ? 1 : 0)
                if let offset = l.clockOffsetMillis {
                    Gauge(label: "ekc_replication_peer_clock_offset_seconds", dimensions: peer).record(Double(offset) / 1000)
                }
            }
        }
        var bytes: [UInt8] = []
        registry?.emit(into: &bytes)
        return APIResponse(status: .ok, headers: ["content-type": "text/plain; version=0.0.4"], body: ByteBuffer(bytes: bytes))
    }

    /// Each replication link: connected or not, last success, the peer's sequence and
    /// what we applied of it, lag in records and seconds.
    func replication() throws -> APIResponse {
        let now = Date()
        var w = JSONWriter()
        w.beginObject()
        w.field("node", node.value)
        w.field("storeId", store.storeID)
        w.field("lastSequence", store.lastSequence)
        w.key("peers"); w.beginArray()
        let rounds = antiEntropy?.rounds ?? [:]
        for l in replicator?.links ?? [] {
            w.beginObject()
            w.field("node", l.peer.value)
            w.field("address", l.address)
            w.key("connected"); w.bool(l.connected)
            w.field("lastSuccess", time: l.lastSuccess.map { Millis($0.timeIntervalSince1970 * 1000) })
            w.field("lastError", l.lastError)
            w.field("peerSequence", l.peerSequence)
            w.field("appliedSequence", l.appliedSequence)
            w.field("lagRecords", l.lagRecords)
            w.key("lagSeconds"); w.double(l.lagSeconds(now: now))
            w.field("recordsReceived", l.recordsReceived)
            w.key("protocolVersion")
            if let v = l.protocolVersion { w.int(Int(v)) } else { w.null() }
            w.key("capabilities")
            if let c = l.capabilities {
                w.beginArray()
                for n in c.names { w.string(n) }
                w.endArray()
            } else { w.null() }
            w.key("rejected"); w.beginObject()
            w.field("records", l.rejected.records)
            w.key("byReason"); w.beginObject()
            for (k, n) in l.rejected.byReason.sorted(by: { $0.key < $1.key }) { w.key(k); w.int(n) }
            w.endObject()
            w.key("recent"); w.beginArray()
            for r in l.rejected.recent {
                w.beginObject()
                w.field("at", time: Millis(r.at.timeIntervalSince1970 * 1000))
                w.field("sequence", r.sequence)
                w.field("kind", r.kind)
                w.field("id", r.id)
                w.field("reason", r.reason)
                w.field("detail", r.detail)
                w.key("wholeRecord"); w.bool(r.whole)
                w.endObject()
            }
            w.endArray()
            w.endObject()
            w.key("duplicateNumbers"); w.beginArray(); for n in l.duplicateNumbers { w.string(n) }; w.endArray()
            w.key("clockOffsetMillis")
            if let o = l.clockOffsetMillis { w.int(o) } else { w.null() }
            w.key("resync")
            if let r = l.resync {
                w.beginObject()
                w.field("reason", r.reason.rawValue)
                w.field("at", time: Millis(r.at.timeIntervalSince1970 * 1000))
                w.field("checkpointSequence", r.checkpointSequence)
                w.field("resumedAfter", r.resumedAfter)
                w.endObject()
            } else {
                w.null()
            }
            // The last digest comparison over this link (anti-entropy).
            w.key("antiEntropy")
            if let round = rounds[l.peer] { OperatorAPI.write(round, &w) } else { w.null() }
            w.endObject()
        }
        w.endArray()
        // What this node left out of its feed for each peer (entries it could not encode).
        w.key("served"); w.beginArray()
        for (peer, s) in store.skippedFeedEntries.sorted(by: { $0.key.value < $1.key.value }) {
            w.beginObject()
            w.field("node", peer.value)
            w.field("skippedEntries", s.count)
            w.key("recentSkips"); w.beginArray()
            for k in s.recent {
                w.beginObject()
                w.field("sequence", k.sequence)
                w.field("kind", Int(k.kind.rawValue))
                w.field("id", k.id.description)
                w.field("reason", k.reason)
                w.endObject()
            }
            w.endArray()
            w.endObject()
        }
        w.endArray()
        w.endObject()
        return .json(.ok, w)
    }

    func changes(_ q: [String: String]) throws -> APIResponse {
        try checkQuery(q, allowed: ["since", "limit"])
        var since: UInt64 = 0
        if let s = q["since"] {
            guard let v = UInt64(s) else { throw APIError.badRequest("invalid_parameter", "since must be a sequence number (0 or more)", field: "since") }
            since = v
        }
        let limit = try intParam(q, "limit", range: 1...10_000) ?? 100
        let page = try store.changes(since: since, limit: limit)
        var w = JSONWriter(capacity: 128 * max(1, page.changes.count))
        w.beginObject()
        w.key("changes"); w.beginArray()
        for c in page.changes {
            w.beginObject()
            w.field("seq", c.sequence)
            w.field("id", c.ticket.id.description)
            w.field("number", c.ticket.number.description)
            w.field("version", c.ticket.version)
            w.field("status", c.ticket.status.rawValue)
            w.field("updatedAt", time: c.ticket.updatedAt)
            w.key("registers"); w.beginArray(); for r in c.registers { w.string(r) }; w.endArray()
            w.key("children"); w.beginObject()
            for (k, n) in c.children.sorted(by: { $0.key < $1.key }) { w.key(k); w.int(n) }
            w.endObject()
            w.endObject()
        }
        w.endArray()
        w.field("lastSequence", page.lastSequence)
        w.field("next", page.changes.last?.sequence ?? since)
        w.endObject()
        return .json(.ok, w)
    }

    /// A conflicting citizen detail is shown masked like the ticket shows it.
    static func masked(_ field: String, _ value: String?) -> String? {
        guard let value, value != "none" else { return value }
        switch field {
        case "citizenName": return Citizen.maskName(value)
        case "citizenSnils": return (try? Snils(value))?.masked ?? "***"
        case "citizenPhone": return value.count >= 2 ? Citizen.maskPhone(value) : "***"
        default: return value
        }
    }

    /// Values that lost a race, beside the winners, on this node (every replica lists the same).
    func conflicts(_ q: [String: String]) throws -> APIResponse {
        try checkQuery(q, allowed: ["limit"])
        let limit = try intParam(q, "limit", range: 1...TicketQuery.maxLimit) ?? 100
        let list = try store.conflicts(limit: limit)
        var numbers: [TicketID: String] = [:]
        for c in list where c.kind == TicketRecord.kind && numbers[c.recordID] == nil {
            numbers[c.recordID] = try store.ticket(.id(c.recordID))?.number.description
        }
        var w = JSONWriter(capacity: 256 * max(1, list.count))
        w.beginObject(); w.key("items"); w.beginArray()
        for c in list {
            w.beginObject()
            w.field("id", c.id)
            w.field("kind", c.kindName)
            w.field("ticketId", c.recordID.description)
            w.field("ticketNumber", numbers[c.recordID] ?? nil)
            w.field("field", c.field)
            w.key("winner"); w.beginObject()
            w.field("value", OperatorAPI.masked(c.field, c.winningValue)); w.field("node", c.winner.node.value); w.field("at", time: c.winner.stamp.millis)
            w.key("fields"); w.beginObject()
            for f in c.winningFields { w.key(f.name); w.string(f.value.flatMap { OperatorAPI.masked(f.name, $0) }) }
            w.endObject()
            w.field("stamp", c.winner.stamp.description)
            w.endObject()
            w.key("loser"); w.beginObject()
            w.field("value", OperatorAPI.masked(c.field, c.losingValue)); w.field("node", c.loser.node.value); w.field("at", time: c.loser.stamp.millis)
            w.key("fields"); w.beginObject()
            for f in c.losingFields { w.key(f.name); w.string(f.value.flatMap { OperatorAPI.masked(f.name, $0) }) }
            w.endObject()
            w.field("stamp", c.loser.stamp.description)
            w.endObject()
            w.endObject()
        }
        w.endArray(); w.endObject()
        return .json(.ok, w)
    }

    /// `{"keep": "winner" | "loser"}`: the choice is itself a replicated edit. `conflictID`
    /// comes percent-decoded from the router.
    func resolve(_ conflictID: String, _ req: APIRequest, _ loop: EventLoop) throws -> EventLoopFuture<APIResponse> {
        var r = try ObjectReader(try jsonBody(req))
        guard let keep = try r.enumeration("keep", ConflictChoice.self) else {
            throw APIError.unprocessable("missing_field", "keep is required: winner or loser", field: "keep")
        }
        try r.rejectUnknown()
        return submit(.resolve(conflictID: conflictID, keep: keep), try actor(req), loop) { outcome in
            if let ticket = outcome.ticket { return self.ticketResponse(ticket) }
            // A record of another kind, or a ticket not shown here: what was resolved.
            var w = JSONWriter()
            w.beginObject()
            w.field("resolved", conflictID)
            if case .record(let id) = outcome { w.field("recordId", id.description) }
            w.endObject()
            return .json(.ok, w)
        }
    }
}
