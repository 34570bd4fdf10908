import ArgumentParser
import CaseStore
import Foundation

/// The personal-data access log: who saw which citizen's data, when, why and from where.
struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit", abstract: "The personal-data access log (auditors).",
        subcommands: [List.self, Verify.self, Export.self])

    static func query(_ pairs: [(String, String?)]) -> String {
        let parts = pairs.compactMap { k, v in
            v.map { "\(k)=\($0.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? $0)" }
        }
        return parts.isEmpty ? "" : "?" + parts.joined(separator: "&")
    }

    struct Filter: ParsableArguments {
        @Option(help: "Only this operator's disclosures.") var subject: String?
        @Option(help: "Only this ticket (id).") var ticket: String?
        @Option(help: "From this time (RFC 3339).") var since: String?
        @Option(help: "Before this time (RFC 3339).") var until: String?
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Entries of the access log, oldest first.")
        @OptionGroup var client: ClientOptions
        @OptionGroup var filter: Filter
        @Option(help: "Entries after this sequence.") var after: Int = 0
        @Option var limit: Int = 100

        func run() async throws {
            let q = AuditCommand.query([("after", String(after)), ("limit", String(limit)), ("subject", filter.subject),
                                        ("ticket", filter.ticket), ("since", filter.since), ("until", filter.until)])
            let (obj, data) = try await APIClient(client).call("GET", "/v1/audit/access" + q)
            if client.json { printJSON(data); return }
            let items = (obj as? [String: Any])?["items"] as? [[String: Any]] ?? []
            printTable(["SEQ", "AT", "SUBJECT", "ROLE", "ACTION", "TICKET", "FIELDS", "REASON", "FROM"], items.map {
                [text($0["sequence"]), text($0["at"]), text($0["subject"]), text($0["role"]), text($0["action"]),
                 text($0["ticketId"]), (($0["fields"] as? [String]) ?? []).joined(separator: ","),
                 shorten(text($0["reason"]), 40), text($0["remote"])]
            })
        }
    }

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check that the access log is complete and unaltered (exit 1 naming the first bad entry).",
            discussion: "Asks the node (auditor token), or with --data reads a node's data directory directly (running or stopped).")
        @OptionGroup var client: ClientOptions
        @Option(help: "A node's data directory, read without the node.") var data: String?

        func run() async throws {
            if let data {
                guard FileManager.default.fileExists(atPath: data + "/data.mdb") else {
                    throw CLIError("\(data) holds no store (no data.mdb); pass --data DIR of a node")
                }
                let result: AccessLogVerification
                do { result = try CaseStore.verifyAccessLog(path: data) } catch {
                    throw CLIError("cannot read the access log in \(data): \(error)")
                }
                switch result {
                case .intact(let count, let head, let hash):
                    print("access log intact: \(count) entries, head #\(head) sha256 \(hash)")
                case .tampered(let p):
                    throw CLIError("access log TAMPERED at entry #\(p.sequence) (\(p.kind.rawValue)): \(p.message)")
                }
                return
            }
            let (obj, data) = try await APIClient(client).call("GET", "/v1/audit/verify")
            if client.json { printJSON(data) }
            let o = obj as? [String: Any] ?? [:]
            if o["intact"] as? Bool == true {
                if !client.json { print("access log intact: \(text(o["entries"])) entries, head #\(text(o["head"])) sha256 \(text(o["headHash"]))") }
            } else {
                let p = o["problem"] as? [String: Any] ?? [:]
                throw CLIError("access log TAMPERED at entry #\(text(p["sequence"])) (\(text(p["kind"]))): \(text(p["message"]))")
            }
        }
    }

    struct Export: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Every entry (or the filtered ones) as JSON lines, for an inspection.")
        @OptionGroup var client: ClientOptions
        @OptionGroup var filter: Filter
        @Option(help: "Write to this file instead of stdout.") var out: String?

        func run() async throws {
            let api = APIClient(client)
            var lines: [String] = []
            var after = "0"
            while true {
                let q = AuditCommand.query([("after", after), ("limit", "1000"), ("subject", filter.subject),
                                            ("ticket", filter.ticket), ("since", filter.since), ("until", filter.until)])
                let (obj, _) = try await api.call("GET", "/v1/audit/access" + q)
                let o = obj as? [String: Any] ?? [:]
                for item in o["items"] as? [[String: Any]] ?? [] {
                    let d = try JSONSerialization.data(withJSONObject: item, options: [.sortedKeys])
                    lines.append(String(decoding: d, as: UTF8.self))
                }
                guard let next = o["next"] as? String else { break }
                after = next
            }
            let text = lines.map { $0 + "\n" }.joined()
            if let out {
                try text.write(toFile: out, atomically: true, encoding: .utf8)
                FileHandle.standardError.write(Data("\(lines.count) entries written to \(out)\n".utf8))
            } else {
                print(text, terminator: "")
            }
        }
    }
}
