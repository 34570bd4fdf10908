import CaseModel
import Foundation
import NIOCore
import NIOSSL
import NIOTLS

// Node identity from mutual TLS (DESIGN principle 7).
//
// Every node holds a certificate issued by the federation CA (`ops/dev-ca.sh` makes a
// development one). The node id is carried in the certificate as the URI
// subjectAltName `urn:ekc:node:<id>`; that URI, and nothing the peer says in a
// request, is what replication authorises by. The subject CN repeats the id for
// people reading the certificate but is never used.
//
// Every replication connection is TLS 1.3, with ALPN "h2", and both ends present a
// certificate that the other verifies against the federation CA only (never the
// system trust store: a certificate from a public CA is no federation member).

/// Why a peer's certificate does not name a node.
public enum NodeIdentityError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The connection has no verified peer certificate (not TLS, or no client certificate).
    case noPeerCertificate
    /// The certificate carries no `urn:ekc:node:` URI subjectAltName.
    case noNodeURI
    /// The `urn:ekc:node:` URI names something that is not a valid node id.
    case invalidNodeID(String)
    /// The certificate carries more than one `urn:ekc:node:` URI; it names no single node.
    case severalNodeURIs([String])
    /// The peer is a federation node, but not the one this connection was meant for.
    case unexpectedNode(expected: NodeID, presented: NodeID)

    public var description: String {
        switch self {
        case .noPeerCertificate:
            return "the peer presented no verified certificate"
        case .noNodeURI:
            return "the peer certificate has no \(NodeIdentity.uriPrefix)<id> URI subjectAltName"
        case .invalidNodeID(let s):
            return "the peer certificate names an invalid node id \"\(s)\""
        case .severalNodeURIs(let uris):
            return "the peer certificate names several nodes: \(uris.joined(separator: ", "))"
        case .unexpectedNode(let expected, let presented):
            return "expected node \(expected), the peer certificate names \(presented)"
        }
    }
}

public enum NodeIdentity {
    /// The URI subjectAltName prefix that carries the node id.
    public static let uriPrefix = "urn:ekc:node:"

    /// The node a certificate was issued to: the id in its single `urn:ekc:node:<id>`
    /// URI subjectAltName, validated as a `NodeID`. Other SANs (DNS names, IP
    /// addresses, other URIs) and the subject CN are ignored.
    ///
    /// The prefix is matched case-insensitively (the URN scheme and namespace are
    /// case-insensitive, RFC 8141), so `URN:EKC:NODE:x` counts as a node URI too —
    /// which matters when counting them: a certificate naming two nodes names none.
    /// The id itself must be exactly a valid (lower-case) `NodeID`.
    public static func nodeID(of certificate: NIOSSLCertificate) throws(NodeIdentityError) -> NodeID {
        var uris: [String] = []
        for san in certificate._subjectAlternativeNames() where san.nameType == .uri {
            let bytes = Array(san.contents)
            let uri: String
            if bytes.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) {
                uri = String(decoding: bytes, as: UTF8.self)
            } else {
                // IA5String should be ASCII; show anything else escaped, never trust it.
                uri = bytes.map { $0 >= 0x20 && $0 < 0x7F ? String(UnicodeScalar($0)) : String(format: "\\x%02x", $0) }
                    .joined()
            }
            if uri.count >= uriPrefix.count && uri.prefix(uriPrefix.count).lowercased() == uriPrefix {
                uris.append(uri)
            }
        }
        guard let uri = uris.first else { throw .noNodeURI }
        guard uris.count == 1 else { throw .severalNodeURIs(uris) }
        let id = String(uri.dropFirst(uriPrefix.count))
        guard let node = NodeID(id) else { throw .invalidNodeID(id) }
        return node
    }

    /// The node at the other end of an established TLS connection, from the
    /// certificate NIOSSL verified during the handshake. Must be called on the
    /// channel's event loop (from a handler, or `channel.eventLoop.execute`);
    /// for an HTTP/2 stream, pass the stream's parent (connection) pipeline.
    public static func peerNodeID(_ pipeline: ChannelPipeline.SynchronousOperations) throws(NodeIdentityError) -> NodeID {
        let certificate: NIOSSLCertificate?
        do {
            certificate = try pipeline.nioSSL_peerCertificate()
        } catch {
            throw .noPeerCertificate  // no NIOSSLHandler in this pipeline: not a TLS connection
        }
        guard let certificate else { throw .noPeerCertificate }
        return try nodeID(of: certificate)
    }

    /// `peerNodeID` from any thread.
    public static func peerNodeID(of channel: NIOCore.Channel) -> EventLoopFuture<NodeID> {
        channel.nioSSL_peerCertificate().flatMapThrowing { certificate throws -> NodeID in
            guard let certificate else { throw NodeIdentityError.noPeerCertificate }
            return try nodeID(of: certificate)
        }
    }
}

