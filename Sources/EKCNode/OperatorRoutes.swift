import Access
import NIOHTTP1

extension OperatorAPI {
    typealias R = Route<Handler>

    /// Every route of the operator API, one line per method of a path: the pattern,
    /// the route's name in `ekc_http_requests_total{route=...}`, and the handler. An
    /// unknown path is 404; a known path with another method is 405 with `Allow` listing
    /// the path's methods in this order. The action is what the permission table
    /// (Access.PermissionTable) decides the request by, before the handler runs; an
    /// edit that needs more (a patch that assigns) asks again in its handler. `{ref}` is a ticket's id or number, checked by
    /// `ticketRef` (404) before anything else of the request.
    ///
    /// A new record kind is new lines here and its handlers in a file of their own
    /// (transfers: TransferHandlers.swift).
    static let routes: [R] = [
        R(.GET, "/v1/tickets", "list", .ticketsList) { api, r in .now(try api.list(r.query)) },
        R(.POST, "/v1/tickets", "create", .ticketCreate) { api, r in .later(try api.create(r.request, r.loop)) },
        R(.GET, "/v1/tickets/{ref}", "show", .ticketRead) { api, r in
            try api.show(try api.ticketRef(r.parameter("ref")), r)
        },
        R(.PATCH, "/v1/tickets/{ref}", "patch", .ticketEdit) { api, r in
            .later(try api.patch(try api.ticketRef(r.parameter("ref")), r.request, r.loop))
        },
        R(.GET, "/v1/tickets/{ref}/notes", "notes", .notesRead) { api, r in
            .now(try api.notes(try api.ticketRef(r.parameter("ref"))))
        },
        R(.POST, "/v1/tickets/{ref}/notes", "note", .noteAdd) { api, r in
            .later(try api.addNote(try api.ticketRef(r.parameter("ref")), r.request, r.loop))
        },
        R(.GET, "/v1/tickets/{ref}/history", "history", .historyRead) { api, r in
            .now(try api.history(try api.ticketRef(r.parameter("ref"))))
        },
        R(.POST, "/v1/tickets/{ref}/transfers", "transfer_send", .transferSend) { api, r in
            .later(try api.sendTransfer(try api.ticketRef(r.parameter("ref")), r.request, r.loop))
        },
        R(.GET, "/v1/tickets/{ref}/transfers", "ticket_transfers", .transfersRead) { api, r in
            .now(try api.ticketTransfers(try api.ticketRef(r.parameter("ref"))))
        },
        R(.GET, "/v1/transfers", "transfers", .transfersRead) { api, r in .now(try api.listTransfers(r.query)) },
        R(.GET, "/v1/transfers/{id}", "transfer", .transfersRead) { api, r in .now(try api.showTransfer(try api.transferID(r.parameter("id")))) },
    ] + OperatorAPI.transferSteps.map { step in
        R(.POST, "/v1/transfers/{id}/\(step.path)", "transfer_\(step.path)", step.state == .cancelled ? .transferCancel : .transferAnswer) { api, r in
            .later(try api.transferStep(try api.transferID(r.parameter("id")), step.state, r.request, r.loop))
        }
    } + [
        R(.GET, "/v1/changes", "changes", .changesRead) { api, r in .now(try api.changes(r.query)) },
        R(.GET, "/v1/conflicts", "conflicts", .conflictsRead) { api, r in .now(try api.conflicts(r.query)) },
        R(.POST, "/v1/conflicts/{id}/resolve", "resolve", .conflictResolve) { api, r in
            .later(try api.resolve(try r.parameter("id"), r.request, r.loop))
        },
        R(.POST, "/v1/exports", "export", .personalDataExport) { api, r in .later(try api.export(r)) },
        R(.GET, "/v1/audit/access", "audit_access", .auditRead) { api, r in .now(try api.accessLog(r.query)) },
        R(.GET, "/v1/audit/verify", "audit_verify", .auditRead) { api, r in .now(try api.verifyAccessLog(r.query)) },
        R(.GET, "/v1/replication", "replication", .replicationRead) { api, _ in .now(try api.replication()) },
        R(.GET, "/v1/digest", "digest", .replicationRead) { api, r in .now(try api.digest(r.query)) },
        R(.POST, "/v1/digest/repair", "digest_repair", .replicationRepair) { api, r in .later(try api.repair(r.request, r.loop)) },
        R(.GET, "/v1/health", "health", nil) { api, r in .now(try api.health(r.request)) },
        R(.GET, "/metrics", "metrics", .metricsRead) { api, _ in .now(api.metrics()) },
        R(.GET, "/openapi.yaml", "openapi", nil) { api, _ in .now(api.openAPI()) },
    ]

    /// Who may call each route, from the route table and the permission table: what
    /// `ekc access table` prints and the tests generate their cases from.
    public static var accessTable: [(method: String, pattern: String, action: String?, roles: [String])] {
        routes.map { r in
            (r.method.rawValue, r.pattern, r.action?.rawValue,
             r.action.map { PermissionTable.roles(for: $0).sorted().map(\.rawValue) } ?? [])
        }
    }
}
