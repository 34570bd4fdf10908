import CaseModel
@testable import EKCNode
import Foundation
@testable import Replication
@testable import Wire

/// The replication wire as a puller reads a peer's response body (PullStream.swift):
/// length-prefixed frames cut into chunks as the network might deliver them, each frame
/// read by `FrameDecoder` (every record decoded and checked by its kind's rules) and fed
/// to a `PullSession`; each merge the session hands over is admitted record by record
/// (`RecordSchema.admit`, as `CaseStore.applyMerge` does) into the records already
/// received, which are then read as tickets and transfers and shown as the API shows them.
///
/// Input: one byte of parameters (bits 0-5: the chunk size - 1; bit 6: the peer is the
/// pension fund's node instead of an office of our own region; bit 7: the pull resumes
/// from a checkpoint), then the body.
public enum FrameFuzz {
    static let reading = RecordReading(kinds: FuzzWorld.kinds, check: CheckContext(directory: FuzzWorld.directory))

    /// Builds the fixtures before the first input.
    public static func prepare() { _ = reading }

    public static func run(_ data: [UInt8]) {
        var input = FuzzBytes(data)
        let parameters = input.byte()
        let chunk = Int(parameters & 0x3F) + 1
        let peer = parameters & 0x40 != 0 ? FuzzWorld.pfrMain : FuzzWorld.irkOffice
        let checkpoint = parameters & 0x80 != 0 ? FeedCheckpoint(sourceStoreID: Array(repeating: 7, count: 16), sequence: 3) : nil
        let body = input.rest

        var puller = Puller(peer: peer)
        var clock = MonotonicInstant(nanoseconds: 1_000_000_000)
        puller.run(puller.session.start(checkpoint: checkpoint, now: clock))
        puller.run(puller.session.responseHead(status: 200, now: clock))
        var at = 0
        while at < body.count, !puller.session.isClosed {
            let end = min(body.count, at + chunk)
            puller.decoder.append(body[at..<end])
            at = end
            clock.nanoseconds += 1_000_000
            puller.decodeAvailable(now: clock)
            puller.run(puller.session.readComplete(now: clock))
        }
        if !puller.session.isClosed {
            puller.decodeAvailable(now: clock)
            puller.run(puller.session.streamEnded())
        }
        // Every record received, as the node would show it.
        for record in puller.records.values { show(record) }
    }

    /// The puller's side, as PullStream drives it, with merges applied at once.
    struct Puller {
        var session: PullSession<RemoteRecord>
        var decoder = FrameDecoder(reading: FrameFuzz.reading)
        let peer: NodeID
        /// What merges admitted, by kind and id.
        var records: [RecordKey: Record] = [:]
        var pendingMerge: PullSession<RemoteRecord>.Gathered?

        struct RecordKey: Hashable {
            let kind: RecordKindID
            let id: RecordID
        }

        init(peer: NodeID) {
            self.peer = peer
            session = PullSession(configuration: .init(peer: peer, protocolVersion: ReplicationProtocol.version, mergeLimit: 64))
        }

        /// `PullStream.decodeAvailable`.
        mutating func decodeAvailable(now: MonotonicInstant) {
            while session.acceptsFrames {
                let frame: IncomingFrame?
                do { frame = try decoder.next() } catch {
                    run(session.undecodable("\(error)"))
                    return
                }
                guard let frame else { return }
                switch frame {
                case .header(let h):
                    run(session.header(node: h.node, storeID: Array(h.storeID), resumeAfter: h.resumeAfter,
                                       checkpointReset: h.checkpointReset, lastSequence: h.lastSequence,
                                       protocolVersion: h.protocolVersion, now: now))
                case .batch(let b):
                    run(session.batch(sequences: b.sequences, through: b.throughSequence, sourceLast: b.sourceLastSequence,
                                      payloads: b.records, now: now))
                case .heartbeat(let hb):
                    run(session.heartbeat(sourceLastSequence: hb.sourceLastSequence, sourceStamp: Stamp(raw: hb.sourceStamp),
                                          localWallMillis: FuzzWorld.now, now: now))
                case .error(let e):
                    var error = SessionError(SessionError.Code(wireValue: e.code.rawValue), PeerText.shown(e.message))
                    if e.code == .protocolVersionMismatch {
                        error.supportedVersions = e.minProtocolVersion...max(e.minProtocolVersion, e.maxProtocolVersion)
                    }
                    run(session.errorFrame(error))
                case .unknown:
                    continue
                }
            }
        }