/// A node's TLS material for replication: its certificate chain and key, and the
/// federation CA it trusts. Loaded once (so a missing or unreadable file is a
/// start-up error, not a failure at the first connection); hands out NIOSSL
/// configurations for the replication listener and for connections to peers.
public struct NodeTLS: Sendable {
    /// This node's id, from its own certificate's `urn:ekc:node:` URI.
    public let node: NodeID
    /// Leaf first, then any intermediates.
    public let certificateChain: [NIOSSLCertificate]
    public let privateKey: NIOSSLPrivateKey
    /// The federation CA certificate(s): the only trust roots of replication.
    public let federationCA: [NIOSSLCertificate]

    /// - Parameters:
    ///   - certificate: PEM file with this node's certificate (optionally followed by intermediates).
    ///   - key: PEM file with its private key.
    ///   - ca: PEM file with the federation CA certificate(s).
    ///   - expected: when given, the certificate must name this node (the id the
    ///     node was started as), so a node never runs under another node's identity.
    public init(certificate: String, key: String, ca: String, expected: NodeID? = nil) throws {
        func load<T>(_ what: String, _ path: String, _ body: () throws -> T) throws -> T {
            do { return try body() } catch {
                throw ConfigurationError("cannot load \(what) \(path): \(error)")
            }
        }
        let chain = try load("node certificate", certificate) { try NIOSSLCertificate.fromPEMFile(certificate) }
        guard let leaf = chain.first else { throw ConfigurationError("no certificate in \(certificate)") }
        let key = try load("node key", key) { try NIOSSLPrivateKey(file: key, format: .pem) }
        let roots = try load("federation CA", ca) { try NIOSSLCertificate.fromPEMFile(ca) }
        guard !roots.isEmpty else { throw ConfigurationError("no certificate in federation CA file \(ca)") }
        let node: NodeID
        do {
            node = try NodeIdentity.nodeID(of: leaf)
        } catch {
            throw ConfigurationError("\(certificate) is not a node certificate: \(error)")
        }
        if let expected, expected != node {
            throw ConfigurationError("\(certificate) is issued to node \(node), not \(expected)")
        }
        self.node = node
        self.certificateChain = chain
        self.privateKey = key
        self.federationCA = roots
    }

    /// When this node's certificate expires (for the certificate-expiry metric and health field).
    public var notValidAfter: Date {
        Date(timeIntervalSince1970: TimeInterval(certificateChain[0].notValidAfter))
    }

    /// The replication listener: TLS 1.3 only, ALPN h2, and a client certificate is
    /// required and verified against the federation CA (a client without one, or with
    /// one from any other CA, fails the handshake). `.noHostnameVerification` is the
    /// only meaningful mode for a server: a client has no hostname to check. Which
    /// node the client is comes from its certificate afterwards (`NodeIdentityHandler`
    /// or `NodeIdentity.peerNodeID`), and is checked against the topology there.
    public func serverConfiguration() -> TLSConfiguration {
        var c = TLSConfiguration.makeServerConfigurationWithMTLS(
            certificateChain: certificateChain.map { .certificate($0) },
            privateKey: .privateKey(privateKey),
            trustRoots: .certificates(federationCA))
        c.additionalTrustRoots = []
        c.certificateVerification = .noHostnameVerification
        c.minimumTLSVersion = .tlsv13
        c.applicationProtocols = ["h2"]
        // Tell clients which CA we accept, so a client holding several identities picks ours.
        c.sendCANameList = true
        return c
    }

    /// Connections to peers: TLS 1.3 only, ALPN h2, our certificate presented, and the
    /// server's certificate verified against the federation CA only.
    ///
    /// Hostname verification is deliberately off (`.noHostnameVerification`): in this
    /// federation a server is authenticated by the node id in its certificate, not by
    /// the address we dialled. The topology says "node X is at address A"; the client
    /// checks that whoever answers at A holds a federation certificate naming X
    /// (`NodeIdentityHandler(expecting: X)`), which is strictly stronger than checking
    /// that the certificate lists A: every node certificate may list the same addresses
    /// (all dev certificates carry 127.0.0.1 and localhost), addresses change and sit
    /// behind NAT, and an IP address cannot be sent as SNI. A client must therefore
    /// always install `NodeIdentityHandler(expecting:)` (or check `peerNodeID`) before
    /// sending anything; otherwise any federation node could answer for any other.
    public func clientConfiguration() -> TLSConfiguration {
        var c = TLSConfiguration.makeClientConfiguration()
        c.trustRoots = .certificates(federationCA)
        c.additionalTrustRoots = []
        c.certificateChain = certificateChain.map { .certificate($0) }
        c.privateKey = .privateKey(privateKey)
        c.certificateVerification = .noHostnameVerification
        c.minimumTLSVersion = .tlsv13
        c.applicationProtocols = ["h2"]
        return c
    }

