import Dispatch
import Foundation
import Identity
import Logging

extension OperatorIdentity {
    /// The provider a node of `organisation` trusts; a development one gets its key
    /// created when missing, with a warning that says it is for development only.
    func provider(for organisation: String, logger: Logger) throws -> IdentityProvider {
        switch self {
        case .provider(let p):
            var p = p
            p.organisation = organisation
            return p
        case .development(let directory):
            let dev = DevIdentityProvider(directory: directory, organisation: organisation)
            if try dev.ensureKeys() {
                logger.notice("created a development identity provider key", metadata: ["path": "\(dev.keyPath)"])
            }
            logger.warning("operators sign in with the DEVELOPMENT identity provider (ekc login); configure the organisation's identityProvider for production",
                           metadata: ["jwks": "\(dev.jwksPath)"])
            return dev.provider
        }
    }
}

/// Re-reads the provider's JWKS on SIGHUP and whenever the file changes (checked every
/// two seconds), so that a key rotated at the identity provider is trusted without a
/// restart. A file that cannot be used is logged and the keys in use are kept.
struct OperatorIdentityWatch {
    let verifier: TokenVerifier
    let logger: Logger

    func run() async {
        let hangups = AsyncStream<Void> { continuation in
            signal(SIGHUP, SIG_IGN)
            nonisolated(unsafe) let source = DispatchSource.makeSignalSource(signal: SIGHUP)
            source.setEventHandler { continuation.yield() }
            source.resume()
            continuation.onTermination = { _ in source.cancel() }
        }
        let verifier = self.verifier
        let logger = self.logger
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                for await _ in hangups {
                    do {
                        let n = try await verifier.reload()
                        logger.notice("SIGHUP: reloaded the identity provider's keys", metadata: ["keys": "\(n)"])
                    } catch {
                        logger.error("SIGHUP: the identity provider's keys cannot be reloaded; keeping the old ones",
                                     metadata: ["error": "\(error)"])
                    }
                }
            }
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(2))
                    do {
                        if try await verifier.reloadIfChanged() {
                            logger.notice("the identity provider's key file changed; reloaded", metadata: ["keys": "\(verifier.keyIDs)"])
                        }
                    } catch {
                        logger.error("the identity provider's key file changed but cannot be used; keeping the old keys",
                                     metadata: ["error": "\(error)"])
                    }
                }
            }
            await group.next()
            group.cancelAll()
        }
    }
}
