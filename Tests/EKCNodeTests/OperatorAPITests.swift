import CaseModel
import CaseStore
import Foundation
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import Access
import Identity
import Replication
import Testing
@testable import EKCNode

/// The API through its real entry point (`OperatorAPI.handle`) on a real store,
/// without sockets.
final class APIFixture {
    let dir: String
    let store: CaseStore
    let api: OperatorAPI
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)

    /// Who calls: a supervisor with ops of organisation 38, as a verified token would give.
    var caller = Caller.principal(Principal(subject: "op-test", organisation: "38", roles: [.supervisor, .ops],
                                            expiresAt: .max))

    init(directory: Directory? = nil) async throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("ekc-api-\(UUID().uuidString)").path
        store = try CaseStore(path: dir, configuration: StoreConfiguration(node: NodeID("irk-main")!, region: "38",
                                                                           utcOffsetMinutes: 480, directory: directory))
        api = OperatorAPI(store: store, access: try await APIFixture.access(dir), registry: nil)
    }

    /// The development provider's keys in `dir`, trusted on 127.0.0.1.
    static func access(_ dir: String) async throws -> OperatorAccess {
        let dev = DevIdentityProvider(directory: dir + "-idp", organisation: "38")
        try dev.ensureKeys()
        return OperatorAccess(verifier: try await TokenVerifier(provider: dev.provider),
                              hostNames: OperatorAccess.defaultHostNames(listenHost: "127.0.0.1"))
    }

    deinit {
        store.close()
        try? group.syncShutdownGracefully()
        try? FileManager.default.removeItem(atPath: dir)
    }

    static func principal(_ user: String, _ roles: Set<Access.Role>) -> Caller {
        .principal(Principal(subject: user, organisation: "38", roles: roles, expiresAt: .max))
    }

    func call(_ method: HTTPMethod, _ uri: String, _ body: String? = nil, headers: HTTPHeaders = [:],
              as who: Caller? = nil) throws
        -> (Int, HTTPHeaders, [String: Any])
    {
        var h = headers
        if !h.contains(name: "host") { h.add(name: "host", value: "127.0.0.1:8400") }
        if body != nil && !h.contains(name: "content-type") { h.add(name: "content-type", value: "application/json") }
        let req = APIRequest(method: method, uri: uri, headers: h, body: body.map { ByteBuffer(string: $0) })
        let response: APIResponse
        switch api.handle(req, caller: who ?? caller, on: group.next()) {
        case .now(let r): response = r
        case .later(let f): response = try f.wait()
        }
        let obj = (try? JSONSerialization.jsonObject(with: Data(response.body.readableBytesView))) as? [String: Any] ?? [:]
        return (Int(response.status.code), response.headers, obj)
    }

    func create(_ extra: String = "") throws -> [String: Any] {
        let (status, _, t) = try call(.POST, "/v1/tickets",
                                      #"{"channel":"phone","topic":"child-benefits","subject":"s","statement":"t"\#(extra)}"#)
        #expect(status == 201)
        return t
    }
}

