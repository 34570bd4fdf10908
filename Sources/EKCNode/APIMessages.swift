import Access
import CaseModel
import NIOCore
import NIOHTTP1

/// A request as the operator API sees it: the whole body, already bounded by the HTTP
/// handler; after routing, the verified caller and the actor its edits are recorded as.
public struct APIRequest {
    public var method: HTTPMethod
    public var uri: String
    public var headers: HTTPHeaders
    public var body: ByteBuffer?
    /// The client's address, for the access log (formatted only when a disclosure needs it).
    public var remoteAddress: SocketAddress?
    public var remote: String {
        guard let a = remoteAddress else { return "" }
        return "\(a.ipAddress ?? "?"):\(a.port ?? 0)"
    }
    public internal(set) var principal: Principal? = nil
    /// The principal as the role that allowed the route (history records it).
    public internal(set) var actor: Actor? = nil

    public init(method: HTTPMethod, uri: String, headers: HTTPHeaders, body: ByteBuffer?, remote: SocketAddress? = nil) {
        self.method = method
        self.uri = uri
        self.headers = headers
        self.body = body
        self.remoteAddress = remote
    }
}

public struct APIResponse: Sendable {
    public var status: HTTPResponseStatus
    public var headers: HTTPHeaders
    public var body: ByteBuffer

    static func json(_ status: HTTPResponseStatus, _ w: JSONWriter, headers extra: HTTPHeaders = [:]) -> APIResponse {
        var h: HTTPHeaders = ["content-type": "application/json"]
        h.add(contentsOf: extra)
        return APIResponse(status: status, headers: h, body: w.buffer)
    }

    static func error(_ e: APIError) -> APIResponse { .json(e.status, e.render(), headers: HTTPHeaders(e.headers)) }
}

/// A reply at once (reads, run on the event loop) or when the store's commit returns (edits).
public enum Reply {
    case now(APIResponse)
    case later(EventLoopFuture<APIResponse>)
}
