import ArgumentParser

@main
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ekc-bench", abstract: "Benchmarks that print figures (see `make bench`).",
        subcommands: [StoreBench.self, BareServer.self, ReplicationBench.self])
}