@Suite struct OperatorAPITests {
    @Test func createShowPatchWithVersions() async throws {
        let f = try await APIFixture()
        let t = try f.create()
        let id = try #require(t["id"] as? String)
        #expect(t["status"] as? String == "REGISTERED")
        #expect((t["number"] as? String)?.hasPrefix("38-") == true)
        let (s1, h1, shown) = try f.call(.GET, "/v1/tickets/\(t["number"]!)")
        #expect(s1 == 200 && shown["id"] as? String == id && h1.first(name: "etag") == "\"1\"")

        let (s2, _, e2) = try f.call(.PATCH, "/v1/tickets/\(id)", #"{"status":"IN_WORK"}"#, headers: ["if-match": "\"7\""])
        #expect(s2 == 412)
        #expect((e2["error"] as? [String: Any])?["currentVersion"] as? String == "1")
        let (s3, h3, p3) = try f.call(.PATCH, "/v1/tickets/\(id)", #"{"status":"IN_WORK","assignee":"op-1"}"#,
                                      headers: ["if-match": "W/\"1\""], as: APIFixture.principal("op-ivanova", [.supervisor]))
        #expect(s3 == 200 && p3["version"] as? Int == 2 && h3.first(name: "etag") == "\"2\"")

        let (_, _, hist) = try f.call(.GET, "/v1/tickets/\(id)/history")
        let events = try #require(hist["items"] as? [[String: Any]])
        #expect(events.count == 3)  // created, assignee, status
        #expect(events.dropFirst().allSatisfy { $0["actor"] as? String == "op-ivanova" })
    }

    @Test func refusalsChangeNothing() async throws {
        let f = try await APIFixture()
        let t = try f.create()
        let id = t["id"] as! String
        let before = f.store.lastSequence
        let bad: [(HTTPMethod, String, String?, HTTPHeaders, Int)] = [
            (.PATCH, "/v1/tickets/\(id)", #"{"status":"ANSWERED"}"#, [:], 409),
            (.PATCH, "/v1/tickets/\(id)", #"{"statement":"rewritten"}"#, [:], 409),
            (.PATCH, "/v1/tickets/\(id)", #"{"status":"BOGUS"}"#, [:], 422),
            (.PATCH, "/v1/tickets/\(id)", #"{}"#, [:], 422),
            (.PATCH, "/v1/tickets/\(id)", #"{"status":"IN_WORK"}"#, ["if-match": "abc"], 400),
            (.PATCH, "/v1/tickets/\(id)", #"{"status":"IN_WORK"}"#, ["host": "attacker.example"], 421),
            (.PATCH, "/v1/tickets/\(id)", #"{"status":"IN_WORK"}"#, ["origin": "http://attacker.example"], 403),
            (.PATCH, "/v1/tickets/\(id)", "status=IN_WORK", ["content-type": "application/x-www-form-urlencoded"], 415),
            (.POST, "/v1/tickets/\(id)/notes", #"{"text":""}"#, [:], 422),
            (.POST, "/v1/tickets/00000000000000000000000000/notes", #"{"text":"x"}"#, [:], 404),
            (.DELETE, "/v1/tickets/\(id)", nil, [:], 405),
            (.GET, "/v1/nothing", nil, [:], 404),
            (.GET, "/v1/tickets?limit=0", nil, [:], 400),
            (.GET, "/v1/tickets?limit=5&limit=6", nil, [:], 400),
            (.GET, "/v1/tickets?colour=red", nil, [:], 400),
            (.GET, "/v1/tickets?cursor=zz", nil, [:], 400),
            (.GET, "/v1/changes?since=-1", nil, [:], 400),
        ]
        for (method, uri, body, headers, expected) in bad {
            let (status, _, e) = try f.call(method, uri, body, headers: headers)
            #expect(status == expected, "\(method) \(uri) \(body ?? "")")
            #expect((e["error"] as? [String: Any])?["code"] is String, "\(method) \(uri)")
        }
        #expect(f.store.lastSequence == before)
        let (_, _, after) = try f.call(.GET, "/v1/tickets/\(id)")
        #expect(after["version"] as? Int == 1 && after["statement"] as? String == "t")
    }

    @Test func listingPagesThroughEverything() async throws {
        let f = try await APIFixture()
        var ids = Set<String>()
        for _ in 0..<11 { ids.insert(try f.create()["id"] as! String) }
        var seen: [String] = []
        var cursor: String? = nil
        repeat {
            let (s, _, page) = try f.call(.GET, "/v1/tickets?status=REGISTERED&limit=4" + (cursor.map { "&cursor=\($0)" } ?? ""))
            #expect(s == 200)
            seen += (page["items"] as? [[String: Any]] ?? []).map { $0["id"] as! String }
            cursor = page["next"] as? String
        } while cursor != nil
        #expect(seen.count == 11 && Set(seen) == ids)
        let (_, _, changes) = try f.call(.GET, "/v1/changes?since=0&limit=5")
        #expect((changes["changes"] as? [Any])?.count == 5 && changes["lastSequence"] as? Int == 11)
    }

    @Test func servesHealthAndOpenAPI() async throws {
        let f = try await APIFixture()
        let (s, _, h) = try f.call(.GET, "/v1/health")
        #expect(s == 200 && h["status"] as? String == "ok" && h["node"] as? String == "irk-main")
        let req = APIRequest(method: .GET, uri: "/openapi.yaml", headers: ["host": "localhost"], body: nil)
        guard case .now(let r) = f.api.handle(req, caller: .anonymous, on: f.group.next()) else { Issue.record("expected immediate reply"); return }
        #expect(String(buffer: r.body).hasPrefix("openapi: 3.1"))
    }
}

@Suite struct BearerSchemeTests {
    @Test func theTokenIsReadFromTheBearerSchemeInAnyCaseWithSpacesAround() {
        #expect(OperatorAccess.bearerToken("Bearer abc.def.ghi") == "abc.def.ghi")
        #expect(OperatorAccess.bearerToken("  bEaReR \t abc.def.ghi \t") == "abc.def.ghi")
        #expect(OperatorAccess.bearerToken("Bearer") == nil)
        #expect(OperatorAccess.bearerToken("Bearer   ") == nil)
        #expect(OperatorAccess.bearerToken("Bearerabc.def.ghi") == nil)
        #expect(OperatorAccess.bearerToken("Basic b3A6cHc=") == nil)
        #expect(OperatorAccess.bearerToken("Беарер abc") == nil)
        #expect(OperatorAccess.bearerToken("") == nil)
    }
}

@Suite struct ProtocolSnifferTests {
    func pipelineAfter(_ bytes: String) async throws -> [String] {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ekc-sniff-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try CaseStore(path: dir, configuration: StoreConfiguration(node: NodeID("irk-main")!, region: "38"))
        defer { store.close() }
        let channel = EmbeddedChannel()
        let api = OperatorAPI(store: store, access: try await APIFixture.access(dir), registry: nil)
        try channel.pipeline.syncOperations.addHandler(ProtocolSniffer(api: api))
        try channel.writeInbound(ByteBuffer(string: bytes))
        let sync = channel.pipeline.syncOperations
        let names = (try? sync.handler(type: NIOHTTP2Handler.self)) == nil ? "h1" : "h2"
        let sniffers = (try? sync.handler(type: ProtocolSniffer.self)) == nil ? 0 : 1
        _ = try? channel.finish()
        return [names, String(sniffers)]
    }

    @Test func priorKnowledgePrefaceSelectsHTTP2() async throws {
        #expect(try await pipelineAfter("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") == ["h2", "0"])
    }

    @Test func anythingElseIsHTTP1() async throws {
        #expect(try await pipelineAfter("GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n") == ["h1", "0"])
        #expect(try await pipelineAfter("P") == ["h1", "1"])  // undecided: waits for more bytes
        #expect(try await pipelineAfter("PRX") == ["h1", "0"])
    }
}
