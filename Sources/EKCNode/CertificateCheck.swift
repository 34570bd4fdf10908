import Foundation
import NIOSSL

/// The certificate half of `ekc cluster check`: every node's identity files load, the
/// certificate names the node, was issued by the federation CA, is valid now and for
/// the next weeks, and matches its key; every node trusts the same CA.
public enum CertificateCheck {
    /// A certificate expiring sooner than this is a problem to act on now.
    public static let renewalWarning: TimeInterval = 14 * 24 * 3600

    public static func problems(_ topology: Topology, now: Date) -> [TopologyProblem] {
        var p: [TopologyProblem] = []
        var cas: [(node: String, ca: [NIOSSLCertificate])] = []
        for n in topology.nodes {
            guard let identity = n.identity else { continue }
            guard let caPath = identity.ca else {
                p.append(.init(n.id, "identity has no \"ca\": name the federation CA certificate"))
                continue
            }
            let loaded = load(n.id, identity.cert, caPath, key: identity.key)
            p += loaded.problems
            guard let leaf = loaded.leaf, let ca = loaded.ca else { continue }
            cas.append((n.id, ca))
            if let node = try? NodeIdentity.nodeID(of: leaf) {
                if node.value != n.id {
                    p.append(.init(n.id, "\(identity.cert) is issued to node \(node), not \(n.id); issue one for \(n.id) (ops/dev-ca.sh DIR \(n.id))"))
                }
            } else {
                p.append(.init(n.id, "\(identity.cert) names no node (a URI urn:ekc:node:\(n.id) in its subject alternative names)"))
            }
            if !ca.contains(where: { $0.subjectName == leaf.issuerName }) {
                p.append(.init(n.id, "\(identity.cert) was not issued by the CA in \(caPath); issue it from that CA"))
            }
            let notBefore = Date(timeIntervalSince1970: TimeInterval(leaf.notValidBefore))
            let notAfter = Date(timeIntervalSince1970: TimeInterval(leaf.notValidAfter))
            if notBefore > now {
                p.append(.init(n.id, "\(identity.cert) is not valid before \(stamp(notBefore)); check the clock or reissue it"))
            } else if notAfter <= now {
                p.append(.init(n.id, "\(identity.cert) expired on \(stamp(notAfter)); issue a new one"))
            } else if notAfter.timeIntervalSince(now) < renewalWarning {
                p.append(.init(n.id, "\(identity.cert) expires on \(stamp(notAfter)); renew it before then"))
            }
        }
        if let first = cas.first {
            for other in cas.dropFirst() where Set(other.ca) != Set(first.ca) {
                p.append(.init(other.node, "trusts another CA than \(first.node); every node of a federation trusts the same CA"))
            }
        }
        return p
    }

    private static func load(_ node: String, _ certPath: String, _ caPath: String, key keyPath: String)
        -> (leaf: NIOSSLCertificate?, ca: [NIOSSLCertificate]?, problems: [TopologyProblem]) {
        var p: [TopologyProblem] = []
        func read<T>(_ what: String, _ path: String, _ body: () throws -> T) -> T? {
            guard FileManager.default.isReadableFile(atPath: path) else {
                p.append(.init(node, "\(what) \(path) does not exist or cannot be read"))
                return nil
            }
            do { return try body() } catch {
                p.append(.init(node, "\(what) \(path) is not a PEM \(what): \(error)"))
                return nil
            }
        }
        let chain = read("certificate", certPath) { try NIOSSLCertificate.fromPEMFile(certPath) }
        let key = read("key", keyPath) { try NIOSSLPrivateKey(file: keyPath, format: .pem) }
        let ca = read("CA certificate", caPath) { try NIOSSLCertificate.fromPEMFile(caPath) }
        if let chain, chain.isEmpty { p.append(.init(node, "\(certPath) holds no certificate")) }
        if let ca, ca.isEmpty { p.append(.init(node, "\(caPath) holds no certificate")) }
        if let chain, let leaf = chain.first, let key {
            // BoringSSL refuses a context whose key does not belong to its certificate.
            var config = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) },
                                                                   privateKey: .privateKey(key))
            config.minimumTLSVersion = .tlsv13
            if (try? NIOSSLContext(configuration: config)) == nil {
                p.append(.init(node, "the key \(keyPath) does not belong to the certificate \(certPath)"))
            }
            return (leaf, ca.flatMap { $0.isEmpty ? nil : $0 }, p)
        }
        return (chain?.first, ca, p)
    }

    private static func stamp(_ d: Date) -> String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withFullDate]
        return f.string(from: d)
    }
}
