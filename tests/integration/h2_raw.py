"""A raw HTTP/2 client for hostile tests: frames are written byte by byte, so it can send
what no conforming library would (the `h2` package refuses to produce a CONTINUATION
flood or a WINDOW_UPDATE past 2^31-1), and every frame the server sends back is parsed
and recorded with its arrival time by a reader thread.

Plain prior-knowledge h2c or TLS (ALPN h2, a client certificate for mutual TLS). TLS runs
through ssl.SSLObject over memory BIOs, so the reader thread and the sending thread never
call into one SSL object at the same time; the reader never sends (a SETTINGS ACK it owes
is written by the next `send`), so a sender blocked by a server that stopped reading
never blocks the reader that would drain the server's output.

Also here: the well-behaved client (`Watch`) that keeps asking a node for /v1/health and
creating tickets while an attack runs, and the node's resident memory from /proc.
"""
import http.client
import socket
import ssl
import statistics
import struct
import threading
import time

import h2.config
import h2.connection
import h2.events
import hpack

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PRIORITY_FLAG = 0x20
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# SETTINGS parameters
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE = range(1, 7)
MAX_WINDOW = 2**31 - 1

ERROR_NAMES = {0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 3: "FLOW_CONTROL_ERROR",
               4: "SETTINGS_TIMEOUT", 5: "STREAM_CLOSED", 6: "FRAME_SIZE_ERROR", 7: "REFUSED_STREAM",
               8: "CANCEL", 9: "COMPRESSION_ERROR", 10: "CONNECT_ERROR", 11: "ENHANCE_YOUR_CALM",
               12: "INADEQUATE_SECURITY", 13: "HTTP_1_1_REQUIRED"}


def error_name(code: int) -> str:
    return ERROR_NAMES.get(code, f"0x{code:x}")


# --- frames ------------------------------------------------------------------------------------

def frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


def settings(*pairs) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def ping(data: bytes = b"8 bytes!") -> bytes:
    return frame(PING, 0, 0, data[:8].ljust(8, b"\0"))


def rst(sid: int, code: int = 8) -> bytes:
    return frame(RST_STREAM, 0, sid, struct.pack(">I", code))


