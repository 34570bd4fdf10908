import CaseModel
import CaseStore
import Dispatch
import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import Replication
import Wire
import Testing
@testable import EKCNode

/// Runs every job it is given `delay` late, in order, on a queue of its own: a task that
/// prefers it resumes from every `await` late, as a task does on a loaded machine whose
/// cooperative threads are all busy.
private final class LateExecutor: TaskExecutor {
    let delay: DispatchTimeInterval
    let queue = DispatchQueue(label: "late-executor")

    init(delay: DispatchTimeInterval) { self.delay = delay }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        queue.asyncAfter(deadline: .now() + delay) { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}

/// A TLS server with a federation certificate that speaks no HTTP/2: once the handshake
/// is done it writes `bytes` and then reads and drops whatever comes.
private final class RawTLSServer: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let bytes: [UInt8]
    init(bytes: [UInt8]) { self.bytes = bytes }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted? = event as? TLSUserEvent {
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(bytes: bytes)), promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
}

/// `ReplicationConnection`, the client side of every replication connection (the pull
/// link's and each anti-entropy round's), against a real `ReplicationServer` on loopback.
@Suite(.serialized) struct ReplicationConnectionTests {
    let main = NodeID("irk-main")!, office = NodeID("irk-office-1")!

    /// The node a call dials (irk-main, serving irk-office-1), its certificates, and an
    /// event loop group; torn down by `stop`.
    final class Setup {
        let dir: String
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let store: CaseStore
        var server: ReplicationServer!

        init(main: NodeID, office: NodeID) async throws {
            dir = FileManager.default.temporaryDirectory.appendingPathComponent("ekc-conn-\(UUID().uuidString)").path
            try run([repoRoot + "/ops/dev-ca.sh", dir + "/certs", main.value, office.value, "irk-other"])
            store = try CaseStore(path: "\(dir)/\(main)", configuration: StoreConfiguration(
                node: main, region: "38", directory: Directory([main: "38", office: "38"])))
            var logger = Logger(label: "test")
            logger.logLevel = .critical
            server = try await ReplicationServer.start(store: store, tls: try tls(main), host: "127.0.0.1", port: 0, peers: [office],
                                                       group: group, metrics: ReplicationMetrics(), logger: logger)
        }

        func tls(_ n: NodeID) throws -> NodeTLS {
            try NodeTLS(certificate: "\(dir)/certs/\(n).pem", key: "\(dir)/certs/\(n).key", ca: "\(dir)/certs/ca.pem", expected: n)
        }

        func stop() async {
            await server.close()
            store.close()
            try? await group.shutdownGracefully()
            try? FileManager.default.removeItem(atPath: dir)
        }
    }

    /// Opens a connection and makes one digest call on it (10 s timeout): nil when it was
    /// answered, else what failed and whether the call timed out.
    static func failureOfOneCall(_ peer: PeerAddress, tls: NIOSSLContext, group: EventLoopGroup) async -> (text: String, timedOut: Bool)? {
        do {
            let (channel, multiplexer) = try await ReplicationConnection.open(peer, tls: tls, group: group)
            defer { channel.close(promise: nil) }
            _ = try await ReplicationConnection.call(multiplexer, on: channel, peer: peer, path: ReplicationProtocol.digestPath,
                                                     body: try digestRequest(), timeout: .seconds(10))
            return nil
        } catch let error as ReplicationCallError {
            if case .timedOut = error { return ("\(error)", true) }
            return ("\(error)", false)
        } catch {
            return ("\(error)", false)
        }
    }

    static func digestRequest() throws -> [UInt8] {
        var request = WireDigestRequest()
        request.protocolVersion = ReplicationProtocol.version
        return try WireCoding.serialize(request)
    }

    /// The stall of issue "links stall at start": `open` awaited the TCP connection and
    /// only then, from the task, added the HTTP/2 handler. When the task resumed after
    /// the TLS handshake had ended, the server's SETTINGS (its connection preface) had
    /// already passed through a pipeline without HTTP/2 and been dropped at its tail;
    /// NIOHTTP2 then took the server's SETTINGS ACK for a missing preface, sent GOAWAY and
    /// left the connection open, and every frame of the answer was dropped the same way:
    /// the pull heard nothing for 15 s, an anti-entropy call got no answer in 30 s. Here
    /// the opening task resumes a second late from every await, which is far longer
    /// than a loopback handshake: the first call on the new connection must be answered.
    @Test func aNewConnectionsFirstCallIsAnsweredWhenTheOpeningTaskResumesLate() async throws {
        let setup = try await Setup(main: main, office: office)
        let peer = PeerAddress(node: main, host: "127.0.0.1", port: setup.server.port)
        let tls = try setup.tls(office).makeClientContext()
        let group = setup.group
        let late = LateExecutor(delay: .seconds(1))
        let outcome: Result<Int, Error> = await withTaskExecutorPreference(late) {
            do {
                let (channel, multiplexer) = try await ReplicationConnection.open(peer, tls: tls, group: group)
                defer { channel.close(promise: nil) }
                let (status, _) = try await ReplicationConnection.call(multiplexer, on: channel, peer: peer, path: ReplicationProtocol.digestPath,
                                                                       body: try Self.digestRequest(), timeout: .seconds(5))
                return .success(status)
            } catch {
                return .failure(error)
            }
        }
        await setup.stop()
        switch outcome {
        case .success(let status): #expect(status == 200)
        case .failure(let error): Issue.record("the first call on a new connection failed: \(error)")
        }
    }

