import CaseStore
import Replication
import Wire

/// What this build is, for the people who run it and for its peers: the release it was
/// cut as (CHANGELOG.md names each one; tags `vX.Y.Z`), the store format it reads and
/// writes, and the replication protocol versions it speaks. `ekc version` prints it,
/// `GET /v1/health` gives it to ops, `ekc cluster health` shows it per node.
public enum Release {
    /// The release; "-dev" while its changes are being made after the last tag.
    public static var name: String { StoreFormats.release }
    public static var storeFormat: UInt32 { CaseStore.storeFormat }
    public static var protocolVersions: ClosedRange<UInt32> { ReplicationProtocol.supportedVersions }
    public static var capabilities: Capabilities { ReplicationProtocol.capabilities }
}
