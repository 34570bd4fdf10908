"""The hostile-peer harness checked on its own, without any node process: a Python
HTTP/2 client with a dev-CA client certificate pulls from the FakePeer (fake_peer.py)
and decodes what it serves with protoc's Python classes for proto/ekc/replication/v2.

If these pass, a failure of test_hostile_peer.py is the node's, not the harness's.
"""
import socket
import ssl
import threading
import time

import pytest

from fake_peer import FRAMES_TYPE, FakePeer, PullClient, batch_frame, client_context
from federation import make_certs
from hostile_cases import CASES, build_scenario
from v2_records import (DAY_MS, TicketFactory, delimited, find_register, now_ms, split_delimited, stamp_millis,
                        ulid_bytes, ulid_str)

FAKE = "irk-office-9"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"), FAKE, "irk-main", "irk-office-1")


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("other-ca"), "irk-main")


@pytest.fixture
def fake(pb2, certs):
    peers = []

    def make(**kw):
        kw.setdefault("allowed_clients", {"irk-main"})
        p = FakePeer(pb2, certs, FAKE, **kw).start()
        peers.append(p)
        return p

    try:
        yield make
    finally:
        for p in peers:
            p.stop()
        for p in peers:
            assert not p.threads(), p.threads()
            assert not p.errors, p.errors


def pull_request(pb2, store_id=b"", sequence=0, version=2) -> bytes:
    r = pb2.PullRequest(protocol_version=version)
    if store_id or sequence:
        r.checkpoint.source_store_id = store_id
        r.checkpoint.sequence = sequence
    return r.SerializeToString()


def kinds(frames):
    return [f.WhichOneof("kind") for f in frames]


# --- records ----------------------------------------------------------------------------------

def test_valid_ticket_record_has_the_shape_ticket_proto_defines(pb2):
    f = TicketFactory(pb2, node=FAKE, series=9)
    t = f.ticket(7)
    d = pb2.RecordDelta()
    d.ParseFromString(t.bytes())
    assert d.kind == pb2.RECORD_KIND_TICKET and len(d.id) == 16 and d.id == t.id
    assert len(t.id_text) == 26 and ulid_bytes(t.id_text) == t.id
    assert abs((int.from_bytes(t.id[:6], "big")) - now_ms()) < 60_000
    assert [r.number for r in d.registers] == list(range(1, 9))
    classes = {1: pb2.TicketHeader, 2: pb2.Statement, 3: pb2.CitizenValue, 4: pb2.Progress,
               5: pb2.AssigneeValue, 6: pb2.PriorityValue, 7: pb2.Topic, 8: pb2.OwnerValue}
    for r in d.registers:
        assert len(r.versions) == 1
        assert (r.versions[0].dot.node, r.versions[0].dot.stamp) == (FAKE, t.stamp)
        assert [(e.node, e.stamp) for e in r.seen.entries] == [(FAKE, t.stamp)]
        v = classes[r.number]()
        v.ParseFromString(r.versions[0].value)
        assert v == t.values[r.number]
    assert abs(stamp_millis(t.stamp) - now_ms()) < 60_000
    h = pb2.TicketHeader.FromString(find_register(d, 1).versions[0].value)
    year = h.number.year
    assert (h.number.region, h.number.sequence, h.origin_node) == ("38", 90_000_007, FAKE)
    assert 2026 <= year <= 2199 and t.number == f"38-{year}-90000007"
    assert (h.channel, h.legal_regime) == (pb2.CHANNEL_PHONE, pb2.LEGAL_REGIME_CONSULTATION)
    assert abs(h.received_at - now_ms()) < 60_000
    p = pb2.Progress.FromString(find_register(d, 4).versions[0].value)
    assert p.status == pb2.TICKET_STATUS_REGISTERED and p.HasField("registered_at")
    assert p.deadlines.register_by == h.received_at + 3 * DAY_MS
    assert not pb2.CitizenValue.FromString(find_register(d, 3).versions[0].value).HasField("citizen")
    assert not pb2.AssigneeValue.FromString(find_register(d, 5).versions[0].value).HasField("operator")
    assert pb2.PriorityValue.FromString(find_register(d, 6).versions[0].value).priority == pb2.PRIORITY_NORMAL
    assert pb2.Topic.FromString(find_register(d, 7).versions[0].value).topic == "child-benefits"
    assert pb2.OwnerValue.FromString(find_register(d, 8).versions[0].value).node == FAKE
    assert len(d.children) == 1
    c = d.children[0]
    assert (c.collection, c.id, c.dot.node, c.dot.stamp) == (pb2.TICKET_COLLECTION_HISTORY, t.history_id, FAKE, t.stamp)
    assert pb2.HistoryEvent.FromString(c.value) == t.history
    # Stamps of one factory strictly increase: every ticket is a new write.
    assert f.ticket(8).stamp > t.stamp


