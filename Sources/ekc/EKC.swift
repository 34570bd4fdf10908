import ArgumentParser

@main
struct EKC: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ekc",
        abstract: "Federation node for unified social-support contact centres (ЕКЦ).",
        subcommands: [NodeCommand.self, LoginCommand.self, AccessCommand.self, AuditCommand.self, TicketCommand.self, TransferCommand.self, ConflictCommand.self, ClusterCommand.self,
                      StoreCommand.self, DemoCommand.self, VersionCommand.self])
}
