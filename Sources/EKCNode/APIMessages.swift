import NIOCore
import NIOHTTP1

/// A request as the operator API sees it: the whole body, already bounded by the HTTP handler.
public struct APIRequest {
    public var method: HTTPMethod
    public var uri: String
    public var headers: HTTPHeaders
    public var body: ByteBuffer?
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