def test_ulid_text_round_trip():
    for b in (bytes(16), b"\xff" * 16, bytes(range(16))):
        assert ulid_bytes(ulid_str(b)) == b
    assert ulid_str(b"\xff" * 16) == "7ZZZZZZZZZZZZZZZZZZZZZZZZZ"


def test_hand_encoded_batch_parses_as_protobuf_does(pb2):
    f = TicketFactory(pb2, node=FAKE)
    a, b = f.ticket(1), f.ticket(2)
    raw = batch_frame([(1, a.bytes()), (300, b"\x08\x01\x12\x03abc")], 70000, 70001)
    bodies, used = split_delimited(raw)
    assert used == len(raw) and len(bodies) == 1
    frame = pb2.Frame.FromString(bodies[0])
    expected = pb2.Frame(batch=pb2.ChangeBatch(through_sequence=70000, source_last_sequence=70001))
    expected.batch.changes.add(sequence=1, record=a.delta)
    expected.batch.changes.add(sequence=300).record.ParseFromString(b"\x08\x01\x12\x03abc")
    assert frame == expected
    assert raw == delimited(expected.SerializeToString())  # canonical: the same bytes protobuf writes


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_hostile_scenario_builds_and_fits_one_frame(pb2, case):
    """Each case of test_hostile_peer.py gives [A, hostile, B] at 1, 2, 3 in one batch
    under the 16 MiB frame limit, and the hostile record differs from A and B."""
    sc = build_scenario(pb2, case)
    seqs = [s for s, _ in sc.changes]
    assert seqs == [1, 2, 3]
    frame = batch_frame([(s, r if isinstance(r, bytes) else r.bytes()) for s, r in sc.changes], 3, 3)
    assert len(frame) < 16 * 1024 * 1024, len(frame)
    hostile = sc.changes[1][1]
    assert hostile != sc.a.bytes() and hostile != sc.b.bytes()
    assert sc.reason in {"malformed", "invalid_value", "too_large", "unknown_node", "impossible_causality",
                         "stamp_too_far_ahead", "not_authorised", "cannot_speak_for", "equivocation", "unknown_kind"}
    if case.name == "statement_15_mib":
        assert 15 * 1024 * 1024 <= len(hostile) < 16 * 1024 * 1024


# --- the server -------------------------------------------------------------------------------