    public func makeServerContext() throws -> NIOSSLContext { try NIOSSLContext(configuration: serverConfiguration()) }
    public func makeClientContext() throws -> NIOSSLContext { try NIOSSLContext(configuration: clientConfiguration()) }
}

/// Fired down the pipeline once the peer's node id is known and accepted.
public struct PeerNodeIdentified: Sendable, Equatable {
    public let node: NodeID
    /// The ALPN protocol agreed in the handshake (`h2` between nodes).
    public let applicationProtocol: String?
}

/// Placed right after `NIOSSLServerHandler`/`NIOSSLClientHandler`: when the TLS
/// handshake completes it reads the node id from the verified peer certificate and,
/// when an expected node was given (the client side, from the topology), checks it.
/// On success it records `peer` and fires `PeerNodeIdentified`; on failure it fires
/// the `NodeIdentityError` as an error and closes the connection. Bytes read before
/// the peer is identified are never passed on.
///
/// When given `identified`, it completes it too: with the node, or with the first error
/// (the TLS handshake's, or `NodeIdentityError`), or `ConnectionClosedBeforeIdentification`,
/// so a client can wait for the peer before opening anything on the connection.
///
/// On the client side, `PeerNodeIdentified` means "the server is node X", NOT "the
/// server accepted us": under TLS 1.3 the client's handshake completes when it sends
/// its Finished, before the server has checked the client certificate. A rejected
/// client certificate then arrives as an alert on the first read after the handshake
/// (BoringSSL `TLSV1_ALERT_CERTIFICATE_REQUIRED` / `TLSV1_ALERT_UNKNOWN_CA`, surfacing
/// as `BoringSSLError.sslError` via `errorCaught`, followed by close). So a client must
/// treat a connection that ends before any response (HTTP/2: before the response
/// head) as a failure, and must bound that wait with a timeout.
public final class NodeIdentityHandler: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer

    private let expected: NodeID?
    public private(set) var peer: NodeID?
    private var failed = false
    private var identified: EventLoopPromise<NodeID>?

    public init(expecting expected: NodeID? = nil, identified: EventLoopPromise<NodeID>? = nil) {
        self.expected = expected
        self.identified = identified
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard case .handshakeCompleted(let alpn)? = event as? TLSUserEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        context.fireUserInboundEventTriggered(event)
        do throws(NodeIdentityError) {
            let node = try NodeIdentity.peerNodeID(context.pipeline.syncOperations)
            if let expected, expected != node { throw .unexpectedNode(expected: expected, presented: node) }
            peer = node
            context.fireUserInboundEventTriggered(PeerNodeIdentified(node: node, applicationProtocol: alpn))
            complete(.success(node))
        } catch {
            failed = true
            complete(.failure(error))
            context.fireErrorCaught(error)
            context.close(promise: nil)
        }
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard peer != nil else {
            if !failed {
                failed = true
                complete(.failure(NodeIdentityError.noPeerCertificate))
                context.fireErrorCaught(NodeIdentityError.noPeerCertificate)
                context.close(promise: nil)
            }
            return
        }
        context.fireChannelRead(data)
    }

    public func errorCaught(context: ChannelHandlerContext, error: Error) {
        complete(.failure(error))
        context.fireErrorCaught(error)
    }

    public func channelInactive(context: ChannelHandlerContext) {
        complete(.failure(ConnectionClosedBeforeIdentification()))
        context.fireChannelInactive()
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        complete(.failure(ConnectionClosedBeforeIdentification()))
    }

    /// Completes `identified` once; later outcomes change nothing.
    private func complete(_ result: Result<NodeID, Error>) {
        guard let promise = identified else { return }
        identified = nil
        promise.completeWith(result)
    }
}

/// The connection ended before its TLS handshake identified the peer.
public struct ConnectionClosedBeforeIdentification: Error, CustomStringConvertible, Sendable {
    public init() {}
    public var description: String { "the connection closed before the TLS handshake identified the peer" }
}