        /// `PullStream.run`, with the merge done in place (it commits at once).
        mutating func run(_ actions: [PullSession<RemoteRecord>.Action]) {
            var merges: [PullSession<RemoteRecord>.Gathered] = []
            for action in actions {
                switch action {
                case .submitMerge(let g): merges.append(g)
                case .close: return
                case .sendRequest, .read, .resumeDecoding, .linkEvent: break
                }
            }
            for g in merges {
                merge(g.payloads)
                run(session.mergeCommitted(now: MonotonicInstant(nanoseconds: 2_000_000_000)))
            }
        }

        /// `CaseStore.applyMerge` without the store: admission against what is held, then
        /// the admitted registers and children merged in.
        mutating func merge(_ payloads: [RemoteRecord]) {
            for remote in payloads {
                guard case .delta(let delta) = remote.content, let schema = FuzzWorld.kinds[delta.kind] else { continue }
                // A checked delta is what its encoder writes, read back the same.
                let again = RecordCoding.encodeDelta(delta, schema: schema)
                let reread = again.withUnsafeBytes { try? RecordCoding.decodeDelta($0, kinds: FuzzWorld.kinds) }
                precondition(reread == delta, "a checked delta does not survive its own encoding: \(delta)")
                let key = RecordKey(kind: delta.kind, id: delta.id)
                let local = records[key]
                let grants = schema.kind == TicketRecord.kind
                    ? Grants([TicketRecord.partner: ["pension"], TicketRecord.successor: ["pension"]]) : .none
                let (admitted, _) = schema.admit(delta, from: peer, local: local?.state, directory: FuzzWorld.directory,
                                                 now: FuzzWorld.now, maxSkew: 60_000, grants: grants, localOrganisation: "38")
                var record = local ?? Record(state: schema.emptyState(delta.id))
                for (i, r) in admitted.state.registers.enumerated() where !r.isEmpty {
                    record.state.registers[i] = record.state.registers[i].merged(r)
                }
                for c in admitted.children {
                    record.children[c.key] = record.children[c.key].map { Child.preferred($0, c) } ?? c
                }
                records[key] = record
            }
        }
    }

    /// A received record as tickets, transfers, conflicts and their notes are shown.
    static func show(_ record: Record) {
        let state = record.state
        guard let schema = FuzzWorld.kinds[state.kind] else { return }
        _ = schema.conflicts(of: state)
        _ = schema.roles(state, FuzzWorld.directory)
        var w = JSONWriter()
        w.beginArray()
        if state.kind == TicketRecord.kind {
            if let t = Ticket.materialise(state, local: LocalRecordInfo(version: 1)) {
                w.ticket(t, transfers: [], now: FuzzWorld.now)
                w.ticket(t, transfers: [], now: FuzzWorld.now, unmasked: Set(OperatorAPI.maskableFields))
            }
            for c in record.children.values {
                if let n = try? TicketValues.note(c, ticket: state.id, checked: false) { w.note(n) }
                if let e = try? TicketValues.event(c, ticket: state.id, checked: false) { w.event(e) }
            }
        } else if state.kind == TransferRecord.kind, var t = Transfer.materialise(state, local: LocalRecordInfo(version: 1)) {
            t.steps = TransferRecord.steps(Array(record.children.values))
            w.transfer(t, now: FuzzWorld.now)
        }
        w.endArray()
        checkJSON(w.bytes)
    }
}
