import CaseModel

/// A hybrid logical clock (Kulkarni et al.): stamps that follow wall time, never go
/// backwards, and order causally related events across nodes. Pure: the caller
/// passes wall time in.
public struct HybridLogicalClock: Sendable, Equatable {
    public private(set) var last: Stamp
    /// A remote stamp further ahead of our wall clock than this is not adopted.
    public let maxSkew: Millis

    public enum Refusal: Error, Equatable, Sendable {
        /// The remote stamp is `ahead` milliseconds in the future of our wall clock.
        case tooFarAhead(remote: Stamp, ahead: Millis)
    }

    public init(last: Stamp = .zero, maxSkew: Millis = 60_000) {
        self.last = last
        self.maxSkew = maxSkew
    }

    /// A stamp for a local event at wall time `wall`.
    public mutating func tick(wall: Millis) -> Stamp {
        if wall > last.millis {
            last = Stamp(millis: wall, logical: 0)
        } else {
            last = successor(of: last)
        }
        return last
    }

    /// Merges a remote stamp into the clock; refuses (and leaves the clock alone) when
    /// it is implausibly far ahead of local wall time.
    public mutating func receive(_ remote: Stamp, wall: Millis) throws(Refusal) -> Stamp {
        if remote.millis - wall > maxSkew {
            throw .tooFarAhead(remote: remote, ahead: remote.millis - wall)
        }
        let top = max(last, remote)
        if wall > top.millis {
            last = Stamp(millis: wall, logical: 0)
        } else {
            last = successor(of: top)
        }
        return last
    }

    private func successor(of s: Stamp) -> Stamp {
        s.logical == .max ? Stamp(millis: s.millis + 1, logical: 0) : Stamp(millis: s.millis, logical: s.logical + 1)
    }
}
