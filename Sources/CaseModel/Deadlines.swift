/// Legal deadlines of federal law 59-FZ, computed from the instants they run from.
/// The legal clock never pauses; days are calendar days.
public struct Deadlines: Sendable, Hashable {
    /// Register within 3 days of receipt.
    public var registerBy: Millis
    /// Forward to the competent body within 7 days of registration (appeals only).
    public var forwardBy: Millis?
    /// Answer within 30 days of registration (appeals only), plus an extension.
    public var answerBy: Millis?
    /// Days of the single allowed extension (0 when not extended).
    public var extensionDays: Int
    /// Deferred consultations: call back within 8 working hours, local time.
    public var callbackBy: Millis?

    public init(registerBy: Millis, forwardBy: Millis? = nil, answerBy: Millis? = nil,
                extensionDays: Int = 0, callbackBy: Millis? = nil) {
        self.registerBy = registerBy
        self.forwardBy = forwardBy
        self.answerBy = answerBy
        self.extensionDays = extensionDays
        self.callbackBy = callbackBy
    }

    public static let registerDays = 3
    public static let forwardDays = 7
    public static let answerDays = 30
    public static let maxExtensionDays = 30
    public static let callbackWorkingHours = 8

    public static func onReceipt(receivedAt: Millis) -> Deadlines {
        Deadlines(registerBy: receivedAt + Millis(registerDays) * Calendar59.millisPerDay)
    }

    /// The clocks that start at registration.
    public func registered(at t: Millis, regime: LegalRegime) -> Deadlines {
        var d = self
        if regime == .appeal59FZ {
            d.forwardBy = t + Millis(Deadlines.forwardDays) * Calendar59.millisPerDay
            d.answerBy = t + Millis(Deadlines.answerDays) * Calendar59.millisPerDay
        }
        return d
    }

    /// The one extension 59-FZ allows, of 1…30 days.
    public func extended(byDays days: Int) throws(TicketError) -> Deadlines {
        guard let answerBy else { throw .extensionNotApplicable }
        guard extensionDays == 0 else { throw .extensionAlreadyUsed }
        try Deadlines.validate(extensionDays: days)
        var d = self
        d.answerBy = answerBy + Millis(days) * Calendar59.millisPerDay
        d.extensionDays = days
        return d
    }

    /// The days of an extension: what `extendAnswerByDays` asks for, and what a
    /// progress value holds once extended (`extensionDays`; 0 is none, not judged here).
    public static func validate(extensionDays days: Int) throws(TicketError) {
        guard (1...maxExtensionDays).contains(days) else {
            throw .invalidField(field: "extendAnswerByDays", rule: "must be 1 to \(maxExtensionDays) days")
        }
    }

    /// The deadline that matters next for a ticket in `status`, for the deadline index.
    public func next(for status: TicketStatus) -> Millis? {
        switch status {
        case .new: return registerBy
        case .deferred: return callbackBy ?? answerBy
        case .registered, .inWork, .waiting, .reopened, .transferPending: return answerBy
        case .answered, .closed, .merged, .transferredOut: return nil
        }
    }
}
