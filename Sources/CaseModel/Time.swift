/// Wall-clock time in milliseconds since the Unix epoch (UTC). The model never
/// reads a clock: every function that needs "now" takes one of these.
public typealias Millis = Int64

public enum Calendar59 {
    public static let millisPerHour: Millis = 3_600_000
    public static let millisPerDay: Millis = 86_400_000

    /// Gregorian year of an instant in a zone `offsetMinutes` east of UTC.
    public static func year(of t: Millis, offsetMinutes: Int) -> Int {
        civil(daysSinceEpoch: floorDiv(t + Millis(offsetMinutes) * 60_000, millisPerDay)).year
    }

    /// Howard Hinnant's days-from-civil inverse: days since 1970-01-01 → (y, m, d).
    public static func civil(daysSinceEpoch z0: Int64) -> (year: Int, month: Int, day: Int) {
        let z = z0 + 719_468
        let era = floorDiv(z, 146_097)
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let y = yoe + era * 400
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (Int(m <= 2 ? y + 1 : y), Int(m), Int(d))
    }

    /// Day of week of a local day number: 0 = Monday … 6 = Sunday (1970-01-01 was a Thursday).
    public static func weekday(daysSinceEpoch d: Int64) -> Int { Int(floorMod(d + 3, 7)) }

    static func floorDiv(_ a: Int64, _ b: Int64) -> Int64 { a >= 0 ? a / b : -((-a + b - 1) / b) }
    static func floorMod(_ a: Int64, _ b: Int64) -> Int64 { a - floorDiv(a, b) * b }
}

/// Working hours of a contact centre in its local time, used for the 8-working-hour
/// deadline of deferred consultations. Public holidays are not modelled yet.
public struct WorkingHours: Sendable, Equatable {
    public var offsetMinutes: Int
    public var startHour: Int
    public var endHour: Int
    public var workdays: Set<Int>  // 0 = Monday

    public init(offsetMinutes: Int, startHour: Int = 9, endHour: Int = 18, workdays: Set<Int> = [0, 1, 2, 3, 4]) {
        self.offsetMinutes = offsetMinutes
        self.startHour = startHour
        self.endHour = endHour
        self.workdays = workdays
    }

    /// The instant `hours` working hours after `start`.
    public func adding(hours: Int, to start: Millis) -> Millis {
        let offset = Millis(offsetMinutes) * 60_000
        var local = start + offset
        var remaining = Millis(hours) * Calendar59.millisPerHour
        while remaining > 0 {
            let day = Calendar59.floorDiv(local, Calendar59.millisPerDay)
            let dayStart = day * Calendar59.millisPerDay
            let open = dayStart + Millis(startHour) * Calendar59.millisPerHour
            let close = dayStart + Millis(endHour) * Calendar59.millisPerHour
            if !workdays.contains(Calendar59.weekday(daysSinceEpoch: day)) || local >= close {
                local = dayStart + Calendar59.millisPerDay + Millis(startHour) * Calendar59.millisPerHour
                continue
            }
            if local < open { local = open }
            let available = close - local
            if available >= remaining {
                local += remaining
                remaining = 0
            } else {
                remaining -= available
                local = close
            }
        }
        return local - offset
    }
}

/// A hybrid-logical-clock reading: 48 bits of wall milliseconds and 16 bits of
/// logical counter, packed so that integer order is causal order. The clock that
/// produces these lives in Replication; the model only stores and compares them.
public struct Stamp: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let raw: UInt64
    public init(raw: UInt64) { self.raw = raw }
    public init(millis: Millis, logical: UInt16) {
        self.raw = UInt64(max(0, millis)) << 16 | UInt64(logical)
    }
    public var millis: Millis { Millis(raw >> 16) }
    public var logical: UInt16 { UInt16(truncatingIfNeeded: raw) }
    public static let zero = Stamp(raw: 0)
    public static func < (a: Stamp, b: Stamp) -> Bool { a.raw < b.raw }
    public var description: String { "\(millis).\(logical)" }
}
