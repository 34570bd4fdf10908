import ArgumentParser
import Foundation

struct TicketCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ticket", abstract: "Create, show, list and edit tickets through a node's API.",
        subcommands: [Create.self, Show.self, List.self, AddNote.self, Status.self, Assign.self])

    static func printTicket(_ obj: Any) {
        guard let t = obj as? [String: Any] else { return }
        let d = t["deadlines"] as? [String: Any] ?? [:]
        let c = t["citizen"] as? [String: Any]
        let rows: [(String, Any?)] = [
            ("number", t["number"]), ("id", t["id"]), ("status", t["status"]), ("version", t["version"]),
            ("channel", t["channel"]), ("topic", t["topic"]), ("support measure", t["supportMeasure"]),
            ("legal regime", t["legalRegime"]), ("priority", t["priority"]), ("assignee", t["assignee"]),
            ("citizen", c.map { "\(text($0["ref"]))  \(text($0["name"]))  SNILS \(text($0["snils"]))" }),
            ("subject", t["subject"]), ("statement", t["statement"]),
            ("received", t["receivedAt"]), ("registered", t["registeredAt"]), ("updated", t["updatedAt"]),
            ("register by", d["registerBy"]), ("forward by", d["forwardBy"]), ("answer by", d["answerBy"]),
            ("callback by", d["callbackBy"]), ("owner node", t["ownerNode"]),
        ] + (t["handlerStatus"].map { $0 is NSNull ? [] : [("at receiver", $0)] } ?? [])
        for (k, v) in rows { print("\(k.padding(toLength: 16, withPad: " ", startingAt: 0))\(text(v))") }
        // Where the request is: each transfer's state, the answer or the reason.
        let transfers = t["transfers"] as? [[String: Any]] ?? []
        if !transfers.isEmpty {
            print("")
            printTable(["TRANSFER", "KIND", "TO", "STATE", "DUE", "ACCEPTED", "ANSWER / REASON"], transfers.map { tr in
                let last = (tr["steps"] as? [[String: Any]])?.last
                let reason = (last?["reason"] as? [String: Any]).map { "\(text($0["code"])): \(text($0["text"]))" }
                return [text(tr["id"]), text(tr["kind"]), text(tr["to"]),
                        text(tr["state"]) + ((tr["overdue"] as? Bool) == true ? " OVERDUE" : ""),
                        String(text(tr["due"]).prefix(16)), String(text(tr["acceptedAt"]).prefix(16)),
                        shorten((tr["answer"] as? String) ?? reason ?? "-", 60)]
            })
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Register a citizen's request.")
        @OptionGroup var client: ClientOptions
        @Option(help: "phone, walk-in, video-sign, callback, web, epgu, chatbot, voicemail, email, messenger") var channel = "phone"
        @Option(help: "Topic code, e.g. child-benefits.") var topic: String
        @Option(help: "Support-measure code.") var measure: String?
        @Option(help: "One line.") var subject: String
        @Option(help: "The citizen's words.") var statement: String
        @Option(help: "consultation or appeal-59fz") var regime = "consultation"
        @Option(help: "low, normal, high, urgent") var priority = "normal"
        @Option(help: "Citizen registry reference (synthetic in tests).") var citizenRef: String?
        @Option(help: "Citizen's name (with --citizen-ref).") var citizenName: String?
        @Option(help: "Citizen's phone, +7 and 10 digits (with --citizen-ref).") var citizenPhone: String?

        func run() async throws {
            var body: [String: Any] = ["channel": channel, "topic": topic, "subject": subject, "statement": statement,
                                       "legalRegime": regime, "priority": priority]
            if let measure { body["supportMeasure"] = measure }
            if let citizenRef {
                var c: [String: Any] = ["ref": citizenRef]
                if let citizenName { c["name"] = citizenName }
                if let citizenPhone { c["phone"] = citizenPhone }
                body["citizen"] = c
            } else if citizenName != nil || citizenPhone != nil {
                throw CLIError("--citizen-name and --citizen-phone need --citizen-ref: the citizen's registry reference")
            }
            let (obj, data) = try await APIClient(client).call("POST", "/v1/tickets", body: body)
            if client.json { printJSON(data) } else { TicketCommand.printTicket(obj) }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a ticket by id or number, with notes and history.")
        @OptionGroup var client: ClientOptions
        @Argument(help: "Ticket id or number (38-2026-000001).") var ticket: String
        @Option(help: "Citizen fields to show in full: name, snils, phone (comma-separated); needs --reason. The node logs the disclosure.")
        var unmask: String?
        @Option(help: "Why the citizen's data is needed (recorded in the access log).") var reason: String?

        func validate() throws {
            if unmask != nil && reason == nil { throw ValidationError("--unmask needs --reason: say why the citizen's data is needed") }
        }

        func run() async throws {
            let api = APIClient(client)
            let ref = ticket.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? ticket
            var query = ""
            if let unmask, let reason {
                let enc = { (s: String) in s.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? s }
                query = "?unmask=\(enc(unmask))&reason=\(enc(reason))"
            }
            let (obj, data) = try await api.call("GET", "/v1/tickets/\(ref)\(query)")
            if client.json { printJSON(data); return }
            TicketCommand.printTicket(obj)
            let (notes, _) = try await api.call("GET", "/v1/tickets/\(ref)/notes")
            let noteRows = ((notes as? [String: Any])?["items"] as? [[String: Any]] ?? []).map {
                [text($0["at"]), text($0["author"]), text($0["visibility"]), shorten(text($0["text"]), 80)]
            }
            if !noteRows.isEmpty { print(""); printTable(["NOTE AT", "AUTHOR", "VISIBILITY", "TEXT"], noteRows) }
            let (hist, _) = try await api.call("GET", "/v1/tickets/\(ref)/history")
            let histRows = ((hist as? [String: Any])?["items"] as? [[String: Any]] ?? []).map {
                [text($0["at"]), text($0["actor"]), text($0["node"]), text($0["field"]),
                 "\(text($0["old"])) → \(shorten(text($0["new"]), 60))"]
            }
            print("")
            printTable(["AT", "ACTOR", "NODE", "FIELD", "CHANGE"], histRows)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List tickets, newest pages via --cursor.")
        @OptionGroup var client: ClientOptions
        @Option var status: String?
        @Option var assignee: String?
        @Option(help: "RFC 3339 time or epoch ms.") var updatedSince: String?
        @Option(help: "Tickets whose next deadline is before this time.") var dueBefore: String?
        @Option var limit: Int = 50
        @Option var cursor: String?

        func run() async throws {
            var q = ["limit=\(limit)"]
            for (k, v) in [("status", status), ("assignee", assignee), ("updatedSince", updatedSince),
                           ("dueBefore", dueBefore), ("cursor", cursor)] {
                if let v { q.append("\(k)=\(v.addingPercentEncoding(withAllowedCharacters: .urlQueryAllowed) ?? v)") }
            }
            let (obj, data) = try await APIClient(client).call("GET", "/v1/tickets?" + q.joined(separator: "&"))
            if client.json { printJSON(data); return }
            let page = obj as? [String: Any] ?? [:]
            let rows = (page["items"] as? [[String: Any]] ?? []).map { t -> [String] in
                let d = t["deadlines"] as? [String: Any] ?? [:]
                return [text(t["number"]), text(t["status"]), text(t["priority"]), text(t["assignee"]),
                        text(t["topic"]), text(d["answerBy"] ?? d["registerBy"]).prefix(10).description,
                        shorten(text(t["subject"]), 48)]
            }
            printTable(["NUMBER", "STATUS", "PRIORITY", "ASSIGNEE", "TOPIC", "DUE", "SUBJECT"], rows)
            if let next = page["next"] as? String { print("\nmore: --cursor \(next)") }
        }
    }

    struct AddNote: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "note", abstract: "Append a note to a ticket.")
        @OptionGroup var client: ClientOptions
        @Argument var ticket: String
        @Argument var text: String
        @Flag(help: "Visible to the partner of a transfer (default: internal).") var shared = false

        func run() async throws {
            let (obj, data) = try await APIClient(client).call(
                "POST", "/v1/tickets/\(ticket)/notes", body: ["text": text, "visibility": shared ? "shared" : "internal"])
            if client.json { printJSON(data) } else { print("note \(ekc.text((obj as? [String: Any])?["id"])) added") }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Move a ticket through its lifecycle.")
        @OptionGroup var client: ClientOptions
        @Argument var ticket: String
        @Argument(help: "REGISTERED, IN_WORK, WAITING, DEFERRED, ANSWERED, CLOSED, REOPENED") var status: String
        @Option(help: "Refuse if the ticket is no longer at this version.") var ifMatch: UInt64?

        func run() async throws {
            let headers = ifMatch.map { ["If-Match": "\"\($0)\""] } ?? [:]
            let (obj, data) = try await APIClient(client).call(
                "PATCH", "/v1/tickets/\(ticket)", body: ["status": status.uppercased()], headers: headers)
            if client.json { printJSON(data) } else { TicketCommand.printTicket(obj) }
        }
    }

    struct Assign: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Assign a ticket to an operator (or --clear).")
        @OptionGroup var client: ClientOptions
        @Argument var ticket: String
        @Argument var operatorID: String?
        @Flag var clear = false
        @Option var ifMatch: UInt64?

        func validate() throws {
            if (operatorID == nil) == !clear { throw ValidationError("give an operator id, or --clear") }
        }

        func run() async throws {
            let headers = ifMatch.map { ["If-Match": "\"\($0)\""] } ?? [:]
            let body: [String: Any] = ["assignee": operatorID.map { $0 as Any } ?? NSNull()]
            let (obj, data) = try await APIClient(client).call("PATCH", "/v1/tickets/\(ticket)", body: body, headers: headers)
            if client.json { printJSON(data) } else { TicketCommand.printTicket(obj) }
        }
    }
}
