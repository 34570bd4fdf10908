import ArgumentParser
import Foundation

struct TransferCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "transfer", abstract: "Hand tickets to other organisations and follow or answer transfers.",
        subcommands: [Send.self, Inbox.self, Outbox.self, Show.self,
                      Step<Accept>.self, Step<Reject>.self, Step<Return>.self, Step<Complete>.self, Step<Cancel>.self])

    static func printTransfer(_ obj: Any) {
        guard let t = obj as? [String: Any] else { return }
        let reason = t["reason"] as? [String: Any] ?? [:]
        let rows: [(String, Any?)] = [
            ("id", t["id"]), ("ticket", t["ticketId"]), ("kind", t["kind"]), ("from", "\(text(t["from"])) (\(text(t["fromNode"])))"),
            ("to", t["to"]), ("state", t["state"]), ("reason", "\(text(reason["code"])): \(text(reason["text"]))"),
            ("scope", (t["scope"] as? [String])?.joined(separator: ", ")), ("created", t["createdAt"]), ("due", t["due"]),
            ("delivered", t["deliveredAt"]), ("accepted", t["acceptedAt"]), ("overdue", t["overdue"]), ("answer", t["answer"]),
        ]
        for (k, v) in rows { print("\(k.padding(toLength: 12, withPad: " ", startingAt: 0))\(text(v))") }
        for (title, key) in [("STEP", "steps"), ("CONFLICTING STEP", "conflicts")] {
            let steps = (t[key] as? [[String: Any]] ?? []).map { s -> [String] in
                let r = s["reason"] as? [String: Any]
                return [text(s["at"]), text(s["state"]), text(s["actor"]), text(s["node"]),
                        shorten(r.map { "\(text($0["code"])): \(text($0["text"]))" } ?? text(s["answer"]), 60)]
            }
            if !steps.isEmpty { print(""); printTable(["AT", title, "ACTOR", "NODE", "REASON OR ANSWER"], steps) }
        }
    }

    static func printList(_ obj: Any) {
        let page = obj as? [String: Any] ?? [:]
        let rows = (page["items"] as? [[String: Any]] ?? []).map { t -> [String] in
            [text(t["id"]), text(t["kind"]), text(t["from"]), text(t["to"]), text(t["state"]),
             text(t["due"]).prefix(16).description, (t["overdue"] as? Bool) == true ? "OVERDUE" : "", text(t["ticketId"])]
        }
        printTable(["ID", "KIND", "FROM", "TO", "STATE", "DUE", "", "TICKET"], rows)
        if let next = page["next"] as? String { print("\nmore: --cursor \(next)") }
    }

    struct Send: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Send a ticket to another organisation (a fund or a region).")
        @OptionGroup var client: ClientOptions
        @Argument(help: "Ticket id or number.") var ticket: String
        @Option(help: "The receiving organisation: a region's code (52) or a fund (pension, social-insurance, employment, mse).") var to: String
        @Option(help: "REDIRECT, INFO_REQUEST or COPY.") var kind = "REDIRECT"
        @Option(help: "Reason code, e.g. pension-recalc.") var reasonCode: String
        @Option(help: "Why, in words.") var reason: String
        @Option(help: "Citizen fields the receiver may see, comma-separated: ref,name,snils,phone.") var scope = "ref"
        @Option(help: "Due time (RFC 3339); a default per kind when absent.") var due: String?

        func run() async throws {
            var body: [String: Any] = ["to": to, "kind": kind, "reason": ["code": reasonCode, "text": reason],
                                       "scope": scope.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }]
            if let due { body["due"] = due }
            let ref = ticket.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? ticket
            let (obj, data) = try await APIClient(client).call("POST", "/v1/tickets/\(ref)/transfers", body: body)
            if client.json { printJSON(data) } else { TransferCommand.printTransfer(obj) }
        }
    }

    struct Inbox: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Transfers addressed to this node's organisation, by due time.")
        @OptionGroup var client: ClientOptions
        @OptionGroup var filter: ListFilter
        func run() async throws { try await filter.list("in", client) }
    }

    struct Outbox: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Transfers this node's organisation sent, oldest first.")
        @OptionGroup var client: ClientOptions
        @OptionGroup var filter: ListFilter
        func run() async throws { try await filter.list("out", client) }
    }

    struct ListFilter: ParsableArguments {
        @Option(help: "Only this state: SENT, DELIVERED, ACCEPTED, COMPLETED, CANCELLED, REJECTED, RETURNED.") var state: String?
        @Flag(help: "Only unaccepted transfers past their due time.") var overdue = false
        @Option var limit = 50
        @Option var cursor: String?

        func list(_ direction: String, _ client: ClientOptions) async throws {
            var q = ["direction=\(direction)", "limit=\(limit)"]
            if let state { q.append("state=\(state)") }
            if overdue { q.append("overdue=true") }
            if let cursor { q.append("cursor=\(cursor.addingPercentEncoding(withAllowedCharacters: .urlQueryAllowed) ?? cursor)") }
            let (obj, data) = try await APIClient(client).call("GET", "/v1/transfers?" + q.joined(separator: "&"))
            if client.json { printJSON(data) } else { TransferCommand.printList(obj) }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "A transfer with its steps.")
        @OptionGroup var client: ClientOptions
        @Argument(help: "Transfer id.") var transfer: String

        func run() async throws {
            let id = transfer.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? transfer
            let (obj, data) = try await APIClient(client).call("GET", "/v1/transfers/\(id)")
            if client.json { printJSON(data) } else { TransferCommand.printTransfer(obj) }
        }
    }

    /// One step command per lifecycle step: its name, its help, whether it takes a reason.
    protocol StepKind {
        static var name: String { get }
        static var abstract: String { get }
        static var needsReason: Bool { get }
    }
    enum Accept: StepKind { static let name = "accept", abstract = "Accept a delivered transfer (receiver).", needsReason = false }
    enum Reject: StepKind { static let name = "reject", abstract = "Reject a delivered transfer (receiver); needs a reason.", needsReason = true }
    enum Return: StepKind { static let name = "return", abstract = "Return an accepted transfer (receiver); needs a reason.", needsReason = true }
    enum Complete: StepKind { static let name = "complete", abstract = "Complete an accepted transfer (receiver), with an answer.", needsReason = false }
    enum Cancel: StepKind { static let name = "cancel", abstract = "Cancel a transfer before acceptance (sender).", needsReason = false }

    struct Step<K: StepKind>: AsyncParsableCommand {
        static var configuration: CommandConfiguration { CommandConfiguration(commandName: K.name, abstract: K.abstract) }
        @OptionGroup var client: ClientOptions
        @Argument(help: "Transfer id.") var transfer: String
        @Option(help: "Reason code (reject, return).") var reasonCode: String?
        @Option(help: "Reason in words (reject, return).") var reason: String?
        @Option(help: "The answer (complete of an INFO_REQUEST).") var answer: String?

        func validate() throws {
            if K.needsReason && (reasonCode == nil || reason == nil) {
                throw ValidationError("\(K.name) needs --reason-code and --reason")
            }
            if (reasonCode == nil) != (reason == nil) { throw ValidationError("give --reason-code and --reason together") }
        }

        func run() async throws {
            var body: [String: Any] = [:]
            if let reasonCode, let reason { body["reason"] = ["code": reasonCode, "text": reason] }
            if let answer { body["answer"] = answer }
            let id = transfer.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? transfer
            let (obj, data) = try await APIClient(client).call("POST", "/v1/transfers/\(id)/\(K.name)", body: body)
            if client.json { printJSON(data) } else { TransferCommand.printTransfer(obj) }
        }
    }
}
