"""A hostile HTTP/2 client against a live node's HTTP/2 servers: the operator port in
cleartext (prior-knowledge h2c) and with TLS (ALPN h2), and the replication port with
mutual TLS and a valid federation certificate (a peer the node pulls from, hostile all
the same). Frames are written by hand (h2_raw.py), so the client sends what a
conforming library never would:

  rapid reset (CVE-2023-44487) and its server-side twin (stream errors provoked in a
  loop), CONTINUATION floods (CVE-2024-27316 family: big, empty, one-byte fragments),
  SETTINGS / PING / PRIORITY floods (reading, and never reading the acks), WINDOW_UPDATE
  past 2^31-1 and of zero, SETTINGS_INITIAL_WINDOW_SIZE that overflows open streams, a
  zero window with big responses never read, header lists far over the limit (many
  headers, one huge value, an HPACK bomb, a huge dynamic-table size update), DATA after
  a refused body and on streams never opened / stream 0 / closed streams, empty DATA
  frames, too many concurrent streams, unfinished requests (and, with TLS, a connection
  that never says hello), PRIORITY on itself, even and decreasing stream ids, new streams
  after the client's GOAWAY, unknown frame types.

For each attack: the node cuts it within a bounded time — GOAWAY with a sensible code,
RST_STREAM, or the connection closed (or, for what HTTP/2 says to ignore, it ignores it
and stays usable); its RSS grows by less than 200 MiB; and throughout, a well-behaved
client keeps getting 200 from /v1/health (HTTP/1.1) and 201 creating a ticket (HTTP/2),
each on a fresh connection (latencies printed). At the end every node is alive with no
"Fatal error" in its log. `-s` prints a table: attack → outcome, time to cut.

The operator nodes run with 3 s header/body/idle/handshake timeouts, so that what only a
timeout ends (a zero window never opened, an unfinished body) ends within the test; the
replication port's limits are fixed (ReplicationServer: a request whole within 10 s, a
TLS handshake within 10 s, a connection without streams closed after a minute, which
this test does not wait for). About 70 s on a debug build.
"""
import json
import socket
import ssl
import statistics
import struct
import time
from dataclasses import dataclass

import pytest

from conftest import Node, free_port
from fake_peer import client_context
from federation import make_certs
from h2_raw import (CONTINUATION, END_HEADERS, END_STREAM, HEADERS, INITIAL_WINDOW_SIZE, MAX_CONCURRENT_STREAMS,
                    MAX_WINDOW, PRIORITY_FLAG, Closed, Raw, Watch, data, error_name, frame, goaway, literal, ping,
                    priority, rss_kib, rst, settings, varint, window_update)
from tokens import token

MAIN, ROGUE = "irk-main", "irk-rogue"
TIMEOUT_S = 3          # the nodes' --api-{header,body,idle}-timeout in this file
RSS_BUDGET_MIB = 200
PULL_BODY = b"\x08\x02"  # PullRequest {protocol_version: 2}


# --- targets -----------------------------------------------------------------------------------------

@dataclass
class Target:
    name: str
    port: int
    tls: ssl.SSLContext          # for Raw (ALPN h2), None in cleartext
    node: Node
    api_port: int                # where the well-behaved client asks
    api_tls_h1: ssl.SSLContext   # its contexts (None in cleartext)
    api_tls_h2: ssl.SSLContext
    replication: bool = False

    @property
    def max_streams(self) -> int:
        """SETTINGS_MAX_CONCURRENT_STREAMS of the port."""
        return 16 if self.replication else 100

    @property
    def request_timeout(self) -> float:
        """By when an unfinished request is reset: the test's --api-body-timeout, or the
        replication port's fixed 10 s (ReplicationServer.streamLimits)."""
        return 10.0 if self.replication else TIMEOUT_S

    @property
    def handshake_timeout(self) -> float:
        """--api-handshake-timeout here; the replication port's fixed 10 s (ReplicationServer.connectionLimits)."""
        return 10.0 if self.replication else TIMEOUT_S

    def connect(self, **kw) -> Raw:
        return Raw(self.port, self.tls, **kw)

    def open_headers(self, c: Raw):
        """A request whose body is still to come (no END_STREAM)."""
        if self.replication:
            return c.request_headers("POST", "/replication/v2/pull", [("content-type", "application/x-protobuf")])
        return c.request_headers("POST", "/v1/tickets", [("content-type", "application/json"),
                                                         ("authorization", "Bearer " + token(self.node.org))])

    def complete_headers(self, c: Raw):
        """A whole request in one HEADERS frame (END_STREAM): GET /v1/health, or on the
        replication port a pull without a body (refused at once with 400)."""
        if self.replication:
            return c.request_headers("POST", "/replication/v2/pull", [("content-type", "application/x-protobuf")])
        return c.request_headers("GET", "/v1/health")