    /// The same call without delays, as a baseline for the one above.
    @Test func aCallOnANewConnectionIsAnswered() async throws {
        let setup = try await Setup(main: main, office: office)
        let peer = PeerAddress(node: main, host: "127.0.0.1", port: setup.server.port)
        let (channel, multiplexer) = try await ReplicationConnection.open(peer, tls: try setup.tls(office).makeClientContext(), group: setup.group)
        let (status, _) = try await ReplicationConnection.call(multiplexer, on: channel, peer: peer, path: ReplicationProtocol.digestPath,
                                                               body: try Self.digestRequest(), timeout: .seconds(5))
        try? await channel.close()
        await setup.stop()
        #expect(status == 200)
    }

    /// `open` returns a connection only once the TLS handshake has shown the server to be
    /// the node dialled: a server whose certificate names another node fails `open`
    /// itself, with the reason, before any stream could be opened on it.
    @Test func openFailsWhenTheServerIsAnotherNode() async throws {
        let setup = try await Setup(main: main, office: office)
        let peer = PeerAddress(node: NodeID("irk-other")!, host: "127.0.0.1", port: setup.server.port)
        await #expect(throws: NodeIdentityError.unexpectedNode(expected: NodeID("irk-other")!, presented: main)) {
            let (channel, _) = try await ReplicationConnection.open(peer, tls: try setup.tls(office).makeClientContext(), group: setup.group)
            try? await channel.close()
        }
        await setup.stop()
    }

    /// A connection whose HTTP/2 layer failed (here a server that answers with a SETTINGS
    /// ACK where its preface belongs) is closed at once, so a call on it fails at once
    /// instead of waiting out its timeout on a connection that can carry nothing.
    @Test func aConnectionWhoseHTTP2FailedIsClosedAndItsCallFailsAtOnce() async throws {
        let setup = try await Setup(main: main, office: office)
        let serverContext = try setup.tls(main).makeServerContext()
        let settingsAck: [UInt8] = [0, 0, 0, 4, 1, 0, 0, 0, 0]
        let raw = try await ServerBootstrap(group: setup.group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers([
                        NIOSSLServerHandler(context: serverContext), RawTLSServer(bytes: settingsAck),
                    ])
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let peer = PeerAddress(node: main, host: "127.0.0.1", port: raw.localAddress!.port!)
        let started = ContinuousClock.now
        let failure = await Self.failureOfOneCall(peer, tls: try setup.tls(office).makeClientContext(), group: setup.group)
        let took = ContinuousClock.now - started
        try? await raw.close()
        await setup.stop()
        #expect(failure != nil, "a call on a broken HTTP/2 connection succeeded")
        #expect(failure?.timedOut != true, "the call waited out its timeout: \(failure?.text ?? "")")
        #expect(took < .seconds(5), "took \(took)")
    }

    /// A peer whose port nothing listens on (its node starting) is told apart from one
    /// that is unreachable or broken: the link retries it within half a second.
    @Test func aRefusedConnectionIsToldApartFromOtherFailures() async throws {
        let setup = try await Setup(main: main, office: office)
        let closed = try await ServerBootstrap(group: setup.group).bind(host: "127.0.0.1", port: 0).get()
        let port = closed.localAddress!.port!
        try await closed.close()
        let tls = try setup.tls(office).makeClientContext()
        do {
            _ = try await ReplicationConnection.open(PeerAddress(node: main, host: "127.0.0.1", port: port), tls: tls, group: setup.group)
            Issue.record("connected to a closed port")
        } catch {
            #expect(ReplicationConnection.refused(error), "\(error)")
        }
        do {
            let peer = PeerAddress(node: NodeID("irk-other")!, host: "127.0.0.1", port: setup.server.port)
            _ = try await ReplicationConnection.open(peer, tls: tls, group: setup.group)
        } catch {
            #expect(!ReplicationConnection.refused(error), "another node's certificate is no refused connection: \(error)")
        }
        await setup.stop()
    }
}
