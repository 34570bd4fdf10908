import CaseModel
import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import Testing
@testable import EKCNode

// Mutual TLS between nodes, over real sockets on 127.0.0.1, with certificates made at
// test time by ops/dev-ca.sh (and openssl directly for the malformed ones).

/// A federation CA with node certificates, a second, unrelated CA, and helpers to
/// issue certificates the script would never make.
private final class Certificates {
    let dir: String
    var fed: String { dir + "/fed" }
    var other: String { dir + "/other" }

    init() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("ekc-mtls-\(UUID().uuidString)").path
        try Certificates.devCA(fed, "irk-main", "irk-room1")
        try Certificates.devCA(other, "irk-room1")  // same node id, another CA
    }

    /// ops/dev-ca.sh for `out`, its CA key kept in `out-ca` (each directory its own CA).
    @discardableResult
    static func devCA(_ out: String, _ ids: String...) throws -> String {
        try run(["-c", #"EKC_DEV_CA_DIR="$2-ca" "$1" "${@:2}""#, "dev-ca", repoRoot + "/ops/dev-ca.sh", out] + ids)
    }

    deinit { try? FileManager.default.removeItem(atPath: dir) }

    /// Issues `name.pem`/`name.key` in `caDir`, signed by that CA, with the given
    /// extendedKeyUsage and subjectAltName (empty: no SAN extension at all).
    func issue(in caDir: String, name: String, cn: String, san: String, eku: String = "serverAuth,clientAuth") throws {
        try run(["-c", #"""
            set -euo pipefail
            cd "$1"
            openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$2.key" 2>/dev/null
            openssl req -new -key "$2.key" -subj "/CN=$3" -out "$2.csr"
            { echo "basicConstraints=critical,CA:FALSE"; echo "keyUsage=critical,digitalSignature"
              echo "extendedKeyUsage=$5"; [[ -z "$4" ]] || echo "subjectAltName=$4"; } > "$2.ext"
            openssl x509 -req -in "$2.csr" -CA ca.pem -CAkey "$1-ca/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
              -sha256 -days 30 -extfile "$2.ext" -out "$2.pem" 2>/dev/null
            rm -f "$2.csr" "$2.ext"
            """#, "issue", caDir, name, cn, san, eku])
    }

    func node(_ id: String, in caDir: String? = nil, trusting ca: String? = nil) throws -> NodeTLS {
        let d = caDir ?? fed
        return try NodeTLS(certificate: "\(d)/\(id).pem", key: "\(d)/\(id).key", ca: "\(ca ?? fed)/ca.pem")
    }

    func certificate(_ caDir: String, _ name: String) throws -> NIOSSLCertificate {
        try #require(try NIOSSLCertificate.fromPEMFile("\(caDir)/\(name).pem").first)
    }

    /// A client configuration from `base` that presents `name` from `caDir` instead.
    func presenting(_ name: String, in caDir: String, base: TLSConfiguration) throws -> TLSConfiguration {
        var c = base
        c.certificateChain = try NIOSSLCertificate.fromPEMFile("\(caDir)/\(name).pem").map { .certificate($0) }
        c.privateKey = .privateKey(try NIOSSLPrivateKey(file: "\(caDir)/\(name).key", format: .pem))
        return c
    }
}

// MARK: - a tiny mutual-TLS server that answers with the peer's node id

private enum ServerOutcome: Sendable {
    case identified(NodeID)
    case failed(String, NodeIdentityError?)
}

/// Writes `node:<id>\n` back once the peer is identified, then closes; records every
/// identification and every error the connection saw.
private final class AnswerWithPeerNode: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let outcomes: NIOLockedValueBox<[ServerOutcome]>
    init(_ outcomes: NIOLockedValueBox<[ServerOutcome]>) { self.outcomes = outcomes }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let id = event as? PeerNodeIdentified {
            outcomes.withLockedValue { $0.append(.identified(id.node)) }
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "node:\(id.node)\n")))
                .whenComplete { _ in channel.close(promise: nil) }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        outcomes.withLockedValue { $0.append(.failed(String(describing: error), error as? NodeIdentityError)) }
        context.close(promise: nil)
    }
}

private final class TestServer {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let outcomes = NIOLockedValueBox<[ServerOutcome]>([])
    let channel: NIOCore.Channel
    var port: Int { channel.localAddress!.port! }

    init(_ tls: NodeTLS) async throws {
        let context = try tls.makeServerContext()
        let outcomes = self.outcomes
        channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers([
                        NIOSSLServerHandler(context: context), NodeIdentityHandler(), AnswerWithPeerNode(outcomes),
                    ])
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    /// The server's outcomes once at least `count` connections have one (or after 3 s).
    func outcomes(atLeast count: Int) async throws -> [ServerOutcome] {
        let deadline = ContinuousClock.now + .seconds(3)
        while ContinuousClock.now < deadline {
            let o = outcomes.withLockedValue { $0 }
            if o.count >= count { return o }
            try await Task.sleep(for: .milliseconds(10))
        }
        return outcomes.withLockedValue { $0 }
    }

    func stop() async {
        try? await channel.close()
        try? await group.shutdownGracefully()
    }
}

// MARK: - a client that reads until the connection ends, never longer than a timeout

private struct ClientOutcome: Sendable {
    var received = ""
    var server: NodeID?
    var errors: [String] = []
    var identityError: NodeIdentityError?
    var timedOut = false
    /// What the server answered, if anything: a stream that ends with no answer is a failure.
    var answered: Bool { !received.isEmpty }
}

private final class Collector: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    var outcome = ClientOutcome()
    let done: EventLoopPromise<ClientOutcome>
    init(_ done: EventLoopPromise<ClientOutcome>) { self.done = done }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        outcome.received += String(buffer: unwrapInboundIn(data))
    }
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let id = event as? PeerNodeIdentified { outcome.server = id.node }
        if event as? TimedOut != nil { outcome.timedOut = true }
    }
    func errorCaught(context: ChannelHandlerContext, error: Error) {
        outcome.errors.append(String(describing: error))
        if let e = error as? NodeIdentityError { outcome.identityError = e }
        context.close(promise: nil)
    }
    func channelInactive(context: ChannelHandlerContext) {
        done.succeed(outcome)
    }
}

private struct TimedOut: Sendable {}

/// Connects with `tls`, sends nothing, and collects what arrives until the connection
/// closes — under TLS 1.3 a rejected client certificate is only learnt after the
/// client's handshake has completed, as an alert or a close, so "closed without an
/// answer" is the failure signal. Closed by force after `timeout`: it never hangs.
private func connect(port: Int, tls: TLSConfiguration, expecting: NodeID? = nil,
                     timeout: TimeAmount = .seconds(5)) async throws -> ClientOutcome {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    do {
        let outcome = try await connect(group: group, port: port, tls: tls, expecting: expecting, timeout: timeout)
        try? await group.shutdownGracefully()
        return outcome
    } catch {
        try? await group.shutdownGracefully()
        throw error
    }
}

private func connect(group: EventLoopGroup, port: Int, tls: TLSConfiguration, expecting: NodeID?,
                     timeout: TimeAmount) async throws -> ClientOutcome {
    let context = try NIOSSLContext(configuration: tls)
    let done = group.next().makePromise(of: ClientOutcome.self)
    let channel = try await ClientBootstrap(group: group)
        .connectTimeout(.seconds(2))
        .channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandlers([
                    // serverHostname nil: we dial an IP address, and identity is the node id (see NodeTLS).
                    try NIOSSLClientHandler(context: context, serverHostname: nil),
                    NodeIdentityHandler(expecting: expecting),
                    Collector(done),
                ])
            }
        }
        .connect(host: "127.0.0.1", port: port).get()
    let timer = channel.eventLoop.scheduleTask(in: timeout) {
        channel.pipeline.fireUserInboundEventTriggered(TimedOut())
        channel.close(promise: nil)
    }
    let outcome = try await done.futureResult.get()
    timer.cancel()
    return outcome
}

// MARK: - tests

@Suite struct MutualTLSTests {
    @Test func nodeCertificateIsAcceptedAndItsNodeIDIsTheIdentity() async throws {
        let certs = try Certificates()
        let serverTLS = try certs.node("irk-main")
        #expect(serverTLS.node == NodeID("irk-main")!)
        let server = try await TestServer(serverTLS)
        let client = try certs.node("irk-room1")
        #expect(client.node == NodeID("irk-room1")!)

        let out = try await connect(port: server.port, tls: client.clientConfiguration(), expecting: NodeID("irk-main")!)
        await server.stop()
        #expect(out.received == "node:irk-room1\n", "errors: \(out.errors)")
        #expect(out.server == NodeID("irk-main")!)  // and the client saw the server's identity
        #expect(!out.timedOut)
        let seen = try await server.outcomes(atLeast: 1)
        guard case .identified(let node)? = seen.first, seen.count == 1 else {
            Issue.record("server outcomes: \(seen)")
            return
        }
        #expect(node == NodeID("irk-room1")!)
    }

    @Test func clientWithoutCertificateGetsNothing() async throws {
        let certs = try Certificates()
        let server = try await TestServer(try certs.node("irk-main"))
        var bare = try certs.node("irk-room1").clientConfiguration()
        bare.certificateChain = []
        bare.privateKey = nil

        let out = try await connect(port: server.port, tls: bare)
        let seen = try await server.outcomes(atLeast: 1)
        await server.stop()
        #expect(!out.answered)
        #expect(!out.timedOut)  // the refusal arrives: the client is told, it does not wait
        // TLS 1.3: the client's handshake completed (it even identified the server)
        // before the server refused it; the refusal is an alert on the next read.
        #expect(out.server == NodeID("irk-main")!)
        #expect(out.errors.contains { $0.contains("CERTIFICATE_REQUIRED") })
        #expect(!seen.contains { if case .identified = $0 { true } else { false } })
        print("no client certificate: client handshake completed with server \(out.server.map(String.init(describing:)) ?? "-"), then saw \(out.errors); server saw \(seen)")
    }

    @Test func clientWithCertificateFromAnotherCAGetsNothing() async throws {
        let certs = try Certificates()
        let server = try await TestServer(try certs.node("irk-main"))
        // irk-room1 from the other CA, trusting the federation CA (so the client itself accepts the server).
        let impostor = try certs.node("irk-room1", in: certs.other, trusting: certs.fed)

        let out = try await connect(port: server.port, tls: impostor.clientConfiguration())
        let seen = try await server.outcomes(atLeast: 1)
        await server.stop()
        #expect(!out.answered)
        #expect(!out.timedOut)
        #expect(out.errors.contains { $0.contains("UNKNOWN_CA") })
        #expect(!seen.contains { if case .identified = $0 { true } else { false } })
        print("client certificate from another CA: client handshake completed with server \(out.server.map(String.init(describing:)) ?? "-"), then saw \(out.errors); server saw \(seen)")
    }

    @Test func certificateWithoutNodeURIIsRefusedWithTypedError() async throws {
        let certs = try Certificates()
        // Signed by the federation CA, CN names a node, but no urn:ekc:node: URI.
        try certs.issue(in: certs.fed, name: "no-uri", cn: "irk-room1", san: "DNS:localhost,IP:127.0.0.1")
        // A node cannot even start with it.
        #expect(throws: ConfigurationError.self) { try certs.node("no-uri") }

        let server = try await TestServer(try certs.node("irk-main"))
        let tls = try certs.presenting("no-uri", in: certs.fed, base: try certs.node("irk-room1").clientConfiguration())
        let out = try await connect(port: server.port, tls: tls)
        let seen = try await server.outcomes(atLeast: 1)
        await server.stop()
        #expect(!out.answered)
        #expect(!out.timedOut)
        guard case .failed(_, let error)? = seen.first, seen.count == 1 else {
            Issue.record("server outcomes: \(seen)")
            return
        }
        #expect(error == .noNodeURI)
    }

    @Test func clientRefusesServerThatIsNotTheExpectedNode() async throws {
        let certs = try Certificates()
        let server = try await TestServer(try certs.node("irk-main"))
        let client = try certs.node("irk-room1")
        let out = try await connect(port: server.port, tls: client.clientConfiguration(), expecting: NodeID("irk-room2")!)
        await server.stop()
        #expect(!out.answered)
        #expect(out.identityError == .unexpectedNode(expected: NodeID("irk-room2")!, presented: NodeID("irk-main")!))
    }

    @Test func clientRefusesServerFromAnotherCA() async throws {
        let certs = try Certificates()
        let server = try await TestServer(try certs.node("irk-room1", in: certs.other, trusting: certs.other))
        let client = try certs.node("irk-main")
        let out = try await connect(port: server.port, tls: client.clientConfiguration(), expecting: NodeID("irk-room1")!)
        await server.stop()
        #expect(!out.answered)
        #expect(out.server == nil)
        #expect(!out.timedOut)
        #expect(!out.errors.isEmpty)
    }

    @Test func tls12IsRefused() async throws {
        let certs = try Certificates()
        let server = try await TestServer(try certs.node("irk-main"))
        var old = try certs.node("irk-room1").clientConfiguration()
        old.minimumTLSVersion = .tlsv12
        old.maximumTLSVersion = .tlsv12
        let out = try await connect(port: server.port, tls: old)
        await server.stop()
        #expect(!out.answered)
        #expect(!out.timedOut)
    }

    @Test func clientCertificateWithoutClientAuthUsageIsRefused() async throws {
        let certs = try Certificates()
        try certs.issue(in: certs.fed, name: "server-only", cn: "irk-room1",
                        san: "DNS:localhost,IP:127.0.0.1,URI:urn:ekc:node:irk-room1", eku: "serverAuth")
        let server = try await TestServer(try certs.node("irk-main"))
        let tls = try certs.presenting("server-only", in: certs.fed, base: try certs.node("irk-room1").clientConfiguration())
        let out = try await connect(port: server.port, tls: tls)
        let seen = try await server.outcomes(atLeast: 1)
        await server.stop()
        #expect(!out.answered)
        #expect(!out.timedOut)
        #expect(!seen.contains { if case .identified = $0 { true } else { false } })
        #expect(out.errors.contains { $0.contains("UNSUPPORTED_CERTIFICATE") })  // EKU is enforced by BoringSSL
    }

    @Test func nodeIDIsReadOnlyFromASingleURISAN() throws {
        let certs = try Certificates()
        try certs.issue(in: certs.fed, name: "two", cn: "a",
                        san: "DNS:localhost,URI:urn:ekc:node:irk-a,URI:URN:EKC:NODE:irk-b")
        try certs.issue(in: certs.fed, name: "bad", cn: "irk-main", san: "URI:urn:ekc:node:Irk_Main")
        try certs.issue(in: certs.fed, name: "empty", cn: "irk-main", san: "URI:urn:ekc:node:")
        try certs.issue(in: certs.fed, name: "none", cn: "irk-main", san: "")
        try certs.issue(in: certs.fed, name: "mixed", cn: "somebody-else",
                        san: "URI:https://example.org/irk-x,DNS:irk-y,URI:urn:ekc:node:irk-main,email:a@b.c")

        #expect(throws: NodeIdentityError.severalNodeURIs(["urn:ekc:node:irk-a", "URN:EKC:NODE:irk-b"])) {
            try NodeIdentity.nodeID(of: certs.certificate(certs.fed, "two"))
        }
        #expect(throws: NodeIdentityError.invalidNodeID("Irk_Main")) {
            try NodeIdentity.nodeID(of: certs.certificate(certs.fed, "bad"))
        }
        #expect(throws: NodeIdentityError.invalidNodeID("")) {
            try NodeIdentity.nodeID(of: certs.certificate(certs.fed, "empty"))
        }
        #expect(throws: NodeIdentityError.noNodeURI) {
            try NodeIdentity.nodeID(of: certs.certificate(certs.fed, "none"))
        }
        #expect(try NodeIdentity.nodeID(of: certs.certificate(certs.fed, "mixed")) == NodeID("irk-main")!)
        #expect(try NodeIdentity.nodeID(of: certs.certificate(certs.fed, "irk-room1")) == NodeID("irk-room1")!)
        // The CN is informational: the CA certificate has one but names no node.
        #expect(throws: NodeIdentityError.noNodeURI) {
            try NodeIdentity.nodeID(of: certs.certificate(certs.fed, "ca"))
        }
    }

    @Test func nodeTLSChecksItsOwnIdentityAndTrustsOnlyTheFederationCA() throws {
        let certs = try Certificates()
        let tls = try NodeTLS(certificate: "\(certs.fed)/irk-main.pem", key: "\(certs.fed)/irk-main.key",
                              ca: "\(certs.fed)/ca.pem", expected: NodeID("irk-main")!)
        #expect(tls.notValidAfter > Date().addingTimeInterval(86400 * 365))
        #expect(throws: ConfigurationError.self) {
            try NodeTLS(certificate: "\(certs.fed)/irk-main.pem", key: "\(certs.fed)/irk-main.key",
                        ca: "\(certs.fed)/ca.pem", expected: NodeID("irk-room1")!)
        }
        #expect(throws: ConfigurationError.self) {
            try NodeTLS(certificate: "\(certs.fed)/irk-main.pem", key: "\(certs.fed)/irk-main.key",
                        ca: "\(certs.fed)/missing.pem")
        }
        for c in [tls.serverConfiguration(), tls.clientConfiguration()] {
            #expect(c.minimumTLSVersion == .tlsv13)
            #expect(c.applicationProtocols == ["h2"])
            #expect(c.certificateVerification == .noHostnameVerification)
            #expect(c.trustRoots == .certificates(tls.federationCA))
            #expect(c.additionalTrustRoots.isEmpty)
        }

        // Idempotent: a second run keeps the CA and the node certificates.
        let before = try String(contentsOfFile: "\(certs.fed)/ca.pem", encoding: .utf8)
        let node = try String(contentsOfFile: "\(certs.fed)/irk-main.pem", encoding: .utf8)
        let output = try Certificates.devCA(certs.fed, "irk-main", "irk-room2")
        #expect(try String(contentsOfFile: "\(certs.fed)/ca.pem", encoding: .utf8) == before)
        #expect(try String(contentsOfFile: "\(certs.fed)/irk-main.pem", encoding: .utf8) == node)
        #expect(output.contains("created \(certs.fed)/irk-room2.pem"))
        #expect(try NodeIdentity.nodeID(of: certs.certificate(certs.fed, "irk-room2")) == NodeID("irk-room2")!)
    }
}
