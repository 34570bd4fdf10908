import Foundation
import Testing

// Every input of the fuzz corpus (fuzz/corpus/<target>/: seeds, and the inputs that
// once crashed a target, named regression-*) run through the harness the fuzz target
// runs (FuzzHarness/, the same files as fuzz/Sources/FuzzHarness): what a fuzzer found
// stays fixed in `make test`, without a sanitizer. A crash here is a trap of the test
// process; the input is the last one named on stderr.

@Suite("Fuzz corpus replay", .serialized)
struct FuzzCorpusReplayTests {
    static let corpus = "\(repoRoot)/fuzz/corpus"

    static func inputs(_ target: String) throws -> [String] {
        let folder = "\(corpus)/\(target)"
        return try FileManager.default.contentsOfDirectory(atPath: folder).filter { !$0.hasPrefix(".") }.sorted()
            .map { "\(folder)/\($0)" }
    }

    @Test("every corpus input of a target runs through its harness", arguments: FuzzTargets.all.map(\.name))
    func replay(_ target: String) throws {
        let run = FuzzTargets.all.first { $0.name == target }!.run
        let files = try FuzzCorpusReplayTests.inputs(target)
        #expect(!files.isEmpty, "fuzz/corpus/\(target) holds no inputs")
        for file in files {
            FileHandle.standardError.write(Data("fuzz corpus: \(file)\n".utf8))
            run(Array(try Data(contentsOf: URL(fileURLWithPath: file))))
        }
    }

    @Test("each target keeps its regression inputs and seeds of every mode")
    func corpusShape() throws {
        for (target, _) in FuzzTargets.all {
            let names = try FuzzCorpusReplayTests.inputs(target).map { ($0 as NSString).lastPathComponent }
            #expect(names.count >= 5, "fuzz/corpus/\(target) has \(names.count) inputs")
        }
    }
}
