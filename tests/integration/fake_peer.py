"""A fake federation node that serves protocol v2 pulls (proto/README.md, v2 messages
in proto/ekc/replication/v2) with whatever records a test scripts, hostile ones included.

It is an HTTP/2 *server* (the `h2` package) behind TLS 1.3 (the standard `ssl` module)
with a valid federation certificate: ALPN `h2` only, the client certificate required and
verified against the dev CA, the puller's node id read from its `urn:ekc:node:` SAN.

`POST /replication/v2/pull` (content-type application/x-protobuf, a serialised
PullRequest of at most 64 KiB) is answered `:status 200`, `content-type:
application/x-ekc-frames`, and a body of length-delimited `Frame`s:

1. a StreamHeader {protocol_version 2, node = this peer's id, store_id = 16 random bytes
   fixed for the FakePeer's life, resume_after, checkpoint_reset, last_sequence};
   resume_after is the request's checkpoint sequence when the checkpoint names this
   store (and is not beyond its last sequence), else 0; checkpoint_reset is true only
   when a non-empty checkpoint names another store or a sequence beyond the last
   (proto/README.md §5; a fresh puller always gets false);
2. a Heartbeat;
3. the scripted ChangeBatches, restricted to changes after resume_after (a batch whose
   changes all lie at or before it is not sent);
4. then the stream stays open: a Heartbeat every `heartbeat_interval` (2 s) until the
   peer is stopped, and batches added later with `add_batch` as they are added.
   `heartbeat_last` (None: the last batch's through) scripts the heartbeats'
   source_last_sequence, hostile values included.

Anti-entropy calls (`POST /replication/v2/digest`, `/replication/v2/records`, README §13)
are answered by `answer(path, request)` when a test sets it: `request` is the parsed
DigestRequest or RecordsRequest, and the answer is `(status, content_type, body bytes)`,
sent as one unary response whatever it holds; every call is logged in `calls` as
`(path, request)`. Without `answer` those paths are 404.

Records are scripted as bytes (or a message with SerializeToString, or a
v2_records.BuiltTicket), so a test can send bytes no protobuf library would produce.
Batches are encoded by hand here, field by field, so nothing is re-encoded on the way.

Flow control: DATA is sent only within the stream's and the connection's windows, in
DATA frames of at most the peer's SETTINGS_MAX_FRAME_SIZE; a 15 MiB Frame spans about a
thousand DATA frames and waits for WINDOW_UPDATEs. Errors before streaming (wrong
version 400, path 404, method 405, content type 415, body 400, peer not allowed 403)
are one StreamError frame, then END_STREAM (README §7).

`stop()` ends every stream with a SHUTTING_DOWN StreamError where the window allows,
sends GOAWAY, closes every socket and joins every thread it started: no thread and no
listening socket is left behind. Everything it saw is recorded: `requests` (each
PullRequest with the client's node id), `streams` (what each stream sent),
`handshake_failures`.
"""
import collections
import os
import select
import socket
import ssl
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from v2_records import delimited, now_ms, split_delimited, varint

PULL_PATH = "/replication/v2/pull"
DIGEST_PATH = "/replication/v2/digest"
RECORDS_PATH = "/replication/v2/records"
PROTOBUF_TYPE = "application/x-protobuf"
FRAMES_TYPE = "application/x-ekc-frames"
MAX_REQUEST_BYTES = 64 * 1024
NODE_URI = "urn:ekc:node:"


# --- TLS -----------------------------------------------------------------------------------

def node_id_of(peercert) -> str:
    """The node id of a verified certificate (getpeercert()): its one urn:ekc:node: URI SAN."""
    uris = [v for k, v in (peercert or {}).get("subjectAltName", ()) if k == "URI" and v.startswith(NODE_URI)]
    return uris[0][len(NODE_URI):] if len(uris) == 1 else None


def server_context(certs: Path, node_id: str, ca: Path = None) -> ssl.SSLContext:
    certs = Path(certs)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(str(certs / f"{node_id}.pem"), str(certs / f"{node_id}.key"))
    ctx.load_verify_locations(str(ca or certs / "ca.pem"))
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.set_alpn_protocols(["h2"])
    return ctx


