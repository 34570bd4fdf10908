import ArgumentParser
import Foundation

struct ConflictCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "conflicts", abstract: "Values that lost a race between nodes, and their resolution.",
        subcommands: [List.self, Resolve.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Open conflicts on a node (every replica lists the same).")
        @OptionGroup var client: ClientOptions

        func run() async throws {
            let (obj, data) = try await APIClient(client).call("GET", "/v1/conflicts?limit=500")
            if client.json { printJSON(data); return }
            let rows = ((obj as? [String: Any])?["items"] as? [[String: Any]] ?? []).map { c -> [String] in
                let w = c["winner"] as? [String: Any] ?? [:], l = c["loser"] as? [String: Any] ?? [:]
                return [text(c["ticketNumber"]), text(c["field"]), "\(text(w["value"])) (\(text(w["node"])))",
                        "\(text(l["value"])) (\(text(l["node"])))", text(c["id"])]
            }
            if rows.isEmpty { print("no open conflicts"); return }
            printTable(["TICKET", "FIELD", "WINNER", "LOSER", "ID"], rows)
        }
    }

    struct Resolve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Keep the winning or the losing value of a conflict.")
        @OptionGroup var client: ClientOptions
        @Argument(help: "The conflict's id (from `ekc conflicts list`).") var id: String
        @Option(help: "winner or loser") var keep: String

        func validate() throws {
            guard ["winner", "loser"].contains(keep) else { throw ValidationError("--keep must be winner or loser") }
        }

        func run() async throws {
            let (obj, data) = try await APIClient(client).call("POST", "/v1/conflicts/\(id)/resolve", body: ["keep": keep])
            if client.json { printJSON(data) } else { TicketCommand.printTicket(obj) }
        }
    }
}