def tls_context(ca, alpn, cert=None, key=None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.check_hostname = False
    if cert:
        ctx.load_cert_chain(str(cert), str(key))
    ctx.set_alpn_protocols(alpn)
    return ctx


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two node processes: `plain` (operator port in cleartext) and irk-main (operator port
    with TLS, replication with mutual TLS, irk-rogue among its peers: a certificate of the
    federation CA held by this test). Short timeouts, so that what only a timeout can end
    ends within the test."""
    root = tmp_path_factory.mktemp("hostile-h2")
    timeouts = ["--api-header-timeout", str(TIMEOUT_S), "--api-body-timeout", str(TIMEOUT_S),
                "--api-idle-timeout", str(TIMEOUT_S), "--api-handshake-timeout", str(TIMEOUT_S)]
    certs = make_certs(root / "certs", MAIN, ROGUE)
    repl_port = free_port()
    topology = root / "topology.json"
    identity = lambda n: {"cert": str(certs / f"{n}.pem"), "key": str(certs / f"{n}.key"), "ca": str(certs / "ca.pem")}
    topology.write_text(json.dumps({"federation": "test", "nodes": [
        {"id": MAIN, "region": "38", "role": "test", "utcOffsetMinutes": 480, "numberSeries": 0,
         "replication": f"127.0.0.1:{repl_port}", "identity": identity(MAIN), "peers": [ROGUE]},
        # never started: the node's pulls from it fail and back off; it only serves to be allowed in
        {"id": ROGUE, "region": "38", "role": "test", "utcOffsetMinutes": 480, "numberSeries": 9,
         "replication": "127.0.0.1:9", "identity": identity(ROGUE), "peers": [MAIN]},
    ]}, indent=2))
    plain = Node(root / "plain", node_id="irk-plain", extra=timeouts)
    main = Node(root / "main", node_id=MAIN,
                extra=["--config", str(topology), "--tls-cert", str(certs / f"{MAIN}.pem"),
                       "--tls-key", str(certs / f"{MAIN}.key"), *timeouts])
    nodes = [plain, main]
    try:
        plain.start()
        main.start()
        deadline = time.monotonic() + 20
        while True:  # the replication listener too
            try:
                socket.create_connection(("127.0.0.1", repl_port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, main.log_path.read_text()[-2000:]
                time.sleep(0.05)
        ca = certs / "ca.pem"
        api_h1, api_h2 = tls_context(ca, ["http/1.1"]), tls_context(ca, ["h2"])
        targets = {
            "h2c": Target("h2c", plain.port, None, plain, plain.port, None, None),
            "tls": Target("tls", main.port, api_h2, main, main.port, api_h1, api_h2),
            "repl": Target("repl", repl_port, client_context(certs, ROGUE), main, main.port, api_h1, api_h2,
                           replication=True),
        }
        rss0 = {n.node_id: rss_kib(n.proc.pid) for n in nodes}
        rows = []
        yield {"targets": targets, "nodes": nodes, "rows": rows, "rss0": rss0, "health": [], "create": []}
        print_table(rows)
    finally:
        for n in nodes:
            n.stop()


def print_table(rows):
    if not rows:
        return
    w = max(len(r[1]) for r in rows)
    o = min(76, max(len(r[2]) for r in rows))
    print(f"\n{'target':6} {'attack':{w}}  {'outcome':{o}} {'cut after':>9}  {'RSS +MiB':>8}  well-behaved client")
    for target, attack, outcome, cut, rss, watch in rows:
        cut_s = f"{cut * 1000:.0f} ms" if cut is not None else "-"
        print(f"{target:6} {attack:{w}}  {outcome[:o]:{o}} {cut_s:>9}  {rss:8.1f}  {watch}")


# --- expectations ----------------------------------------------------------------------------------

class Result:
    def __init__(self, outcome: str, cut: float = None):
        self.outcome, self.cut = outcome, cut


def describe(c: Raw, streams=()) -> str:
    cut = c.cut(streams)
    if cut is None:
        return "not cut"
    kind, code, _ = cut
    if kind == "GOAWAY":
        return f"GOAWAY {error_name(code)}" + (" + closed" if c.closed_at else "")
    if kind == "RST":
        return f"RST_STREAM {error_name(code)}"
    return "closed"


def expect_cut(c: Raw, t0: float, codes, within: float = 2.0, streams=(), what: str = "") -> Result:
    """The node answered the attack with GOAWAY of one of `codes` (names), RST_STREAM of one
    of them on one of `streams`, or a close, within `within` s of `t0`; and a connection
    that got GOAWAY is closed soon after."""
    c.wait(lambda c: c.cut(streams) is not None, max(0.0, t0 + within - time.monotonic()))
    cut = c.cut(streams)
    assert cut is not None, f"{what}: not cut within {within} s; events {c.events[-10:]}"
    kind, code, at = cut
    if kind != "CLOSED":
        assert error_name(code) in codes, f"{what}: {kind} {error_name(code)}, expected one of {codes}"
    if kind == "GOAWAY":
        assert c.wait_closed(2.0), f"{what}: GOAWAY {error_name(code)} but the connection stayed open"
    return Result(describe(c, streams), at - t0)


def send_until_cut(c: Raw, chunks, limit_s: float = 8.0, streams=()) -> int:
    """Sends each chunk of the iterable until the node cuts (or closes) or `limit_s` passes;
    the number of chunks sent."""
    n, t_end = 0, time.monotonic() + limit_s
    for chunk in chunks:
        if c.cut(streams) is not None or time.monotonic() > t_end:
            break
        try:
            c.send(chunk)
        except (Closed, TimeoutError, OSError):
            break
        n += 1
    return n


# --- the attacks -----------------------------------------------------------------------------------
# Each takes a Target and returns a Result (asserting what the node must do).

def rapid_reset(tg: Target) -> Result:
    """HEADERS then RST_STREAM(CANCEL) at once, stream after stream, in batches of 100."""
    c = tg.connect()
    block = c.block(tg.open_headers(c))
    t0 = time.monotonic()

    def batches():
        sid = 1
        while True:
            yield b"".join(c.headers(s, block) + rst(s) for s in range(sid, sid + 200, 2))
            sid += 200
    n = send_until_cut(c, batches())
    r = expect_cut(c, t0, {"ENHANCE_YOUR_CALM"}, what="rapid reset")
    rate = n * 100 / max(r.cut, 1e-3)
    r.outcome += f" after {n * 100} resets ({rate:.0f}/s sent)"
    c.close()
    return r


def provoked_resets(tg: Target) -> Result:
    """The server made to reset (MadeYouReset): a stream opened, then WINDOW_UPDATE 0 on it, repeated."""
    c = tg.connect()
    block = c.block(tg.open_headers(c))
    t0 = time.monotonic()

    def batches():
        sid = 1
        while True:
            yield b"".join(c.headers(s, block) + window_update(s, 0) for s in range(sid, sid + 100, 2))
            sid += 100
    n = send_until_cut(c, batches(), streams=None)
    r = expect_cut(c, t0, {"ENHANCE_YOUR_CALM"}, streams=None, what="provoked stream errors")
    r.outcome += f" after {n * 50} streams, {len(c.resets)} RST"
    c.close()
    return r


def continuation_flood(size: int):
    def attack(tg: Target) -> Result:
        """HEADERS without END_HEADERS, then CONTINUATION frames of `size` bytes, without end."""
        c = tg.connect()
        block = c.block(tg.open_headers(c))
        t0 = time.monotonic()
        filler = literal(b"x-filler", b"f" * 16300)[:size] if size else b""

        def frames():
            yield c.headers(1, block, end_headers=False)
            while True:
                yield frame(CONTINUATION, 0, 1, filler) * (1 if size > 1000 else 200)
        n = send_until_cut(c, frames())
        r = expect_cut(c, t0, {"ENHANCE_YOUR_CALM", "PROTOCOL_ERROR"}, what=f"CONTINUATION flood ({size} B)")
        r.outcome += f" after ~{n * (1 if size > 1000 else 200)} frames"
        c.close()
        return r
    return attack


def control_flood(kind: str, read: bool = True):
    def attack(tg: Target) -> Result:
        c = tg.connect(read=read)
        one = {"settings": settings((MAX_CONCURRENT_STREAMS, 100)), "ping": ping(), "priority": priority(1, 0)}[kind]
        t0 = time.monotonic()
        n = send_until_cut(c, (one * 1000 for _ in range(1000)))
        if not read:  # it never read; now it does, to see what the node said before it closed
            c.start_reading()
        r = expect_cut(c, t0, {"ENHANCE_YOUR_CALM"}, within=8, what=f"{kind} flood")
        r.outcome += f" after <= {n * 1000} frames"
        c.close()
        return r
    return attack


def window_overflow_connection(tg: Target) -> Result:
    c = tg.connect()
    t0 = time.monotonic()
    c.send(window_update(0, MAX_WINDOW))
    r = expect_cut(c, t0, {"FLOW_CONTROL_ERROR"}, what="connection WINDOW_UPDATE past 2^31-1")
    c.close()
    return r


def window_overflow_stream(tg: Target) -> Result:
    c = tg.connect()
    t0 = time.monotonic()
    c.send(c.headers(1, c.block(tg.open_headers(c))) + window_update(1, MAX_WINDOW))
    r = expect_cut(c, t0, {"FLOW_CONTROL_ERROR"}, streams={1}, what="stream WINDOW_UPDATE past 2^31-1")
    c.close()
    return r


def window_zero_connection(tg: Target) -> Result:
    c = tg.connect()
    t0 = time.monotonic()
    c.send(window_update(0, 0))
    r = expect_cut(c, t0, {"PROTOCOL_ERROR"}, what="connection WINDOW_UPDATE of 0")
    c.close()
    return r


def window_zero_stream(tg: Target) -> Result:
    c = tg.connect()
    t0 = time.monotonic()
    c.send(c.headers(1, c.block(tg.open_headers(c))) + window_update(1, 0))
    r = expect_cut(c, t0, {"PROTOCOL_ERROR"}, streams={1}, what="stream WINDOW_UPDATE of 0")
    c.close()
    return r


def initial_window_overflows_open_stream(tg: Target) -> Result:
    """A stream's send window raised to 2^31-1, then SETTINGS_INITIAL_WINDOW_SIZE up by one."""
    c = tg.connect()
    t0 = time.monotonic()
    c.send(c.headers(1, c.block(tg.open_headers(c))) + window_update(1, MAX_WINDOW - 65535)
           + settings((INITIAL_WINDOW_SIZE, 65536)))
    r = expect_cut(c, t0, {"FLOW_CONTROL_ERROR"}, what="SETTINGS_INITIAL_WINDOW_SIZE overflowing a stream")
    c.close()
    return r


def initial_window_too_big(tg: Target) -> Result:
    c = tg.connect()
    t0 = time.monotonic()
    c.send(settings((INITIAL_WINDOW_SIZE, 2**31)))
    r = expect_cut(c, t0, {"FLOW_CONTROL_ERROR"}, what="SETTINGS_INITIAL_WINDOW_SIZE 2^31")
    c.close()
    return r


def zero_window_never_read(tg: Target) -> Result:
    """Advertises a zero window, asks for a big response on every stream it may open (the
    operator port: /openapi.yaml, 116 KB; replication: a pull) on three connections, and never reads a byte of them nor opens its window. The node may
    answer the heads and must send no DATA; on the operator port the streams must be
    reset by the timeouts; a pull stream lives as long as its puller by design (nothing
    but heartbeats waits for the window), so there only what the node holds is checked."""
    conns, t0 = [], time.monotonic()
    for _ in range(3):
        c = tg.connect(our_settings=[(INITIAL_WINDOW_SIZE, 0)])
        out = []
        for i in range(tg.max_streams):
            sid = 1 + 2 * i
            if tg.replication:
                out.append(c.headers(sid, c.block(tg.open_headers(c))) + data(sid, PULL_BODY, end=True))
            else:
                out.append(c.headers(sid, c.block(c.request_headers("GET", "/openapi.yaml")), end_stream=True))
        c.send(b"".join(out))
        conns.append(c)
    within = 3 * TIMEOUT_S + 3 if not tg.replication else 2.0
    for c in conns:
        c.wait(lambda c: c.goaway is not None or c.closed_at is not None or len(c.resets) >= tg.max_streams,
               max(0.0, t0 + within - time.monotonic()))
    answered = sum(len(c.status) for c in conns)
    data_bytes = sum(sum(c.data_bytes.values()) for c in conns)
    outcomes = {describe(c) for c in conns}
    reset = sum(len(c.resets) for c in conns)
    last = max(max([c.goaway[0] if c.goaway else c.closed_at or 0] + [t for t, _ in c.resets.values()]) for c in conns)
    cut = [bool(c.goaway or c.closed_at or len(c.resets) >= tg.max_streams) for c in conns]
    for c in conns:
        c.close()
    assert data_bytes == 0, f"DATA sent into a zero window: {data_bytes} bytes"
    if tg.replication:
        assert not any(cut), outcomes
        return Result(f"held: {answered} pulls answered, no DATA (pull streams are long-lived)")
    assert all(cut), f"zero-window streams not cut within {within} s: {outcomes}, {reset} streams reset"
    return Result(f"{'/'.join(sorted(outcomes))}; {reset} RST, {answered} heads", (last - t0) if last else None)


def headers_frames(c: Raw, sid: int, block: bytes, size: int = 16384) -> bytes:
    """One header block as HEADERS + CONTINUATION frames of at most `size` bytes."""
    parts = [block[i:i + size] for i in range(0, len(block), size)] or [b""]
    out = frame(HEADERS, END_STREAM | (END_HEADERS if len(parts) == 1 else 0), sid, parts[0])
    for i, p in enumerate(parts[1:], 1):
        out += frame(CONTINUATION, END_HEADERS if i == len(parts) - 1 else 0, sid, p)
    return out


def oversized(kind: str):
    def attack(tg: Target) -> Result:
        c = tg.connect()
        base = tg.complete_headers(c)
        if kind == "1 MiB of headers":
            block = c.block(base + [(f"x-h{i}", "v" * 100) for i in range(10000)])
        elif kind == "one 1 MiB value":  # a raw literal: hpack's Huffman coder takes minutes over 1 MiB
            block = c.block(base) + literal(b"x-huge", b"h" * (1 << 20))
        elif kind == "5000 small headers":
            block = c.block(base) + b"".join(literal(f"h{i}".encode(), b"v") for i in range(5000))
        elif kind == "HPACK bomb":
            # one 4 KB entry in the dynamic table, then 15,000 one-byte references to it (~60 MB decoded)
            block = c.block(base) + literal(b"x-bomb", b"b" * 4000, indexed=True) + bytes([0x80 | 62]) * 15000
        elif kind == "table size update 2^32":
            block = varint(2**32, 5, 0x20) + c.block(base)
        else:
            raise AssertionError(kind)
        t0 = time.monotonic()
        send_until_cut(c, [headers_frames(c, 1, block)])
        # A connection error, or this stream refused (RST, or a 431 answer).
        c.wait(lambda c: c.cut({1}) is not None or 1 in c.status, 2.0)
        if 1 in c.status and c.cut({1}) is None:
            status = c.status[1]
            assert status in (400, 431), f"{kind}: answered {status}"
            r = Result(f"answered {status}", c.events[-1][0] - t0)
        else:
            r = expect_cut(c, t0, {"PROTOCOL_ERROR", "COMPRESSION_ERROR", "ENHANCE_YOUR_CALM", "FRAME_SIZE_ERROR"},
                           streams={1}, what=kind)
        r.outcome += f" ({len(block) // 1024} KiB block)"
        c.close()
        return r
    return attack


def send_flow_controlled(c: Raw, sid: int, seconds: float, chunk: int = 16384) -> int:
    """Sends DATA on `sid` for `seconds`, within the windows the node grants (so the node
    cannot call it a flow-control error); stops at a cut of the stream. Bytes sent."""
    sent, conn_sent, t_end = 0, 0, time.monotonic() + seconds
    stream_sent = 0
    while time.monotonic() < t_end and c.cut({sid}) is None:
        with c.cond:
            conn_window = 65535 + c.window_credit.get(0, 0) - c.conn_data_sent
            stream_window = c.peer_initial_window + c.window_credit.get(sid, 0) - c.stream_data_sent.get(sid, 0)
        n = min(chunk, conn_window, stream_window)
        if n <= 0:
            c.wait(lambda c: c.cut({sid}) is not None or
                   65535 + c.window_credit.get(0, 0) - c.conn_data_sent > 0 and
                   c.peer_initial_window + c.window_credit.get(sid, 0) - c.stream_data_sent.get(sid, 0) > 0,
                   max(0.0, min(0.5, t_end - time.monotonic())))
            continue
        try:
            c.send_data(sid, b"x" * n)
        except (Closed, TimeoutError, OSError):
            break
        sent += n
    return sent


def data_after_refused_body(declared: bool):
    def attack(tg: Target) -> Result:
        return _data_after_refused_body(tg, declared)
    return attack


def _data_after_refused_body(tg: Target, declared: bool) -> Result:
    """POST with a body over the limit — declared (content-length 1 GB: the operator port
    answers 413 at once) or not (refused once 128 KiB, 64 KiB on the replication port,
    have come) — then DATA keeps coming on that stream, within the windows the node
    grants. The node must stop it with RST_STREAM (or GOAWAY) soon after its answer, not
    read and drop it until the body timeout."""
    c = tg.connect()
    hdrs = tg.open_headers(c) + ([("content-length", str(10**9))] if declared else [])
    t0 = time.monotonic()
    c.send(c.headers(1, c.block(hdrs)))
    sent = send_flow_controlled(c, 1, 1.5 + TIMEOUT_S)
    status = c.status.get(1)
    answered_at = next((t for t, kind, sid, _ in c.events if kind == "HEADERS" and sid == 1), None)
    cut = c.cut({1})
    r_outcome = f"{status} then {describe(c, {1})}, {sent // 1024} KiB sent"
    c.close()
    assert status == (400 if tg.replication else 413), f"answered {status}"
    assert cut is not None, f"the refused stream was never cut: {r_outcome}"
    assert cut[2] - answered_at < 1.0, \
        f"the refused stream was cut {cut[2] - answered_at:.2f} s after the answer ({r_outcome}): the node read the body anyway"
    return Result(r_outcome, cut[2] - t0)


def refused_bodies_on_new_streams(tg: Target) -> Result:
    """Ten streams at once, each with a body over the limit, DATA pushed on all of them."""
    c = tg.connect()
    t0 = time.monotonic()
    sids = list(range(1, 21, 2))  # 10 streams
    extra = [("content-length", str(10**9))]
    c.send(b"".join(c.headers(s, c.block(tg.open_headers(c) + extra)) for s in sids))
    sent, t_end = 0, time.monotonic() + 1.5 + TIMEOUT_S
    while time.monotonic() < t_end and any(c.cut({s}) is None for s in sids):
        for s in sids:
            sent += send_flow_controlled(c, s, 0.05)
    cuts = [c.cut({s}) for s in sids]
    status = sorted(set(c.status.get(s) for s in sids), key=str)
    outcome = f"{status}, then {describe(c, set(sids))} on {sum(1 for x in cuts if x)}/10, {sent // 1024} KiB sent"
    c.close()
    assert all(cuts), outcome
    last = max(x[2] for x in cuts)
    assert last - t0 < 2.0, f"refused streams cut only after {last - t0:.2f} s: {outcome}"
    return Result(outcome, last - t0)


def data_on(where: str):
    def attack(tg: Target) -> Result:
        c = tg.connect()
        t0 = time.monotonic()
        if where == "stream 0":
            c.send(data(0, b"x" * 100))
            r = expect_cut(c, t0, {"PROTOCOL_ERROR"}, what="DATA on stream 0")
        elif where == "an idle stream":
            c.send(data(41, b"x" * 100))
            r = expect_cut(c, t0, {"PROTOCOL_ERROR", "STREAM_CLOSED"}, streams={41}, what="DATA on a stream never opened")
        else:  # a stream the node already closed (answered and ended both ways)
            c.send(c.headers(1, c.block(tg.complete_headers(c)), end_stream=True))
            assert c.wait(lambda c: 1 in c.ended or 1 in c.resets, 5), c.events
            t0 = time.monotonic()
            c.send(data(1, b"x" * 100) * 10)
            r = expect_cut(c, t0, {"STREAM_CLOSED", "PROTOCOL_ERROR"}, streams={1}, what="DATA on a closed stream")
        c.close()
        return r
    return attack


def empty_data_flood(tg: Target) -> Result:
    c = tg.connect()
    t0 = time.monotonic()
    c.send(c.headers(1, c.block(tg.open_headers(c))))
    n = send_until_cut(c, (data(1, b"") * 100 for _ in range(1000)))
    r = expect_cut(c, t0, {"ENHANCE_YOUR_CALM"}, what="empty DATA flood")
    r.outcome += f" after <= {n * 100} frames"
    c.close()
    return r


def too_many_streams(tg: Target) -> Result:
    """Three times SETTINGS_MAX_CONCURRENT_STREAMS opened at once, none finished: those over it are refused."""
    c = tg.connect()
    block = c.block(tg.open_headers(c))
    t0 = time.monotonic()
    c.send(b"".join(c.headers(s, block) for s in range(1, 6 * tg.max_streams + 1, 2)))
    c.wait(lambda c: c.goaway is not None or c.closed_at is not None or len(c.resets) >= tg.max_streams, 3)
    refused = {sid for sid, (_, code) in c.resets.items() if error_name(code) in ("REFUSED_STREAM", "PROTOCOL_ERROR")}
    outcome = describe(c) if c.goaway or c.closed_at else f"RST_STREAM REFUSED_STREAM on {len(refused)}"
    cut = c.cut()
    c.close()
    assert c.goaway and error_name(c.goaway[1]) in ("PROTOCOL_ERROR", "REFUSED_STREAM", "ENHANCE_YOUR_CALM") \
        or len(refused) >= 2 * tg.max_streams, f"streams over the maximum were not refused: {outcome}, {len(c.resets)} RST"
    return Result(outcome, cut[2] - t0 if cut else None)


def priority_on_itself(tg: Target) -> Result:
    c = tg.connect()
    t0 = time.monotonic()
    block = c.block(tg.open_headers(c))
    c.send(c.headers(1, block) + priority(1, 1))
    r = expect_cut(c, t0, {"PROTOCOL_ERROR"}, streams={1}, what="PRIORITY depending on itself")
    # and in the HEADERS' own priority block
    t1 = time.monotonic()
    if c.closed_at is None and c.goaway is None:
        c.send(frame(HEADERS, END_HEADERS | PRIORITY_FLAG, 3, struct.pack(">IB", 3, 15) + block))
        r2 = expect_cut(c, t1, {"PROTOCOL_ERROR"}, streams={3}, what="HEADERS depending on itself")
        r.outcome += f"; HEADERS: {r2.outcome}"
    c.close()
    return r


def even_stream_id(tg: Target) -> Result:
    c = tg.connect()
    t0 = time.monotonic()
    c.send(c.headers(2, c.block(tg.complete_headers(c)), end_stream=True))
    r = expect_cut(c, t0, {"PROTOCOL_ERROR"}, what="HEADERS on an even stream id")
    c.close()
    return r


def decreasing_stream_id(tg: Target) -> Result:
    c = tg.connect()
    block = c.block(tg.open_headers(c))
    t0 = time.monotonic()
    c.send(c.headers(5, block))
    c.send(c.headers(3, block))
    r = expect_cut(c, t0, {"PROTOCOL_ERROR", "STREAM_CLOSED"}, streams={3}, what="HEADERS on a lower stream id")
    c.close()
    return r


def streams_after_own_goaway(tg: Target) -> Result:
    """The client says GOAWAY, then opens as many streams as it may anyway: served or
    refused, either is bounded. On the operator port the connection must then end (the
    node's GOAWAY or idle timeout); the replication port has no idle timeout."""
    c = tg.connect()
    t0 = time.monotonic()
    block = c.block(tg.complete_headers(c))
    n = tg.max_streams // 2
    c.send(goaway(0, 0) + b"".join(c.headers(s, block, end_stream=True) for s in range(1, 2 * n, 2)))
    c.wait(lambda c: c.closed_at is not None or len(c.ended) >= n, TIMEOUT_S + 3)
    if not tg.replication:
        c.wait(lambda c: c.closed_at is not None, TIMEOUT_S + 3)
    answered = len(c.status)
    outcome = f"{answered}/{n} answered, then {describe(c)}"
    cut = c.cut()
    c.close()
    assert answered == n or cut is not None, outcome
    assert tg.replication or c.closed_at is not None, f"connection not ended after the client's GOAWAY: {outcome}"
    return Result(outcome, cut[2] - t0 if cut else None)


def unknown_frames(tg: Target) -> Result:
    """10,000 frames of an unknown type (0xfa, 1 KiB each): RFC 9113 §4.1 says ignore them;
    the connection must stay usable (a PING is answered) and, on the operator port, end at
    its idle timeout (the replication port has none)."""
    c = tg.connect()
    t0 = time.monotonic()
    n = send_until_cut(c, (frame(0xFA, 0, 0, b"u" * 1024) * 100 for _ in range(100)))
    if c.cut() is None:
        c.send(ping(b"after"))
        assert c.wait(lambda c: c.ping_acks >= 1 or c.cut() is not None, 5)
    answered = c.ping_acks >= 1
    if not tg.replication:
        c.wait(lambda c: c.closed_at is not None, TIMEOUT_S + 3)
    outcome = (f"ignored ({n * 100} frames), PING answered; then {describe(c)}" if answered
               else f"{describe(c)} after {n * 100} frames")
    cut = c.cut()
    c.close()
    assert answered, outcome
    assert tg.replication or c.closed_at is not None, outcome
    return Result(outcome, cut[2] - t0 if cut else None)


def unfinished_requests(tg: Target) -> Result:
    """Streams opened with a request whose body never ends: each must be reset by the
    node's timeouts (not held for as long as the client likes). With TLS, meanwhile, a TCP
    connection that never starts its handshake must be closed at the handshake timeout."""
    silent = socket.create_connection(("127.0.0.1", tg.port)) if tg.tls else None
    silent_t0 = time.monotonic()
    c = tg.connect()
    block = c.block(tg.open_headers(c))
    t0 = time.monotonic()
    sids = list(range(1, 2 * min(15, tg.max_streams), 2))
    c.send(b"".join(c.headers(s, block) + data(s, b"\x08") for s in sids))
    within = tg.request_timeout + 3
    c.wait(lambda c: all(c.cut({s}) for s in sids), within)
    cuts = [c.cut({s}) for s in sids]
    outcome = f"{describe(c, set(sids))} on {sum(1 for x in cuts if x)}/{len(sids)}"
    c.close()
    assert all(cuts), f"unfinished requests held past {within} s: {outcome}"
    if silent is not None:
        silent.settimeout(max(0.1, silent_t0 + tg.handshake_timeout + 2 - time.monotonic()))
        try:
            closed = silent.recv(100) == b""
        except ConnectionResetError:
            closed = True
        except socket.timeout:
            closed = False
        took = time.monotonic() - silent_t0
        silent.close()
        outcome += f"; no TLS hello: {'closed after %.1f s' % took if closed else 'held'}"
        assert closed, f"a connection that never started TLS was held past {tg.handshake_timeout + 2} s"
    return Result(outcome, max(x[2] for x in cuts) - t0)


ATTACKS = {
    "rapid reset": rapid_reset,
    "provoked resets (WINDOW_UPDATE 0)": provoked_resets,
    "CONTINUATION flood 16 KiB": continuation_flood(16300),
    "CONTINUATION flood empty": continuation_flood(0),
    "CONTINUATION flood 1 byte": continuation_flood(1),
    "SETTINGS flood": control_flood("settings"),
    "PING flood": control_flood("ping"),
    "PRIORITY flood": control_flood("priority"),
    "SETTINGS flood, never reads": control_flood("settings", read=False),
    "PING flood, never reads": control_flood("ping", read=False),
    "WINDOW_UPDATE conn > 2^31-1": window_overflow_connection,
    "WINDOW_UPDATE stream > 2^31-1": window_overflow_stream,
    "WINDOW_UPDATE conn 0": window_zero_connection,
    "WINDOW_UPDATE stream 0": window_zero_stream,
    "INITIAL_WINDOW_SIZE overflows stream": initial_window_overflows_open_stream,
    "INITIAL_WINDOW_SIZE 2^31": initial_window_too_big,
    "zero window, never reads": zero_window_never_read,
    "headers: 1 MiB list": oversized("1 MiB of headers"),
    "headers: one 1 MiB value": oversized("one 1 MiB value"),
    "headers: 5000 small": oversized("5000 small headers"),
    "headers: HPACK bomb": oversized("HPACK bomb"),
    "headers: table size update 2^32": oversized("table size update 2^32"),
    "DATA after refused body (declared)": data_after_refused_body(True),
    "DATA after refused body (undeclared)": data_after_refused_body(False),
    "refused bodies on 10 streams": refused_bodies_on_new_streams,
    "DATA on stream 0": data_on("stream 0"),
    "DATA on idle stream": data_on("an idle stream"),
    "DATA on closed stream": data_on("a closed stream"),
    "empty DATA flood": empty_data_flood,
    "3x max concurrent streams": too_many_streams,
    "unfinished requests": unfinished_requests,
    "PRIORITY on itself": priority_on_itself,
    "even stream id": even_stream_id,
    "decreasing stream id": decreasing_stream_id,
    "streams after client GOAWAY": streams_after_own_goaway,
    "unknown frame types": unknown_frames,
}

# TLS changes the transport, not the HTTP/2 server: the attacks whose cost lies in the
# bytes (floods, big blocks, bodies) run over it too; the replication server gets them all.
ON_TLS = ["rapid reset", "CONTINUATION flood 16 KiB", "PING flood, never reads", "SETTINGS flood",
          "headers: 1 MiB list", "headers: HPACK bomb", "DATA after refused body (undeclared)", "zero window, never reads",
          "WINDOW_UPDATE conn > 2^31-1", "unfinished requests"]
CASES = ([("h2c", a) for a in ATTACKS] + [("tls", a) for a in ON_TLS] + [("repl", a) for a in ATTACKS])


@pytest.mark.parametrize("target,attack", CASES, ids=[f"{t}-{a}" for t, a in CASES])
def test_attack_is_cut_and_others_are_served(world, target, attack):
    tg = world["targets"][target]
    error = None
    with Watch(tg.api_port, token(tg.node.org), tg.node.proc.pid, tls_h1=tg.api_tls_h1, tls_h2=tg.api_tls_h2) as w:
        try:
            r = ATTACKS[attack](tg)
        except AssertionError as e:
            error, r = e, Result(f"FAILED: {str(e).splitlines()[0][:80]}")
    world["rows"].append((target, attack, r.outcome, r.cut, w.rss_growth_mib, w.summary()))
    world["health"] += w.health
    world["create"] += w.create
    print(f"\n{target} {attack}: {r.outcome}" + (f", cut after {r.cut * 1000:.0f} ms" if r.cut is not None else "")
          + f"; RSS {w.rss_before // 1024} -> peak {w.rss_peak // 1024} MiB; {w.summary()}")
    assert tg.node.proc.poll() is None, f"the node died: {tg.node.log_path.read_text()[-3000:]}"
    assert not w.failures, f"the well-behaved client failed during {attack}: {w.failures[:5]}"
    assert w.rss_growth_mib < RSS_BUDGET_MIB, f"RSS grew by {w.rss_growth_mib:.0f} MiB"
    if error:
        raise error


def test_nodes_survived_everything(world):
    for label in ("health", "create"):
        xs = world[label]
        if xs:
            print(f"\nwell-behaved client over all attacks, {label}: {len(xs)} requests, all answered; "
                  f"p50 {statistics.median(xs) * 1000:.0f} ms, max {max(xs) * 1000:.0f} ms")
    for n in world["nodes"]:
        assert n.proc.poll() is None, f"{n.node_id} exited with {n.proc.returncode}"
        log = n.log_path.read_text(errors="replace")
        assert "Fatal error" not in log, log[-3000:]
        growth = (rss_kib(n.proc.pid) - world["rss0"][n.node_id]) / 1024
        print(f"\n{n.node_id}: RSS {world['rss0'][n.node_id] // 1024} -> {rss_kib(n.proc.pid) // 1024} MiB")
        assert growth < RSS_BUDGET_MIB, f"{n.node_id}: RSS grew by {growth:.0f} MiB over all attacks"
