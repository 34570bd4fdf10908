import NIOHTTP1

extension OperatorAPI {
    typealias R = Route<Handler>

    /// Every route of the operator API, one line per method of a path: the pattern,
    /// the route's name in `ekc_http_requests_total{route=...}`, and the handler. An
    /// unknown path is 404; a known path with another method is 405 with `Allow` listing
    /// the path's methods in this order. `{ref}` is a ticket's id or number, checked by
    /// `ticketRef` (404) before anything else of the request.
    ///
    /// A new record kind is new lines here and its handlers in a file of their own
    /// (transfers: TransferHandlers.swift).
    static let routes: [R] = [
        R(.GET, "/v1/tickets", "list") { api, r in .now(try api.list(r.query)) },
        R(.POST, "/v1/tickets", "create") { api, r in .later(try api.create(r.request, r.loop)) },
        R(.GET, "/v1/tickets/{ref}", "show") { api, r in
            .now(try api.show(try api.ticketRef(r.parameter("ref"))))
        },
        R(.PATCH, "/v1/tickets/{ref}", "patch") { api, r in
            .later(try api.patch(try api.ticketRef(r.parameter("ref")), r.request, r.loop))
        },
        R(.GET, "/v1/tickets/{ref}/notes", "notes") { api, r in
            .now(try api.notes(try api.ticketRef(r.parameter("ref"))))
        },
        R(.POST, "/v1/tickets/{ref}/notes", "note") { api, r in
            .later(try api.addNote(try api.ticketRef(r.parameter("ref")), r.request, r.loop))
        },
        R(.GET, "/v1/tickets/{ref}/history", "history") { api, r in
            .now(try api.history(try api.ticketRef(r.parameter("ref"))))
        },
        R(.POST, "/v1/tickets/{ref}/transfers", "transfer_send") { api, r in
            .later(try api.sendTransfer(try api.ticketRef(r.parameter("ref")), r.request, r.loop))
        },
        R(.GET, "/v1/tickets/{ref}/transfers", "ticket_transfers") { api, r in
            .now(try api.ticketTransfers(try api.ticketRef(r.parameter("ref"))))
        },
        R(.GET, "/v1/transfers", "transfers") { api, r in .now(try api.listTransfers(r.query)) },
        R(.GET, "/v1/transfers/{id}", "transfer") { api, r in .now(try api.showTransfer(try api.transferID(r.parameter("id")))) },
    ] + OperatorAPI.transferSteps.map { step in
        R(.POST, "/v1/transfers/{id}/\(step.path)", "transfer_\(step.path)") { api, r in
            .later(try api.transferStep(try api.transferID(r.parameter("id")), step.state, r.request, r.loop))
        }
    } + [
        R(.GET, "/v1/changes", "changes") { api, r in .now(try api.changes(r.query)) },
        R(.GET, "/v1/conflicts", "conflicts") { api, r in .now(try api.conflicts(r.query)) },
        R(.POST, "/v1/conflicts/{id}/resolve", "resolve") { api, r in
            .later(try api.resolve(try r.parameter("id"), r.request, r.loop))
        },
        R(.GET, "/v1/replication", "replication") { api, _ in .now(try api.replication()) },
        R(.GET, "/v1/health", "health") { api, _ in .now(try api.health()) },
        R(.GET, "/metrics", "metrics") { api, _ in .now(api.metrics()) },
        R(.GET, "/openapi.yaml", "openapi") { api, _ in .now(api.openAPI()) },
    ]
}