def window_update(sid: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", increment))


def data(sid: int, payload: bytes, end: bool = False) -> bytes:
    return frame(DATA, END_STREAM if end else 0, sid, payload)


def priority(sid: int, depends_on: int, weight: int = 16) -> bytes:
    return frame(PRIORITY, 0, sid, struct.pack(">IB", depends_on, weight - 1))


def goaway(last: int = 0, code: int = 0) -> bytes:
    return frame(GOAWAY, 0, 0, struct.pack(">II", last, code))


def varint(value: int, prefix_bits: int, first: int) -> bytes:
    """HPACK integer (RFC 7541 §5.1) with `first`'s high bits as the prefix's pattern."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def literal(name: bytes, value: bytes, indexed: bool = False) -> bytes:
    """A literal header field with a literal name: with incremental indexing (0x40) or without (0x00)."""
    return bytes([0x40 if indexed else 0x00]) + varint(len(name), 7, 0) + name + varint(len(value), 7, 0) + value


# --- transport -----------------------------------------------------------------------------------

class Closed(Exception):
    """The server closed the connection (or reset it) while we were sending."""


class Transport:
    """A TCP connection, optionally TLS through ssl.SSLObject over memory BIOs."""

    def __init__(self, port: int, tls: ssl.SSLContext = None, host: str = "127.0.0.1", timeout: float = 5.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.send_lock = threading.Lock()  # keeps whole sends in order
        self.tls_lock = threading.Lock()   # one call into the SSL object at a time
        self.tls = None
        self.alpn = None
        self._eof = False
        if tls is not None:
            self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            self.tls = tls.wrap_bio(self.incoming, self.outgoing, server_side=False, server_hostname="localhost")
            while True:
                try:
                    self.tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    self._flush_tls()
                    chunk = self.sock.recv(65536)
                    if not chunk:
                        raise Closed("closed during the TLS handshake")
                    self.incoming.write(chunk)
            self._flush_tls()
            self.alpn = self.tls.selected_alpn_protocol()

    def _flush_tls(self):
        out = self.outgoing.read()
        if out:
            self.sock.sendall(out)

    def send(self, payload: bytes, timeout: float = 5.0):
        """Sends it all, or raises Closed (reset, broken pipe) or socket.timeout (the server stopped reading)."""
        with self.send_lock:
            if self.tls is not None:
                with self.tls_lock:
                    view = memoryview(payload)
                    while view:
                        n = self.tls.write(view[:16384])
                        view = view[n:]
                    payload = self.outgoing.read()
            self.sock.settimeout(timeout)
            try:
                self.sock.sendall(payload)
            except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as e:
                raise Closed(str(e)) from e

    def recv(self, wait: float):
        """Plaintext that arrived within `wait` s: bytes (maybe empty), or None once closed."""
        import select
        if self._eof:
            return None
        try:
            ready, _, _ = select.select([self.sock], [], [], wait)
        except (OSError, ValueError):
            return None
        if not ready:
            return b""
        try:
            chunk = self.sock.recv(262144)
        except (ConnectionResetError, ConnectionAbortedError, OSError):
            return None
        if not chunk:
            return None
        if self.tls is None:
            return chunk
        out = bytearray()
        with self.tls_lock:
            self.incoming.write(chunk)
            while True:
                try:
                    piece = self.tls.read(262144)
                except ssl.SSLWantReadError:
                    break
                except ssl.SSLError:  # close_notify (SSLZeroReturnError), EOF, or a broken record
                    self._eof = True  # the bytes before it are returned first
                    break
                if not piece:
                    self._eof = True
                    break
                out += piece
        if self._eof and not out:
            return None
        return bytes(out)

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


# --- the raw HTTP/2 client -------------------------------------------------------------------------

class Raw:
    """One HTTP/2 connection written frame by frame. `events` records what the server
    sent: (time, kind, stream id, detail) with kinds GOAWAY (error code, last stream id),
    RST (error code), HEADERS (:status or None), DATA (bytes), END (END_STREAM), WINDOW_UPDATE,
    PING (the server's own PING: its 8 bytes, which it expects back in an ack), PING_ACK,
    SETTINGS, CLOSED. No PING is acknowledged unless a test sends the ack itself."""

    def __init__(self, port: int, tls: ssl.SSLContext = None, our_settings=(), read: bool = True,
                 authority: str = None):
        self.t = Transport(port, tls)
        if tls is not None:
            assert self.t.alpn == "h2", f"ALPN chose {self.t.alpn!r}, not h2"
        self.authority = authority or f"127.0.0.1:{port}"
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.cond = threading.Condition()
        self.events = []
        self.closed_at = None
        self.goaway = None          # (time, code, last stream id, debug)
        self.resets = {}            # sid -> (time, code)
        self.status = {}            # sid -> :status
        self.ended = set()          # streams the server ended (END_STREAM)
        self.data_bytes = {}        # sid -> bytes of DATA received
        self.ping_acks = 0
        self.settings_seen = 0
        self.peer_initial_window = 65535  # the server's SETTINGS_INITIAL_WINDOW_SIZE: our send window per stream
        self.window_credit = {}           # sid (0: the connection) -> WINDOW_UPDATE increments received
        self.conn_data_sent = 0
        self.stream_data_sent = {}
        self._ack_owed = 0
        self._buf = bytearray()
        self._block = None          # (sid, fragments) of a header block being continued
        self._stop = False
        self.started = time.monotonic()
        self.t.send(PREFACE + settings(*our_settings))
        # The server's SETTINGS come first: acknowledge them before anything else happens.
        deadline = time.monotonic() + 5
        while self.settings_seen == 0 and self.closed_at is None and time.monotonic() < deadline:
            self._read_once(0.2)
        assert self.settings_seen, f"no SETTINGS from the server: {self.events}"
        self.send(b"")
        self.reader = None
        if read:
            self.start_reading()

    # --- reading ---
    def start_reading(self):
        if self.reader is None:
            self.reader = threading.Thread(target=self._read_loop, daemon=True)
            self.reader.start()

    def _read_loop(self):
        while not self._stop and self.closed_at is None:
            self._read_once(0.1)

    def _read_once(self, wait: float):
        chunk = self.t.recv(wait)
        if chunk is None:
            self._note("CLOSED", 0, None)
            return
        self._buf += chunk
        while len(self._buf) >= 9:
            length = int.from_bytes(self._buf[:3], "big")
            if len(self._buf) < 9 + length:
                break
            ftype, flags = self._buf[3], self._buf[4]
            sid = int.from_bytes(self._buf[5:9], "big") & 0x7FFFFFFF
            payload = bytes(self._buf[9:9 + length])
            del self._buf[:9 + length]
            self._frame(ftype, flags, sid, payload)

    def _frame(self, ftype, flags, sid, payload):
        if ftype == GOAWAY:
            last, code = struct.unpack(">II", payload[:8])
            self._note("GOAWAY", 0, (code, last & 0x7FFFFFFF, payload[8:200]))
        elif ftype == RST_STREAM:
            self._note("RST", sid, struct.unpack(">I", payload[:4])[0])
        elif ftype in (HEADERS, CONTINUATION):
            if ftype == HEADERS:
                pad = payload[0] if flags & 0x8 else 0
                start = (1 if flags & 0x8 else 0) + (5 if flags & PRIORITY_FLAG else 0)
                self._block = (sid, [payload[start:len(payload) - pad]], flags & END_STREAM)
            elif self._block:
                self._block[1].append(payload)
            if flags & END_HEADERS and self._block:
                bsid, parts, end = self._block
                self._block = None
                try:
                    headers = dict(self.decoder.decode(b"".join(parts), raw=True))
                    status = int(headers.get(b":status", b"0")) or None
                except Exception:  # noqa: BLE001 - a block we cannot decode is still an answer
                    status = None
                self._note("HEADERS", bsid, status)
                if end:
                    self._note("END", bsid, None)
        elif ftype == DATA:
            self._note("DATA", sid, len(payload))
            if flags & END_STREAM:
                self._note("END", sid, None)
        elif ftype == PING:
            if flags & ACK:
                self._note("PING_ACK", 0, None)
            else:
                self._note("PING", 0, payload)
        elif ftype == SETTINGS:
            if not flags & ACK:
                for i in range(0, len(payload) - 5, 6):
                    key, value = struct.unpack(">HI", payload[i:i + 6])
                    if key == INITIAL_WINDOW_SIZE:
                        with self.cond:
                            self.peer_initial_window = value
                self._ack_owed += 1
                self._note("SETTINGS", 0, None)
        elif ftype == WINDOW_UPDATE:
            self._note("WINDOW_UPDATE", sid, struct.unpack(">I", payload[:4])[0])

    def _note(self, kind, sid, detail):
        now = time.monotonic()
        with self.cond:
            if kind == "CLOSED":
                if self.closed_at is None:
                    self.closed_at = now
                    self.events.append((now, kind, sid, detail))
            else:
                if len(self.events) < 20000 or kind in ("GOAWAY", "RST"):
                    self.events.append((now, kind, sid, detail))
                if kind == "GOAWAY" and self.goaway is None:
                    self.goaway = (now,) + detail
                elif kind == "RST":
                    self.resets.setdefault(sid, (now, detail))
                elif kind == "HEADERS":
                    self.status.setdefault(sid, detail)
                elif kind == "END":
                    self.ended.add(sid)
                elif kind == "DATA":
                    self.data_bytes[sid] = self.data_bytes.get(sid, 0) + detail
                elif kind == "WINDOW_UPDATE":
                    self.window_credit[sid] = self.window_credit.get(sid, 0) + detail
                elif kind == "PING_ACK":
                    self.ping_acks += 1
                elif kind == "SETTINGS":
                    self.settings_seen += 1
            self.cond.notify_all()

    def wait(self, predicate, timeout: float) -> bool:
        """Until predicate(self) holds (True) or the timeout passes (False)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(min(left, 0.05))
            return True

    def wait_closed(self, timeout: float) -> bool:
        return self.wait(lambda c: c.closed_at is not None, timeout)

    # --- writing ---
    def send(self, payload: bytes, timeout: float = 5.0):
        if self._ack_owed:
            payload = frame(SETTINGS, ACK, 0) * self._ack_owed + payload
            self._ack_owed = 0
        if payload:
            self.t.send(payload, timeout)

    def send_data(self, sid: int, payload: bytes, end: bool = False):
        """DATA, counted against the windows (see send_flow_controlled in the tests)."""
        with self.cond:
            self.conn_data_sent += len(payload)
            self.stream_data_sent[sid] = self.stream_data_sent.get(sid, 0) + len(payload)
        self.send(data(sid, payload, end))

    def block(self, headers) -> bytes:
        """An HPACK block of `headers` from this connection's encoder (its dynamic table is the server's)."""
        return self.encoder.encode(headers)

    def request_headers(self, method: str, path: str, extra=()):
        return [(":method", method), (":scheme", "https" if self.t.tls else "http"), (":path", path),
                (":authority", self.authority), *extra]

    def headers(self, sid: int, block: bytes, end_stream: bool = False, end_headers: bool = True) -> bytes:
        return frame(HEADERS, (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0), sid, block)

    def close(self):
        self._stop = True
        self.t.close()
        if self.reader is not None:
            self.reader.join(2)

    # --- what happened ---
    def cut(self, streams=()):
        """The first sign the server stopped the attack: ("GOAWAY", code, t), ("RST", code, t)
        on one of `streams` (any stream when empty; none when None), ("CLOSED", None, t), or None."""
        with self.cond:
            if self.goaway:
                return ("GOAWAY", self.goaway[1], self.goaway[0])
            rs = [(t, code) for sid, (t, code) in self.resets.items()
                  if streams is not None and (not streams or sid in streams)]
            if rs:
                t, code = min(rs)
                return ("RST", code, t)
            if self.closed_at is not None:
                return ("CLOSED", None, self.closed_at)
        return None


# --- a well-behaved client, during an attack -----------------------------------------------------

TICKET = b'{"channel": "phone", "topic": "child-benefits", "subject": "Under attack", "statement": "Still served?"}'


def health_http1(port: int, tls: ssl.SSLContext = None, timeout: float = 5.0) -> int:
    if tls is None:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    else:
        c = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=tls)
    try:
        c.request("GET", "/v1/health", headers={"Host": f"127.0.0.1:{port}"})
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


def create_ticket_h2(port: int, token: str, tls: ssl.SSLContext = None, timeout: float = 5.0) -> int:
    """POST /v1/tickets over a fresh HTTP/2 connection (the `h2` state machine); the :status."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname="localhost")
            assert sock.selected_alpn_protocol() == "h2", sock.selected_alpn_protocol()
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "POST"), (":scheme", "https" if tls else "http"), (":path", "/v1/tickets"),
                                (":authority", f"127.0.0.1:{port}"), ("content-type", "application/json"),
                                ("content-length", str(len(TICKET))), ("authorization", "Bearer " + token)])
        conn.send_data(sid, TICKET, end_stream=True)
        sock.sendall(conn.data_to_send())
        status = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            for e in conn.receive_data(chunk):
                if isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid:
                    status = int(dict(e.headers)[":status"])
                if isinstance(e, h2.events.DataReceived):
                    conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
                if isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset)) and e.stream_id == sid:
                    return status
            out = conn.data_to_send()
            if out:
                sock.sendall(out)
        return status
    finally:
        sock.close()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


class Watch:
    """While an attack runs: a well-behaved client asking GET /v1/health over HTTP/1.1 and
    creating a ticket over HTTP/2, each on a fresh connection, round after round; and the
    node's RSS, sampled. Leaving the block waits for at least `min_rounds` rounds."""

    def __init__(self, port: int, token: str, pid: int, tls_h1: ssl.SSLContext = None, tls_h2: ssl.SSLContext = None,
                 min_rounds: int = 2):
        self.port, self.token, self.pid, self.min_rounds = port, token, pid, min_rounds
        self.tls_h1, self.tls_h2 = tls_h1, tls_h2
        self.health, self.create, self.failures = [], [], []
        self.rss_before = self.rss_peak = self.rss_after = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.rss_before = self.rss_peak = rss_kib(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        deadline = time.monotonic() + 15
        while min(len(self.health), len(self.create)) < self.min_rounds and not self.failures \
                and time.monotonic() < deadline:
            time.sleep(0.01)
        self._stop.set()
        self._thread.join(15)
        self.rss_after = rss_kib(self.pid)
        self.rss_peak = max(self.rss_peak, self.rss_after)
        return False

    def _sample(self):
        try:
            self.rss_peak = max(self.rss_peak, rss_kib(self.pid))
        except (OSError, AssertionError):
            pass

    def _run(self):
        while not self._stop.is_set():
            for label, call, out, ok in (("GET /v1/health", lambda: health_http1(self.port, self.tls_h1), self.health, 200),
                                         ("POST /v1/tickets", lambda: create_ticket_h2(self.port, self.token, self.tls_h2),
                                          self.create, 201)):
                t0 = time.perf_counter()
                try:
                    status = call()
                except Exception as e:  # noqa: BLE001 - every failure is reported
                    status = repr(e)
                elapsed = time.perf_counter() - t0
                if status == ok:
                    out.append(elapsed)
                else:
                    self.failures.append((label, status, round(elapsed, 3)))
                self._sample()
            time.sleep(0.01)

    def summary(self) -> str:
        def fmt(xs):
            return f"p50 {statistics.median(xs) * 1000:.0f}/max {max(xs) * 1000:.0f} ms" if xs else "none"
        return f"health {len(self.health)}× {fmt(self.health)}; create {len(self.create)}× {fmt(self.create)}"

    @property
    def rss_growth_mib(self) -> float:
        return (self.rss_peak - self.rss_before) / 1024