def test_header_heartbeat_scripted_batch_then_heartbeats_every_two_seconds(pb2, certs, fake):
    f = TicketFactory(pb2, node=FAKE)
    a, b = f.ticket(1), f.ticket(3)
    hostile = b"\x08\x07\x12\x11" + bytes(17)  # kind 7, a 17-byte id: sent as is
    peer = fake()
    peer.add_batch([(1, a), (2, hostile), (3, b)])
    with PullClient(peer.port, client_context(certs, "irk-main")) as c:
        assert c.server_node == FAKE  # the puller can check whom it reached
        sid = c.post(pull_request(pb2))
        c.read(5.0, until=lambda: len(c.frames(sid, pb2)) >= 3)
        s = c.streams[sid]
        assert s.headers[":status"] == "200" and s.headers["content-type"] == FRAMES_TYPE, s.headers
        frames = c.frames(sid, pb2)
        assert kinds(frames) == ["header", "heartbeat", "batch"], frames
        h = frames[0].header
        assert (h.protocol_version, h.node, h.store_id, h.resume_after, h.checkpoint_reset, h.last_sequence) == \
               (2, FAKE, peer.store_id, 0, False, 3)
        assert len(peer.store_id) == 16
        hb = frames[1].heartbeat
        assert hb.source_last_sequence == 3 and abs(stamp_millis(hb.source_stamp) - now_ms()) < 5_000
        batch = frames[2].batch
        assert (batch.through_sequence, batch.source_last_sequence) == (3, 3)
        assert [ch.sequence for ch in batch.changes] == [1, 2, 3]
        assert batch.changes[0].record == a.delta and batch.changes[2].record == b.delta
        assert batch.changes[1].record.SerializeToString() == hostile
        assert batch.changes[1].record.kind == 7 and len(batch.changes[1].record.id) == 17
        # The stream stays open: a heartbeat every 2 s, nothing else, no END_STREAM.
        started = time.monotonic()
        c.read(4.6)
        frames = c.frames(sid, pb2)
        assert kinds(frames)[3:] == ["heartbeat", "heartbeat"], kinds(frames)
        assert not s.ended and not s.reset and time.monotonic() - started >= 4.5
        # A batch added while the stream is live goes out at once, after the earlier ones.
        c2 = f.ticket(4)
        peer.add_batch([(5, c2)], through=6)
        c.read(3.0, until=lambda: "batch" in kinds(c.frames(sid, pb2))[3:])
        late = [fr.batch for fr in c.frames(sid, pb2)[3:] if fr.WhichOneof("kind") == "batch"]
        assert len(late) == 1 and late[0].through_sequence == 6 and [ch.sequence for ch in late[0].changes] == [5]
    req = peer.wait_for_requests(1, 1.0)[0]
    assert req.client == "irk-main" and req.path == "/replication/v2/pull" and req.method == "POST"
    assert req.request.protocol_version == 2 and req.checkpoint == (b"", 0)
    assert (req.status, req.resume_after, req.checkpoint_reset) == (200, 0, False)
    assert peer.streams[0].sequences == [1, 2, 3, 5]


def test_resume_from_a_checkpoint_sends_only_what_follows(pb2, certs, fake):
    f = TicketFactory(pb2, node=FAKE)
    peer = fake()
    tickets = [f.ticket(i) for i in range(1, 4)]
    peer.add_batch([(1, tickets[0]), (2, tickets[1])])
    peer.add_batch([(3, tickets[2])], through=4)
    with PullClient(peer.port, client_context(certs, "irk-main")) as c:
        at1 = c.post(pull_request(pb2, peer.store_id, 1))
        at4 = c.post(pull_request(pb2, peer.store_id, 4))
        other = c.post(pull_request(pb2, b"another store....", 2))
        beyond = c.post(pull_request(pb2, peer.store_id, 9))
        c.read(5.0, until=lambda: all(len(c.frames(s, pb2)) >= n for s, n in
                                      ((at1, 4), (at4, 2), (other, 4), (beyond, 4))))
        fr = c.frames(at1, pb2)
        assert kinds(fr)[:4] == ["header", "heartbeat", "batch", "batch"]
        assert (fr[0].header.resume_after, fr[0].header.checkpoint_reset, fr[0].header.last_sequence) == (1, False, 4)
        assert [ch.sequence for ch in fr[2].batch.changes] == [2] and fr[2].batch.through_sequence == 2
        assert [ch.sequence for ch in fr[3].batch.changes] == [3] and fr[3].batch.through_sequence == 4
        fr = c.frames(at4, pb2)
        assert fr[0].header.resume_after == 4 and fr[0].header.last_sequence == 4
        assert "batch" not in kinds(fr), kinds(fr)  # up to date: header and heartbeat only
        for sid in (other, beyond):
            fr = c.frames(sid, pb2)
            assert (fr[0].header.resume_after, fr[0].header.checkpoint_reset) == (0, True)
            assert [ch.sequence for x in fr if x.WhichOneof("kind") == "batch" for ch in x.batch.changes] == [1, 2, 3]
    got = peer.wait_for_requests(4, 1.0)
    assert [r.checkpoint for r in got] == [(peer.store_id, 1), (peer.store_id, 4), (b"another store....", 2),
                                           (peer.store_id, 9)]