def client_context(certs: Path, node_id: str = None, ca: Path = None, tls13: bool = True) -> ssl.SSLContext:
    """A puller's TLS context: the client certificate of `node_id` from `certs` (none when
    node_id is None), verifying the server against `ca` (default: certs/ca.pem). The
    server's node id is in its URI SAN, not its host name, so check_hostname is off;
    callers check node_id_of(getpeercert())."""
    certs = Path(certs)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if tls13:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.load_verify_locations(str(ca or certs / "ca.pem"))
    if node_id:
        ctx.load_cert_chain(str(certs / f"{node_id}.pem"), str(certs / f"{node_id}.key"))
    ctx.set_alpn_protocols(["h2"])
    return ctx


# --- frames (encoded by hand: record bytes go out exactly as scripted) --------------------------

def _field_bytes(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def _field_varint(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value) if value else b""


def record_bytes(record) -> bytes:
    if isinstance(record, (bytes, bytearray, memoryview)):
        return bytes(record)
    if hasattr(record, "delta"):  # v2_records.BuiltTicket
        return record.delta.SerializeToString()
    return record.SerializeToString()


def change_bytes(sequence: int, record: bytes) -> bytes:
    """Change {sequence = 1; RecordDelta record = 2}."""
    return _field_varint(1, sequence) + _field_bytes(2, record)


def batch_frame(changes, through: int, source_last: int) -> bytes:
    """Frame {batch = 2: ChangeBatch {changes = 1, through_sequence = 2, source_last_sequence = 3}},
    length-delimited."""
    body = b"".join(_field_bytes(1, change_bytes(seq, rec)) for seq, rec in changes)
    body += _field_varint(2, through) + _field_varint(3, source_last)
    return delimited(_field_bytes(2, body))


@dataclass
class Batch:
    changes: list          # [(sequence, record bytes)]
    through: int


@dataclass
class PullLog:
    """One request the fake peer received."""
    at: float
    client: str            # node id from the verified client certificate
    method: str
    path: str
    content_type: str
    body: bytes
    request: object = None  # pb2.PullRequest, when the body parsed
    status: int = 0
    resume_after: int = None
    checkpoint_reset: bool = None

    @property
    def checkpoint(self):
        """(source_store_id, sequence) of the request, (b"", 0) when absent."""
        if self.request is None or not self.request.HasField("checkpoint"):
            return b"", 0
        return bytes(self.request.checkpoint.source_store_id), self.request.checkpoint.sequence


@dataclass
class StreamLog:
    """What the fake peer sent on one response stream."""
    client: str
    stream_id: int
    status: int
    frames: list = field(default_factory=list)   # kinds in order: header, heartbeat, batch, error
    sequences: list = field(default_factory=list)  # change sequences sent
    data_frames: int = 0
    data_bytes: int = 0
    largest_data_frame: int = 0
    ended: bool = False


class _OutBuffer:
    """Bytes waiting for flow-control window: a queue of chunks taken from the front."""

    def __init__(self):
        self._chunks = collections.deque()
        self._offset = 0
        self.size = 0

    def push(self, data: bytes):
        if data:
            self._chunks.append(memoryview(bytes(data)))
            self.size += len(data)

    def take(self, n: int) -> bytes:
        out = bytearray()
        while n > 0 and self._chunks:
            head = self._chunks[0]
            part = head[self._offset:self._offset + n]
            out += part
            n -= len(part)
            self._offset += len(part)
            if self._offset >= len(head):
                self._chunks.popleft()
                self._offset = 0
        self.size -= len(out)
        return bytes(out)


class _Stream:
    def __init__(self, sid: int, log: StreamLog, resume_after: int, live: bool):
        self.sid = sid
        self.log = log
        self.out = _OutBuffer()
        self.resume_after = resume_after
        self.sent_through = resume_after  # batches up to here are queued
        self.live = live                  # a 200 stream that stays open
        self.end_when_drained = not live
        self.last_heartbeat = time.monotonic()


class FakePeer:
    """See the module docstring. `pb2` is the namespace of the `pb2` fixture; `certs` a
    dev-CA directory holding `<node_id>.pem/.key` and ca.pem."""

    def __init__(self, pb2, certs, node_id: str = "irk-office-9", *, allowed_clients=None,
                 heartbeat_interval: float = 2.0, store_id: bytes = None, host: str = "127.0.0.1"):
        self.pb2 = pb2
        self.certs = Path(certs)
        self.node_id = node_id
        self.allowed_clients = set(allowed_clients) if allowed_clients else None
        self.heartbeat_interval = heartbeat_interval
        self.store_id = store_id if store_id is not None else os.urandom(16)
        self._ctx = server_context(self.certs, node_id)
        self._host = host
        self._lock = threading.Lock()
        self._batches = []
        self._stopping = threading.Event()
        self._listener = None
        self._accept_thread = None
        self._threads = []
        self._sockets = set()
        self._abort_generation = 0
        self.requests = []            # [PullLog]
        self.streams = []             # [StreamLog]
        self.handshake_failures = []  # [repr of the error]
        self.connections = 0
        self.errors = []              # unexpected exceptions in connection threads
        self.heartbeat_last = None    # a heartbeat's source_last_sequence (None: the last batch's through)
        self.header_capabilities = []  # the StreamHeader's capabilities (proto/README.md §8.1)
        self.answer = None            # answer(path, request) -> (status, content_type, body): anti-entropy calls
        self.pull_status = "200"      # the pull's :status as sent (a test may script one that is no status)
        self.calls = []               # [(path, parsed request)] of the anti-entropy calls answered
        self.port = None

    # --- script ------------------------------------------------------------------------------

    def add_batch(self, changes, through: int = None):
        """Appends a ChangeBatch: `changes` = [(sequence, record)], record as bytes, a
        message, or a BuiltTicket; `through` defaults to the last change's sequence.
        Open streams send it at once (after what they have queued)."""
        encoded = [(int(seq), record_bytes(rec)) for seq, rec in changes]
        seqs = [s for s, _ in encoded]
        assert seqs == sorted(set(seqs)), f"change sequences must strictly increase: {seqs}"
        if through is None:
            through = seqs[-1]
        with self._lock:
            assert through > self.last_sequence, "through_sequence must strictly increase"
            assert not seqs or seqs[0] > self.last_sequence, "changes must follow the previous batch"
            self._batches.append(Batch(encoded, through))

    @property
    def last_sequence(self) -> int:
        return self._batches[-1].through if self._batches else 0

    # --- lifecycle -----------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"{self._host}:{self.port}"

    def start(self) -> "FakePeer":
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((self._host, 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self._accept_thread = threading.Thread(target=self._accept_loop, name=f"fake-peer-{self.node_id}-accept",
                                               daemon=True)
        self._accept_thread.start()
        return self

    def stop(self, timeout: float = 5.0):
        """Ends every stream (SHUTTING_DOWN where the window allows), GOAWAY, closes every
        socket and joins every thread. Idempotent."""
        self._stopping.set()
        if self._listener is not None:
            try:
                self._listener.close()
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for t in [self._accept_thread, *self._threads]:
            if t is not None:
                t.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            leftovers = list(self._sockets)
        for s in leftovers:  # a thread that did not finish in time: cut its socket
            _close(s)
        for t in self._threads:
            t.join(1.0)
        alive = [t.name for t in [self._accept_thread, *self._threads] if t is not None and t.is_alive()]
        assert not alive, f"fake peer threads still running: {alive}"

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def disconnect_all(self):
        """Drops every open connection at once (no GOAWAY, no final frame): the puller
        sees a failed stream and must reconnect."""
        with self._lock:
            self._abort_generation += 1

    def threads(self):
        return [t for t in [self._accept_thread, *self._threads] if t is not None and t.is_alive()]

    def wait_for_requests(self, count: int, timeout: float, since: int = 0):
        """The requests[since:] once there are at least `count` of them (AssertionError after
        `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                got = self.requests[since:]
            if len(got) >= count:
                return got
            if time.monotonic() >= deadline:
                raise AssertionError(f"fake peer {self.node_id}: {len(got)} of {count} pull requests within "
                                     f"{timeout} s; handshake failures: {self.handshake_failures[-3:]}; "
                                     f"errors: {self.errors[-3:]}")
            time.sleep(0.02)

    # --- serving -------------------------------------------------------------------------------

    def _accept_loop(self):
        while not self._stopping.is_set():
            try:
                ready, _, _ = select.select([self._listener], [], [], 0.05)
            except (OSError, ValueError):
                return
            if not ready:
                continue
            try:
                raw, _ = self._listener.accept()
            except OSError:
                continue
            with self._lock:
                if self._stopping.is_set():
                    _close(raw)
                    return
                self._sockets.add(raw)
                self.connections += 1
                t = threading.Thread(target=self._connection, args=(raw,),
                                     name=f"fake-peer-{self.node_id}-conn{self.connections}", daemon=True)
                self._threads.append(t)
            t.start()

    def _connection(self, raw: socket.socket):
        tls = None
        try:
            raw.settimeout(5.0)
            try:
                tls = self._ctx.wrap_socket(raw, server_side=True)
            except (ssl.SSLError, OSError) as e:
                with self._lock:
                    self.handshake_failures.append(repr(e))
                return
            with self._lock:
                self._sockets.discard(raw)
                self._sockets.add(tls)
            if tls.selected_alpn_protocol() != "h2":
                with self._lock:
                    self.handshake_failures.append(f"ALPN {tls.selected_alpn_protocol()!r}")
                return
            client = node_id_of(tls.getpeercert())
            _Connection(self, tls, client).run()
        except Exception:  # recorded for the test; the thread ends
            with self._lock:
                self.errors.append(traceback.format_exc())
        finally:
            with self._lock:
                self._sockets.discard(raw)
                if tls is not None:
                    self._sockets.discard(tls)
            _close(tls or raw)

    # frames made with pb2
    def _frame(self, **kind) -> bytes:
        return delimited(self.pb2.Frame(**kind).SerializeToString())

    def heartbeat_frame(self) -> bytes:
        last = self.last_sequence if self.heartbeat_last is None else self.heartbeat_last
        return self._frame(heartbeat=self.pb2.Heartbeat(source_last_sequence=last, source_stamp=now_ms() << 16))

    def error_frame(self, code: int, message: str) -> bytes:
        return self._frame(error=self.pb2.StreamError(code=code, message=message, min_protocol_version=2,
                                                      max_protocol_version=2))


class _Connection:
    """One accepted TLS connection, served by its own thread."""

    def __init__(self, peer: FakePeer, tls: ssl.SSLSocket, client: str):
        self.peer = peer
        self.pb2 = peer.pb2
        self.tls = tls
        self.client = client
        self.generation = peer._abort_generation
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        self.requests = {}  # stream id -> {"headers": dict, "body": bytearray}
        self.streams = {}   # stream id -> _Stream
        self.closed = False
        self.unflushed = 0

    def run(self):
        self.h2.initiate_connection()
        self.flush()
        while not self.closed:
            if self.peer._stopping.is_set():
                self.shut_down()
                return
            if self.peer._abort_generation != self.generation:
                return  # disconnect_all: the socket is closed by the caller
            data = self.receive(0.05)
            if data is None:
                return  # the client closed the connection
            if data:
                try:
                    events = self.h2.receive_data(data)
                except h2.exceptions.ProtocolError as e:
                    self.peer.errors.append(f"HTTP/2 protocol error from {self.client}: {e!r}")
                    self.flush()
                    return
                for ev in events:
                    self.handle(ev)
            self.tick()
            self.pump()
            self.flush()

    def receive(self, wait: float):
        """Bytes read (b"" when nothing arrived in `wait` seconds), None at EOF."""
        try:
            if self.tls.pending() == 0:
                ready, _, _ = select.select([self.tls], [], [], wait)
                if not ready:
                    return b""
            self.tls.settimeout(wait)
            data = self.tls.recv(1 << 16)
            return data if data else None
        except (socket.timeout, ssl.SSLWantReadError):
            return b""
        except (ssl.SSLError, OSError):
            return None

    def flush(self):
        self.unflushed = 0
        out = self.h2.data_to_send()
        if out:
            self.tls.settimeout(30.0)
            self.tls.sendall(out)

    # --- requests ---
    def handle(self, ev):
        if isinstance(ev, h2.events.RequestReceived):
            self.requests[ev.stream_id] = {"headers": dict(ev.headers), "body": bytearray(), "too_large": False}
        elif isinstance(ev, h2.events.DataReceived):
            self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            req = self.requests.get(ev.stream_id)
            if req is not None:
                if len(req["body"]) + len(ev.data) > MAX_REQUEST_BYTES:
                    req["too_large"] = True
                else:
                    req["body"] += ev.data
        elif isinstance(ev, h2.events.StreamEnded):
            req = self.requests.pop(ev.stream_id, None)
            if req is not None:
                self.respond(ev.stream_id, req)
        elif isinstance(ev, h2.events.StreamReset):
            self.requests.pop(ev.stream_id, None)
            s = self.streams.pop(ev.stream_id, None)
            if s:
                s.log.ended = True
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.closed = True

    def respond(self, sid: int, req: dict):
        pb2, peer = self.pb2, self.peer
        h = req["headers"]
        log = PullLog(at=time.time(), client=self.client, method=h.get(":method", ""), path=h.get(":path", ""),
                      content_type=h.get("content-type", ""), body=bytes(req["body"]))
        with peer._lock:
            peer.requests.append(log)
        code = pb2.StreamError
        if log.path in (DIGEST_PATH, RECORDS_PATH) and peer.answer is not None:
            return self.answer_call(sid, log)
        if log.path != PULL_PATH:
            return self.refuse(sid, log, 404, None, "")
        if log.method != "POST":
            return self.refuse(sid, log, 405, None, "")
        if log.content_type.split(";")[0].strip() != PROTOBUF_TYPE:
            return self.refuse(sid, log, 415, None, "")
        if req["too_large"]:
            return self.refuse(sid, log, 400, code.BAD_REQUEST, "request body over 64 KiB")
        try:
            request = pb2.PullRequest()
            request.ParseFromString(log.body)
            log.request = request
        except Exception as e:  # google.protobuf.message.DecodeError
            return self.refuse(sid, log, 400, code.BAD_REQUEST, f"not a PullRequest: {e}")
        if request.protocol_version != 2:
            return self.refuse(sid, log, 400, code.PROTOCOL_VERSION_MISMATCH, "this node speaks version 2")
        if not self.client:
            return self.refuse(sid, log, 401, code.UNAUTHENTICATED, "no urn:ekc:node: id in the certificate")
        if peer.allowed_clients is not None and self.client not in peer.allowed_clients:
            return self.refuse(sid, log, 403, code.FORBIDDEN, f"{self.client} is not a peer of {peer.node_id}")
        if len(request.checkpoint.source_store_id) > 64:
            return self.refuse(sid, log, 400, code.BAD_REQUEST, "checkpoint store id over 64 bytes")

        with peer._lock:
            last = peer.last_sequence
        store, seq = log.checkpoint
        if not store and seq == 0:
            resume, reset = 0, False
        elif store == peer.store_id and seq <= last:
            resume, reset = seq, False
        else:
            resume, reset = 0, True
        log.status, log.resume_after, log.checkpoint_reset = 200, resume, reset
        slog = StreamLog(client=self.client, stream_id=sid, status=200)
        with peer._lock:
            peer.streams.append(slog)
        s = _Stream(sid, slog, resume, live=True)
        self.streams[sid] = s
        self.h2.send_headers(sid, [(":status", str(peer.pull_status)), ("content-type", FRAMES_TYPE)])
        header = pb2.StreamHeader(protocol_version=2, node=peer.node_id, store_id=peer.store_id,
                                  resume_after=resume, checkpoint_reset=reset, last_sequence=last,
                                  capabilities=peer.header_capabilities)
        self.queue(s, peer._frame(header=header), "header")
        self.queue(s, peer.heartbeat_frame(), "heartbeat")
        s.last_heartbeat = time.monotonic()

    def answer_call(self, sid: int, log: PullLog):
        """An anti-entropy call, answered as the test scripts it (one response, then END_STREAM)."""
        request = (self.pb2.DigestRequest if log.path == DIGEST_PATH else self.pb2.RecordsRequest)()
        try:
            request.ParseFromString(log.body)
        except Exception:
            request = None
        with self.peer._lock:
            self.peer.calls.append((log.path, request))
        status, content_type, body = self.peer.answer(log.path, request)
        log.status = status
        slog = StreamLog(client=self.client, stream_id=sid, status=status)
        s = _Stream(sid, slog, 0, live=False)
        self.streams[sid] = s
        self.h2.send_headers(sid, [(":status", str(status)), ("content-type", content_type),
                                   ("content-length", str(len(body)))], end_stream=not body)
        if not body:
            slog.ended = True
            del self.streams[sid]
            return
        self.queue(s, body, "answer")

    def refuse(self, sid: int, log: PullLog, status: int, code, message: str):
        log.status = status
        slog = StreamLog(client=self.client, stream_id=sid, status=status)
        with self.peer._lock:
            self.peer.streams.append(slog)
        s = _Stream(sid, slog, 0, live=False)
        self.streams[sid] = s
        headers = [(":status", str(status))]
        if code is not None:
            headers.append(("content-type", FRAMES_TYPE))
        self.h2.send_headers(sid, headers, end_stream=code is None)
        if code is None:
            slog.ended = True
            del self.streams[sid]
            return
        self.queue(s, self.peer.error_frame(code, message), "error")

    def queue(self, s: _Stream, frame: bytes, kind: str):
        s.out.push(frame)
        s.log.frames.append(kind)

    # --- streaming ---
    def tick(self):
        """Queues the batches not yet queued on each live stream, and heartbeats."""
        with self.peer._lock:
            batches = list(self.peer._batches)
        now = time.monotonic()
        for s in list(self.streams.values()):
            if not s.live:
                continue
            for b in batches:
                if b.through <= s.sent_through:
                    continue
                changes = [(seq, rec) for seq, rec in b.changes if seq > s.resume_after]
                self.queue(s, batch_frame(changes, b.through, b.through), "batch")
                s.log.sequences.extend(seq for seq, _ in changes)
                s.sent_through = b.through
            if now - s.last_heartbeat >= self.peer.heartbeat_interval:
                self.queue(s, self.peer.heartbeat_frame(), "heartbeat")
                s.last_heartbeat = now

    def pump(self):
        """Sends queued bytes within the flow-control windows (stream and connection)."""
        for s in list(self.streams.values()):
            while s.out.size:
                window = min(self.h2.local_flow_control_window(s.sid), self.h2.max_outbound_frame_size)
                if window <= 0:
                    break
                chunk = s.out.take(window)
                self.h2.send_data(s.sid, chunk)
                s.log.data_frames += 1
                s.log.data_bytes += len(chunk)
                s.log.largest_data_frame = max(s.log.largest_data_frame, len(chunk))
                self.unflushed += len(chunk)
                if self.unflushed >= (1 << 20):  # keep h2's outbound buffer small
                    self.flush()
            if not s.out.size and s.end_when_drained and not s.log.ended:
                self.h2.end_stream(s.sid)
                s.log.ended = True
                del self.streams[s.sid]

    def shut_down(self):
        """The peer is stopping: a final SHUTTING_DOWN frame on every live stream whose
        window allows it, END_STREAM, GOAWAY."""
        try:
            for s in list(self.streams.values()):
                if s.live:
                    s.live = False
                    s.end_when_drained = True
                    self.queue(s, self.peer.error_frame(self.pb2.StreamError.SHUTTING_DOWN, "stopping"), "error")
            deadline = time.monotonic() + 1.0
            while self.streams and time.monotonic() < deadline:
                self.pump()
                self.flush()
                data = self.receive(0.02)
                if data is None:
                    return
                if data:
                    for ev in self.h2.receive_data(data):
                        if isinstance(ev, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                            self.streams.pop(getattr(ev, "stream_id", None), None)
            self.h2.close_connection()
            self.flush()
        except (OSError, ssl.SSLError, h2.exceptions.H2Error):
            pass


def _close(s):
    if s is None:
        return
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass


# --- a puller (HTTP/2 client) for tests ---------------------------------------------------------

@dataclass
class ClientStream:
    headers: dict = None
    data: bytearray = field(default_factory=bytearray)
    data_events: list = field(default_factory=list)  # sizes of the DATA frames received
    ended: bool = False
    reset: bool = False
    unacknowledged: int = 0


class PullClient:
    """A minimal HTTP/2 puller over TLS 1.3 with a client certificate: posts PullRequests
    and reads the frames, acknowledging DATA (opening the window) only when asked."""

    def __init__(self, port: int, ctx: ssl.SSLContext, host: str = "127.0.0.1", timeout: float = 5.0):
        raw = socket.create_connection((host, port), timeout=timeout)
        try:
            self.tls = ctx.wrap_socket(raw)
        except BaseException:
            raw.close()
            raise
        assert self.tls.selected_alpn_protocol() == "h2", self.tls.selected_alpn_protocol()
        self.server_node = node_id_of(self.tls.getpeercert())
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.h2.initiate_connection()
        self.tls.sendall(self.h2.data_to_send())
        self.streams = {}
        self.terminated = None  # ConnectionTerminated event
        self.eof = False

    def post(self, body: bytes, path: str = PULL_PATH, content_type: str = PROTOBUF_TYPE, method: str = "POST") -> int:
        sid = self.h2.get_next_available_stream_id()
        self.h2.send_headers(sid, [(":method", method), (":path", path), (":scheme", "https"),
                                   (":authority", "peer"), ("content-type", content_type)])
        self.h2.send_data(sid, body, end_stream=True)
        self.tls.sendall(self.h2.data_to_send())
        self.streams[sid] = ClientStream()
        return sid

    def read(self, seconds: float, acknowledge: bool = True, until=lambda: False):
        """Reads for up to `seconds` or until `until()`; returns False at EOF."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not until():
            if self.eof:
                return False
            try:
                if self.tls.pending() == 0:
                    ready, _, _ = select.select([self.tls], [], [], min(0.05, max(0.0, deadline - time.monotonic())))
                    if not ready:
                        continue
                self.tls.settimeout(0.2)
                data = self.tls.recv(1 << 16)
            except (socket.timeout, ssl.SSLWantReadError):
                continue
            except (ssl.SSLError, OSError):
                self.eof = True
                return False
            if not data:
                self.eof = True
                return False
            for ev in self.h2.receive_data(data):
                s = self.streams.get(getattr(ev, "stream_id", None))
                if isinstance(ev, h2.events.ResponseReceived):
                    s.headers = dict(ev.headers)
                elif isinstance(ev, h2.events.DataReceived):
                    s.data += ev.data
                    s.data_events.append(len(ev.data))
                    if acknowledge:
                        self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    else:
                        s.unacknowledged += ev.flow_controlled_length
                elif isinstance(ev, h2.events.StreamEnded):
                    s.ended = True
                elif isinstance(ev, h2.events.StreamReset):
                    s.reset = True
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    self.terminated = ev
            out = self.h2.data_to_send()
            if out:
                self.tls.settimeout(10.0)
                self.tls.sendall(out)
        return True

    def acknowledge_all(self):
        for sid, s in self.streams.items():
            if s.unacknowledged:
                self.h2.acknowledge_received_data(s.unacknowledged, sid)
                s.unacknowledged = 0
        self.tls.sendall(self.h2.data_to_send())

    def frames(self, sid: int, pb2):
        """The complete Frames received on stream `sid`, parsed."""
        bodies, _ = split_delimited(self.streams[sid].data)
        out = []
        for b in bodies:
            f = pb2.Frame()
            f.ParseFromString(b)
            out.append(f)
        return out

    def close(self):
        try:
            self.h2.close_connection()
            self.tls.sendall(self.h2.data_to_send())
        except (OSError, ssl.SSLError, h2.exceptions.H2Error):
            pass
        _close(self.tls)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
