import Foundation
import LMDB

/// The floor under the store's write rate: the same number of B-tree puts per ticket
/// (12, into 11 databases, with keys and values of the store's sizes) straight
/// through the LMDB layer, in groups like the commit thread's, no model, no codec.
enum LMDBFloor {
    static func run(dir: String, tickets: Int, group: Int) throws -> (putsPerTicket: Int, rate: Double) {
        try? FileManager.default.removeItem(atPath: dir)
        let env = try Environment(path: dir)
        let dbs = try (0..<11).map { try env.openDatabase("t\($0)") }
        let record = [UInt8](repeating: 0xAB, count: 420)
        let event = [UInt8](repeating: 0xCD, count: 120)
        var seq: UInt64 = 0
        let t0 = DispatchTime.now().uptimeNanoseconds
        var done = 0
        while done < tickets {
            let n = min(group, tickets - done)
            try env.write { txn in
                for i in 0..<n {
                    seq += 1
                    let id = withUnsafeBytes(of: (UInt64(done + i) << 16).bigEndian) { Array($0) } + [UInt8](repeating: 7, count: 8)
                    let seqKey = withUnsafeBytes(of: seq.bigEndian) { Array($0) }
                    try txn.put(dbs[0], key: Array("38-2026".utf8), value: seqKey)                 // counter
                    try txn.putAppending(dbs[1], key: id, value: record)                            // ticket
                    try txn.putAppending(dbs[2], key: Array("38-2026-\(done + i)".utf8), value: id) // number
                    try txn.putAppending(dbs[3], key: [1] + id, value: [])                          // status index
                    try txn.putAppending(dbs[4], key: seqKey + id, value: [])                       // updated index
                    try txn.putAppending(dbs[5], key: seqKey + id, value: [])                       // deadline index
                    try txn.putAppending(dbs[6], key: id + id, value: event)                        // history
                    try txn.put(dbs[7], key: seqKey, value: id, options: .append)                   // feed
                    try txn.putAppending(dbs[8], key: id, value: seqKey)                            // feed position
                }
                try txn.put(dbs[9], key: [1], value: withUnsafeBytes(of: seq) { Array($0) })       // meta, once per group
            }
            done += n
        }
        let dt = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        return (9, Double(tickets) / dt)
    }
}
