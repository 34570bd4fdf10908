/// Why bytes from a peer could not be read as the protocol's messages.
public enum WireError: Error, Hashable, Sendable, CustomStringConvertible {
    /// A value outside its type's domain (a batch's sequences, a header's fields).
    case invalidValue(field: String, reason: String)
    case missingField(String)
    /// The protobuf bytes themselves do not parse.
    case malformedMessage(String)
    /// A message could not be serialised.
    case encodingFailed(String)
    /// A length prefix announces a frame longer than the reader accepts.
    case frameTooLarge(length: UInt64, limit: Int)
    /// A length prefix that is not a valid varint (more than 10 bytes, or over 64 bits).
    case malformedLengthPrefix
    /// The input ended in the middle of a frame.
    case truncatedFrame(bufferedBytes: Int)

    public var description: String {
        switch self {
        case let .invalidValue(f, r): return "\(f): \(r)"
        case let .missingField(f): return "\(f): required field is missing"
        case let .malformedMessage(m): return "malformed message: \(m)"
        case let .encodingFailed(m): return "cannot encode message: \(m)"
        case let .frameTooLarge(l, limit): return "frame of \(l) bytes exceeds the limit of \(limit)"
        case .malformedLengthPrefix: return "malformed frame length prefix"
        case let .truncatedFrame(n): return "stream ended inside a frame (\(n) bytes buffered)"
        }
    }
}