def test_a_15_mib_frame_spans_many_data_frames_within_the_flow_control_window(pb2, certs, fake):
    f = TicketFactory(pb2, node=FAKE)
    text = "Ж" * (15 * 1024 * 1024 // 2)
    big = f.ticket(2, mutate=lambda v: v[pb2.TICKET_REGISTER_STATEMENT].__setattr__("text", text))
    peer = fake()
    peer.add_batch([(1, f.ticket(1)), (2, big), (3, f.ticket(3))])
    with PullClient(peer.port, client_context(certs, "irk-main")) as c:
        sid = c.post(pull_request(pb2))
        # A client that opens no window gets at most the initial 65,535 bytes.
        c.read(1.5, acknowledge=False)
        s = c.streams[sid]
        assert 0 < len(s.data) <= 65_535, len(s.data)
        assert peer.streams[0].data_bytes == len(s.data)
        # Opening the window lets the rest through, in DATA frames of at most 16 KiB (the
        # client's SETTINGS_MAX_FRAME_SIZE), the 15 MiB frame across about a thousand.
        c.acknowledge_all()
        c.read(60.0, until=lambda: "batch" in kinds(c.frames(sid, pb2)))
        frames = c.frames(sid, pb2)
        assert kinds(frames)[:3] == ["header", "heartbeat", "batch"], kinds(frames)
        batch = frames[2].batch
        assert [ch.sequence for ch in batch.changes] == [1, 2, 3]
        st = pb2.Statement.FromString(find_register(batch.changes[1].record, 2).versions[0].value)
        assert len(st.text.encode()) == 15 * 1024 * 1024 and st.text == text
        assert len(s.data_events) > 900 and max(s.data_events) <= 16_384, (len(s.data_events), max(s.data_events))
        log = peer.streams[0]
        assert log.largest_data_frame <= 16_384 and log.data_frames >= len(s.data_events)  # + heartbeats since
        frame_len = len(delimited(frames[2].SerializeToString()))
        assert 15 * 1024 * 1024 < frame_len < 16 * 1024 * 1024
        print(f"15 MiB frame: {frame_len} bytes in {len(s.data_events)} DATA frames")


def test_requests_refused_before_streaming(pb2, certs, fake):
    peer = fake()
    with PullClient(peer.port, client_context(certs, "irk-main")) as c:
        v1 = c.post(pull_request(pb2, version=1))
        wrong_path = c.post(pull_request(pb2), path="/replication/v1/pull")
        wrong_type = c.post(pull_request(pb2), content_type="application/json")
        garbage = c.post(b"\xff\xff\xff")
        c.read(5.0, until=lambda: all(c.streams[s].ended for s in (v1, wrong_path, wrong_type, garbage)))
        assert c.streams[v1].headers[":status"] == "400"
        [err] = c.frames(v1, pb2)
        assert err.error.code == pb2.StreamError.PROTOCOL_VERSION_MISMATCH
        assert (err.error.min_protocol_version, err.error.max_protocol_version) == (2, 2)
        assert c.streams[wrong_path].headers[":status"] == "404" and not c.streams[wrong_path].data
        assert c.streams[wrong_type].headers[":status"] == "415"
        assert c.streams[garbage].headers[":status"] == "400"
        assert c.frames(garbage, pb2)[0].error.code == pb2.StreamError.BAD_REQUEST
    # A valid certificate of a node that is not this peer's peer: 403 FORBIDDEN.
    with PullClient(peer.port, client_context(certs, "irk-office-1")) as c:
        sid = c.post(pull_request(pb2))
        c.read(5.0, until=lambda: c.streams[sid].ended)
        assert c.streams[sid].headers[":status"] == "403"
        assert c.frames(sid, pb2)[0].error.code == pb2.StreamError.FORBIDDEN
    assert [r.client for r in peer.requests][-1] == "irk-office-1"


def _handshake_then_request(port, ctx, pb2):
    """Under TLS 1.3 the client's handshake may complete before the server refuses its
    certificate: the refusal shows as a failed read. Returns what happened."""
    try:
        c = PullClient(port, ctx)
    except (ssl.SSLError, OSError) as e:
        return f"handshake: {e!r}"
    try:
        sid = c.post(pull_request(pb2))
        c.read(3.0, until=lambda: c.streams[sid].headers is not None)
        return "answered" if c.streams[sid].headers is not None else "no response"
    except (ssl.SSLError, OSError) as e:
        return f"request: {e!r}"
    finally:
        c.close()


def test_tls_requires_a_client_certificate_of_the_federation_ca_and_tls13(pb2, certs, other_ca, fake):
    peer = fake()
    assert _handshake_then_request(peer.port, client_context(certs, None), pb2) != "answered"
    assert _handshake_then_request(peer.port, client_context(other_ca, "irk-main", ca=certs / "ca.pem"), pb2) \
        != "answered"
    tls12 = client_context(certs, "irk-main", tls13=False)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    assert _handshake_then_request(peer.port, tls12, pb2) != "answered"
    deadline = time.monotonic() + 5
    while len(peer.handshake_failures) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(peer.handshake_failures) == 3, peer.handshake_failures
    assert not peer.requests
    # And the right certificate works.
    assert _handshake_then_request(peer.port, client_context(certs, "irk-main"), pb2) == "answered"


def test_stop_ends_streams_with_shutting_down_and_leaves_nothing_running(pb2, certs):
    before = set(threading.enumerate())
    peer = FakePeer(pb2, certs, FAKE, allowed_clients={"irk-main"}).start()
    peer.add_batch([(1, TicketFactory(pb2, node=FAKE).ticket(1))])
    port = peer.port
    try:
        clients = [PullClient(port, client_context(certs, "irk-main")) for _ in range(2)]
        sids = [c.post(pull_request(pb2)) for c in clients]
        for c, sid in zip(clients, sids):
            c.read(3.0, until=lambda: "batch" in kinds(c.frames(sid, pb2)))
        stopper = threading.Thread(target=peer.stop)
        stopper.start()
        for c, sid in zip(clients, sids):
            c.read(5.0, until=lambda: c.streams[sid].ended)
            assert c.streams[sid].ended, kinds(c.frames(sid, pb2))
            last = c.frames(sid, pb2)[-1]
            assert last.WhichOneof("kind") == "error" and last.error.code == pb2.StreamError.SHUTTING_DOWN
            c.read(2.0, until=lambda: c.terminated is not None or c.eof)
            assert c.terminated is not None or c.eof
            c.close()
        stopper.join(10)
        assert not stopper.is_alive()
    finally:
        peer.stop()
    assert not peer.threads()
    leftover = [t for t in set(threading.enumerate()) - before if t.name.startswith("fake-peer")]
    assert not leftover, leftover
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    assert not peer.errors, peer.errors


def test_disconnect_all_drops_connections_and_the_next_pull_resumes(pb2, certs, fake):
    peer = fake()
    f = TicketFactory(pb2, node=FAKE)
    peer.add_batch([(1, f.ticket(1)), (2, f.ticket(2))])
    with PullClient(peer.port, client_context(certs, "irk-main")) as c:
        sid = c.post(pull_request(pb2))
        c.read(3.0, until=lambda: "batch" in kinds(c.frames(sid, pb2)))
        peer.disconnect_all()
        assert c.read(3.0) is False  # EOF, no final frame
        assert kinds(c.frames(sid, pb2))[-1] != "error"
    with PullClient(peer.port, client_context(certs, "irk-main")) as c:
        sid = c.post(pull_request(pb2, peer.store_id, 2))
        c.read(3.0, until=lambda: len(c.frames(sid, pb2)) >= 2)
        assert c.frames(sid, pb2)[0].header.resume_after == 2
    assert peer.connections == 2


# --- each hostile record carries the fault its case names ---------------------------------------

def _fault_checks(pb2):
    import re

    from hostile_cases import FAKE as F, OTHER_ORG, QUIET_38
    from v2_records import INT64_MAX, INT64_MIN

    def reg(d, n):
        return find_register(d, n)

    def value(d, n, cls):
        return cls.FromString(reg(d, n).versions[0].value)

    def dots(r):
        return [(v.dot.node, v.dot.stamp) for v in r.versions]

    def parse_fails(cls, raw):
        try:
            cls.FromString(raw)
        except Exception:
            return True
        return False

    node_id = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")

    def snils_checksum(nine):  # sum of digit × (9 − position) mod 101, 100 → 0
        c = sum(int(x) * (9 - i) for i, x in enumerate(nine)) % 101
        return 0 if c == 100 else c

    return {
        "negative_year": lambda d, sc: value(d, 1, pb2.TicketHeader).number.year == -2026,
        "received_at_int64_min": lambda d, sc: value(d, 1, pb2.TicketHeader).received_at == INT64_MIN,
        "deadline_int64_max": lambda d, sc: value(d, 4, pb2.Progress).deadlines.register_by == INT64_MAX,
        "register_20000_versions": lambda d, sc: (
            len(reg(d, 5).versions) == 20_000 and len(set(dots(reg(d, 5)))) == 20_000
            and not set(dots(reg(d, 5))) & {(F, sc.a.stamp), (F, sc.b.stamp)}
            and [(e.node, e.stamp) for e in reg(d, 5).seen.entries] == [max(dots(reg(d, 5)))]),
        "seen_10001_entries": lambda d, sc: (
            len(reg(d, 4).seen.entries) == 10_001
            and [e.node for e in reg(d, 4).seen.entries] == sorted(e.node for e in reg(d, 4).seen.entries)),
        "assignee_600_bytes": lambda d, sc: len(value(d, 5, pb2.AssigneeValue).operator.encode()) == 600,
        "impossible_causality": lambda d, sc: (
            # hostile: holds a@s+5 only, its seen claims b@s+6, later than anything it holds
            dots(reg(d, 4)) == [(F, reg(d, 1).versions[0].dot.stamp + 5)]
            and {(e.node, e.stamp) for e in reg(d, 4).seen.entries}
            == {(F, reg(d, 1).versions[0].dot.stamp + 5), (QUIET_38, reg(d, 1).versions[0].dot.stamp + 6)}
            # B: holds b@sb+6, whose seen covers a@sb+5: legal
            and dots(reg(sc.b.delta, 4)) == [(QUIET_38, sc.b.stamp + 6)]
            and {(e.node, e.stamp) for e in reg(sc.b.delta, 4).seen.entries}
            == {(F, sc.b.stamp + 5), (QUIET_38, sc.b.stamp + 6)}),
        "statement_15_mib": lambda d, sc: len(value(d, 2, pb2.Statement).text.encode()) == 15 * 1024 * 1024,
        "unknown_record_kind": lambda d, sc: d.kind not in pb2.RecordKind.values(),
        "id_17_bytes": lambda d, sc: len(d.id) == 17 and d.id[:16] == sc.hostile.id,
        "unknown_node_in_dot": lambda d, sc: dots(reg(d, 6)) == [("irk-office-77", sc.hostile_stamp)],
        "stamp_far_in_the_future": lambda d, sc: all(
            stamp_millis(s) - now_ms() > 6 * DAY_MS
            for s in [v.dot.stamp for r in d.registers for v in r.versions] + [c.dot.stamp for c in d.children]),
        "stamp_far_ahead_in_one_register": lambda d, sc: [
            r.number for r in d.registers if stamp_millis(r.versions[0].dot.stamp) - now_ms() > 6 * DAY_MS] == [7]
        and all(abs(stamp_millis(c.dot.stamp) - now_ms()) < 60_000 for c in d.children),
        "same_dot_other_value": lambda d, sc: (
            d.id == sc.a.id and dots(reg(d, 7)) == [(F, sc.a.stamp)]
            and reg(d, 7).versions[0].value != reg(sc.a.delta, 7).versions[0].value and len(d.registers) == 1),
        "unknown_enum_value": lambda d, sc: value(d, 1, pb2.TicketHeader).channel not in pb2.Channel.values(),
        "invalid_utf8": lambda d, sc: parse_fails(pb2.Statement, reg(d, 2).versions[0].value)
        and b"\xff\xfe" in reg(d, 2).versions[0].value,
        "child_same_id_other_content": lambda d, sc: (
            d.id == sc.a.id and not d.registers and len(d.children) == 1 and d.children[0].id == sc.a.history_id
            and d.children[0].value != sc.a.delta.children[0].value),
        "zero_stamp": lambda d, sc: dots(reg(d, 6)) == [(F, 0)] and not reg(d, 6).seen.entries,
        "garbage_value": lambda d, sc: parse_fails(pb2.Progress, reg(d, 4).versions[0].value),
        "node_id_not_a_node_id": lambda d, sc: not node_id.match(reg(d, 8).versions[0].dot.node),
        "dot_twice_in_a_register": lambda d, sc: len(dots(reg(d, 6))) == 2 and len(set(dots(reg(d, 6)))) == 1,
        "unknown_register_number": lambda d, sc: 99 in [r.number for r in d.registers]
        and 99 not in pb2.TicketRegister.values(),
        "origin_in_another_organisation": lambda d, sc: (
            value(d, 1, pb2.TicketHeader).origin_node == OTHER_ORG and value(d, 8, pb2.OwnerValue).node == OTHER_ORG
            and {n for r in d.registers for n, _ in dots(r)} | {c.dot.node for c in d.children} == {F}),
        "fund_write_relayed_by_own_organisation": lambda d, sc: (
            value(d, 1, pb2.TicketHeader).origin_node == F and value(d, 8, pb2.OwnerValue).node == F
            and dots(reg(d, 5)) == [(OTHER_ORG, sc.hostile_stamp)]
            and {n for r in d.registers if r.number != 5 for n, _ in dots(r)} == {F}),
        "note_one_byte_over_budget": lambda d, sc: [
            len(pb2.Note.FromString(c.value).text.encode()) for c in d.children
            if c.collection == pb2.TICKET_COLLECTION_NOTES] == [20_001]
        and [(c.collection, c.id) for c in d.children] == sorted((c.collection, c.id) for c in d.children),
        "snils_wrong_checksum": lambda d, sc: (
            # eleven ASCII digits, a number that carries a checksum, and not its checksum
            re.fullmatch(r"[0-9]{11}", value(d, 10, pb2.CitizenSnils).snils) is not None
            and int(value(d, 10, pb2.CitizenSnils).snils[:9]) > 1_001_998
            and int(value(d, 10, pb2.CitizenSnils).snils[9:]) != snils_checksum(value(d, 10, pb2.CitizenSnils).snils[:9])
            # the only fault: a valid reference, written by the fake peer like the rest
            and re.fullmatch(r"[A-Za-z0-9-]{1,64}", value(d, 3, pb2.CitizenValue).citizen.ref) is not None
            and {n for r in d.registers for n, _ in dots(r)} == {F}),
    }


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_hostile_record_has_the_fault_its_case_names(pb2, case):
    checks = _fault_checks(pb2)
    assert set(checks) == {c.name for c in CASES}
    sc = build_scenario(pb2, case)
    d = pb2.RecordDelta.FromString(sc.hostile.record)
    # The stamp the record's untouched registers carry (the header's), for cases that moved one.
    sc.hostile_stamp = d.registers[0].versions[0].dot.stamp if d.registers and d.registers[0].versions else None
    assert checks[case.name](d, sc), (case.name, str(d)[:2000])
    # A and B are ordinary tickets of the fake peer, distinct from each other and the hostile one.
    assert sc.a.id != sc.b.id and sc.a.number != sc.b.number
    assert sc.a.stamp < sc.b.stamp
    if not sc.hostile.target_a:
        assert sc.hostile.id not in (sc.a.id, sc.b.id)
