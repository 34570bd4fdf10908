import Access
import CaseModel
import ArgumentParser
import EKCNode
import Foundation
import Identity

/// Where the CLI keeps operators' tokens: one file per organisation, so that a command
/// against any node picks the token of that node's organisation.
enum TokenStore {
    static var directory: String {
        let env = ProcessInfo.processInfo.environment
        if let d = env["EKC_TOKEN_DIR"], !d.isEmpty { return d }
        let config = env["XDG_CONFIG_HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? (NSHomeDirectory() + "/.config")
        return config + "/ekc/tokens"
    }

    static func path(organisation: String) -> String { "\(directory)/\(organisation).jwt" }

    static func save(_ token: String, organisation: String) throws -> String {
        let path = path(organisation: organisation)
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        try? FileManager.default.removeItem(atPath: path)
        guard FileManager.default.createFile(atPath: path, contents: Data((token + "\n").utf8),
                                             attributes: [.posixPermissions: 0o600]) else {
            throw CLIError("cannot write \(path)")
        }
        return path
    }
}

/// Development sign-in: a token from the development identity provider of an
/// organisation, saved where the other commands find it.
struct LoginCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "login",
        abstract: "Sign in with the development identity provider and save the token the other commands use.",
        discussion: """
            For development and tests: signs a token for --user with the given roles using the development key of \
            --org (created in --dev-idp if missing; nodes started without an identity provider use the same key). \
            In production operators get tokens from their organisation's identity provider (e.g. Keycloak) and \
            save them with --save-token, or set EKC_TOKEN.
            """)

    @Option(help: "Operator id: becomes the actor in history and notes.") var user: String?
    @Option(help: "operator, supervisor, auditor or ops (repeat for several).") var role: [String] = []
    @Option(help: "Organisation: a region code (38) or a fund (pension, employment, ...).") var org: String = "38"
    @Option(help: "Development identity provider directory.") var devIdp: String = ".ekc/dev-idp"
    @Option(help: "Topology file: use the organisation's development provider it names.") var config: String?
    @Option(help: "Token lifetime in hours.") var hours: Int = 8
    @Option(help: "Save a token from your identity provider (file, or - for stdin) instead of signing one.") var saveToken: String?
    @Flag(help: "Print the token to stdout instead of saving it.") var print = false

    func validate() throws {
        if saveToken == nil {
            guard let user else { throw ValidationError("--user is required: the operator id to sign in as, e.g. op-ivanova") }
            guard CaseModel.Actor.isValidName(user) else { throw ValidationError("--user \(user): use 1 to 64 letters, digits, '.', '_', '-' or '@'") }
            guard !role.isEmpty else { throw ValidationError("name at least one --role: \(Role.allCases.map(\.rawValue).joined(separator: ", "))") }
            for r in role where Role(rawValue: r) == nil {
                throw ValidationError("--role \(r) is not a role; use \(Role.allCases.map(\.rawValue).joined(separator: ", "))")
            }
        }
        guard (1...24 * 30).contains(hours) else { throw ValidationError("--hours must be 1 to 720") }
        guard !org.isEmpty, org.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 122) || $0 == 45 }) else {
            throw ValidationError("--org \(org): an organisation id is lower-case letters, digits and hyphens")
        }
    }

    func run() async throws {
        if let saveToken {
            let raw = saveToken == "-" ? String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
                : try String(contentsOfFile: saveToken, encoding: .utf8)
            let path = try TokenStore.save(raw.trimmingCharacters(in: .whitespacesAndNewlines), organisation: org)
            Swift.print("token for organisation \(org) saved to \(path)")
            return
        }
        var directory = devIdp
        if let config {
            let topology: Topology
            do { topology = try Topology.load(config) } catch let e as ConfigurationError { throw CLIError(e.description) }
            guard let entry = topology.organisation(org) else {
                throw CLIError("\(config) has no organisation \(org); it lists \(topology.organisationList.map(\.id).joined(separator: ", "))")
            }
            switch try entry.identityProvider?.resolve(organisation: org) {
            case .development(let d)?: directory = d
            case .provider(let p)?:
                throw CLIError("organisation \(org) signs in at its identity provider \(p.issuer); save the token it gives you with `ekc login --org \(org) --save-token FILE`")
            case nil: break
            }
        }
        let dev = DevIdentityProvider(directory: directory, organisation: org)
        try dev.ensureKeys()
        let roles = role.compactMap(Role.init(rawValue:))
        let token = try await dev.token(user: user!, roles: roles, lifetime: hours * 3600)
        if print {
            Swift.print(token)
            return
        }
        let path = try TokenStore.save(token, organisation: org)
        Swift.print("signed in as \(user!) (\(role.joined(separator: ", "))) to organisation \(org) for \(hours) h; token saved to \(path)")
    }
}

/// The permission table as the node applies it: every route, its action, the roles allowed.
struct AccessCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "access", abstract: "Who may do what.", subcommands: [Table.self])

    struct Table: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Every operator API route with the action it is decided by and the roles allowed (public: no token).")
        @Flag var json = false

        func run() throws {
            let rows = OperatorAPI.accessTable
            if json {
                let items: [[String: Any]] = rows.map {
                    ["method": $0.method, "path": $0.pattern, "action": $0.action ?? NSNull(), "roles": $0.roles]
                }
                let actions: [String: [String]] = Dictionary(uniqueKeysWithValues: Action.allCases.map {
                    ($0.rawValue, PermissionTable.roles(for: $0).sorted().map(\.rawValue))
                })
                printJSON(try JSONSerialization.data(withJSONObject: ["routes": items, "actions": actions]))
            } else {
                printTable(["METHOD", "PATH", "ACTION", "ROLES"],
                           rows.map { [$0.method, $0.pattern, $0.action ?? "-", $0.action == nil ? "public" : $0.roles.joined(separator: ", ")] })
            }
        }
    }
}
