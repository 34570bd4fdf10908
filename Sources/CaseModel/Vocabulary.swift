/// How a request reached the centre. Assisted channels have an operator talking to
/// the citizen, so a ticket from them is registered at once; the others arrive as NEW
/// and must be registered within three days.
public enum Channel: String, CaseIterable, Sendable, Codable {
    case phone
    case walkIn = "walk-in"
    case videoSign = "video-sign"   // video call with a sign-language interpreter
    case callback                    // a callback the citizen requested
    case web
    case epgu                        // Gosuslugi personal account
    case chatbot
    case voicemail                   // after-hours voice recording
    case email
    case messenger                   // a foreign messenger: general questions only, never personal data

    public var isAssisted: Bool {
        switch self {
        case .phone, .walkIn, .videoSign, .callback: return true
        default: return false
        }
    }

    /// 152-FZ: no personal data may pass through a foreign messenger.
    public var mayCarryPersonalData: Bool { self != .messenger }

    /// A ticket of this channel holding citizen data (a reference, a name, a SNILS or a
    /// phone): refused on a foreign messenger, at the operator API and on the wire alike.
    public func validate(carriesCitizen: Bool) throws(TicketError) {
        if carriesCitizen && !mayCarryPersonalData { throw .personalDataOnMessenger }
    }
}

public enum Priority: String, CaseIterable, Sendable, Codable, Comparable {
    case low, normal, high, urgent
    public static func < (a: Priority, b: Priority) -> Bool { a.code < b.code }
}

/// A consultation of the contact centre, or a formal appeal under federal law 59-FZ
/// with its legal deadlines.
public enum LegalRegime: String, CaseIterable, Sendable, Codable {
    case consultation
    case appeal59FZ = "appeal-59fz"
}

public enum TicketStatus: String, CaseIterable, Sendable, Codable {
    case new = "NEW"
    case registered = "REGISTERED"
    case inWork = "IN_WORK"
    case waiting = "WAITING"
    case deferred = "DEFERRED"
    case answered = "ANSWERED"
    case closed = "CLOSED"
    case reopened = "REOPENED"
    case transferPending = "TRANSFER_PENDING"
    case transferredOut = "TRANSFERRED_OUT"
    case merged = "MERGED"

    /// Whether the legal answer clock is still running.
    public var isOpen: Bool {
        switch self {
        case .answered, .closed, .merged, .transferredOut: return false
        default: return true
        }
    }

}

/// A stable one-byte code for each case: its position in `allCases`, which may only
/// grow at the end. Stored records and index keys use it.
public protocol StoredCode: CaseIterable, Equatable, Sendable {
    static var ordered: [Self] { get }
}

extension StoredCode {
    @inlinable public var code: UInt8 { UInt8(Self.ordered.firstIndex(of: self)!) }
    @inlinable public init?(code: UInt8) {
        guard Int(code) < Self.ordered.count else { return nil }
        self = Self.ordered[Int(code)]
    }
}

extension TicketStatus: StoredCode { public static let ordered = allCases }
extension Channel: StoredCode { public static let ordered = allCases }
extension Priority: StoredCode { public static let ordered = allCases }
extension LegalRegime: StoredCode { public static let ordered = allCases }
extension NoteVisibility: StoredCode { public static let ordered = allCases }

public enum NoteVisibility: String, CaseIterable, Sendable, Codable {
    /// Visible to the partner of a transfer.
    case shared
    /// Visible only on nodes of the owning organisation.
    case `internal`
}
