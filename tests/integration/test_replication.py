"""Replication between real node processes over loopback with mutual TLS (issue 3,
"What it must show"): three nodes of region 38 (irk-main, irk-office-1, irk-office-2),
and a fund node (sfr-federal) for the admission test.

Every replication link runs through a TCP proxy the test controls (see federation.py:
one topology file per node, so a node listens on its real port and dials its peers
through the proxies). Every node process and proxy is stopped by the `federation`
fixture, even when a test fails. Node logs are in the test's tmp_path and their tails
are printed (shown by pytest on failure).
"""
import shutil
import subprocess
import threading
import time
import urllib.error
from collections import Counter

import pytest

from conftest import EKC, REPO, TICKET_REGISTERS, all_changes, ekc, list_all, run
from tokens import token
from federation import (Federation, identical_everywhere, make_certs, snapshot, ticket_ids, view,
                        wait_until)

REGION_38 = [{"id": "irk-main"}, {"id": "irk-office-1"}, {"id": "irk-office-2"}]
CONVERGE = 20.0  # seconds: generous deadline for convergence after a restart or a heal


@pytest.fixture
def federation(tmp_path):
    """`federation(specs=REGION_38, cert_ids=())` builds, starts and returns a Federation;
    all of its nodes and proxies are stopped at the end of the test, pass or fail."""
    made = []

    def make(specs=REGION_38, cert_ids=()):
        fed = Federation(tmp_path / f"fed{len(made)}", specs, cert_ids)
        made.append(fed)
        fed.start()
        fed.wait_connected()
        return fed

    try:
        yield make
    finally:
        for fed in made:
            print(fed.logs())
            fed.stop()


# --- helpers ---------------------------------------------------------------------------------

def try_create(node, i: int):
    """POST /v1/tickets; the ticket when acknowledged (201), None when the node did not
    answer (killed, or not yet listening)."""
    body = {"channel": "phone", "topic": "child-benefits", "subject": f"Поток {i}",
            "statement": f"Обращение номер {i} из потока"}
    try:
        status, _, t = node.request("POST", "/v1/tickets", body, headers=node.auth("op-stream"))
    except (urllib.error.URLError, ConnectionError, OSError, TimeoutError):
        return None
    if status != 201:
        return None
    return t


def create_stream(node, seconds: float, threads: int = 4, at=None):
    """`threads` clients create tickets on `node` for `seconds`; `at` is (delay, action):
    the action runs on the calling thread `delay` seconds in. Returns the acknowledged
    tickets and how many attempts got no acknowledgement."""
    acked, lock = [], threading.Lock()
    failed = Counter()
    stop_at = time.monotonic() + seconds

    def client(k):
        i = 0
        while time.monotonic() < stop_at:
            i += 1
            t = try_create(node, k * 1_000_000 + i)
            with lock:
                if t is None:
                    failed["unacknowledged"] += 1
                else:
                    acked.append(t)
            if t is None:
                time.sleep(0.02)

    workers = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(threads)]
    for w in workers:
        w.start()
    if at:
        delay, action = at
        time.sleep(delay)
        action()
    for w in workers:
        w.join(seconds + 30)
    return acked, failed["unacknowledged"]


# (TICKET_REGISTERS: conftest)


def assert_feed_once_each(node, expected_ids):
    """The node's change feed holds every register of every ticket exactly once (at
    its latest change), for those tickets and no others; sequences strictly increase;
    no readable number names two tickets."""
    changes, last = all_changes(node)
    registers = {}
    for c in changes:
        regs = registers.setdefault(c["id"], Counter())
        regs.update(c["registers"])
    twice = {t: [r for r, n in regs.items() if n > 1] for t, regs in registers.items() if any(n > 1 for n in regs.values())}
    assert not twice, f"{node.node_id}: registers listed more than once in /v1/changes: {twice}"
    assert set(registers) == set(expected_ids), \
        f"{node.node_id}: feed misses {set(expected_ids) - set(registers)}, extra {set(registers) - set(expected_ids)}"
    missing = {t: TICKET_REGISTERS - set(regs) for t, regs in registers.items() if set(regs) != TICKET_REGISTERS}
    assert not missing, f"{node.node_id}: registers absent from the feed: {missing}"
    seqs = [c["seq"] for c in changes]
    assert seqs == sorted(set(seqs)), f"{node.node_id}: feed sequences not strictly increasing"
    numbers = {}
    for c in changes:
        numbers.setdefault(c["number"], set()).add(c["id"])
    assert all(len(v) == 1 for v in numbers.values()), \
        f"{node.node_id}: readable numbers issued twice: {[k for k, v in numbers.items() if len(v) > 1]}"


def views_by_id(node):
    """Every ticket of a node as {id: view without `version`}."""
    from conftest import list_all
    out = {}
    for t in list_all(node):
        t = dict(t)
        t.pop("version", None)
        out[t["id"]] = t
    return out


def assert_same_records(fed, timeout=10.0):
    """Every node lists the same tickets with the same views (without `version`)."""
    nodes = fed.all()

    def same():
        views = [views_by_id(n) for n in nodes]
        return all(v == views[0] for v in views[1:])
    wait_until(same, timeout, "identical ticket views on every node", interval=0.2)


def converge_on_ids(fed, expected=None, timeout=CONVERGE):
    """Waits until every node holds the same set of ticket ids (and, when given, exactly
    `expected`); returns that set."""
    nodes = fed.all()

    def same():
        sets = [ticket_ids(n) for n in nodes]
        if any(s != sets[0] for s in sets[1:]):
            return False
        if expected is not None and sets[0] != expected:
            return False
        return sets[0]
    try:
        return wait_until(same, timeout, "every node holds the same tickets", interval=0.2)
    except AssertionError:
        detail = {n.node_id: len(ticket_ids(n)) for n in nodes}
        if expected is not None:
            detail.update({f"{n.node_id} missing": sorted(expected - ticket_ids(n))[:5] for n in nodes})
        raise AssertionError(f"no convergence within {timeout} s: {detail}; "
                             f"replication: {[n.replication() for n in nodes]}")


def ekc_health(fed):
    return ekc("cluster", "health", "--config", fed.cluster_file, timeout=30)


# --- 1. a ticket appears everywhere within a second ----------------------------------------------

def test_ticket_created_on_one_node_appears_on_the_others_within_a_second(federation):
    fed = federation()
    for origin in ("irk-main", "irk-office-2"):
        src = fed[origin]
        others = [n for n in fed.all() if n is not src]
        t = src.create(subject=f"Создано на {origin}")
        acked = time.monotonic()
        arrived = {}

        def everywhere():
            for n in others:
                if n.node_id not in arrived and n.ticket(t["id"]) is not None:
                    arrived[n.node_id] = time.monotonic() - acked
            return len(arrived) == len(others)
        wait_until(everywhere, 5.0, f"ticket from {origin} on {[n.node_id for n in others]}", interval=0.01)
        assert max(arrived.values()) <= 1.0, f"replication of a create took {arrived} s (goal: within 1 s)"
        # Found by number too, and identical (without the local `version`) on all three.
        for n in others:
            assert n.ticket(t["number"])["id"] == t["id"]
        base = view(src, t["id"])
        wait_until(lambda: all(view(n, t["id"]) == base for n in others), 2.0,
                   f"{origin}'s ticket identical everywhere")

    # Edits, a note and the history replicate, and all three hold the same record.
    t = fed["irk-office-1"].create(subject="Правки и заметки")
    o1 = fed["irk-office-1"]
    o1.patch(t["id"], {"status": "IN_WORK", "assignee": "op-petrova"}, actor="op-sidorov")
    o1.add_note(t["id"], "Позвонили заявителю, ждём документы", actor="op-sidorov")
    o1.patch(t["id"], {"priority": "high"}, actor="op-sidorov")
    snap = wait_until(lambda: identical_everywhere(fed.all(), t["id"]), 5.0,
                      "view, notes and history identical on all three")
    v, notes, history = snap
    assert (v["status"], v["assignee"], v["priority"]) == ("IN_WORK", "op-petrova", "high")
    assert [n["text"] for n in notes] == ["Позвонили заявителю, ждём документы"]
    assert len(history) >= 3, history
    for n in fed.all():
        assert n.get(f"/v1/tickets/{t['id']}")["version"] >= 1

    h = ekc_health(fed)
    assert h.returncode == 0, h.stdout + h.stderr
    assert h.stdout.count("connected") == 6, h.stdout

    # Health and metrics show the certificate's expiry and every link's lag.
    for n in fed.all():
        health = n.get("/v1/health")
        assert 300 < health["certificate"]["daysLeft"] < 4000, health
        status, _, metrics = n.request("GET", "/metrics")
        text = metrics.decode() if isinstance(metrics, bytes) else str(metrics)
        assert status == 200 and "ekc_tls_certificate_expiry_seconds" in text, text[:500]
        assert text.count("ekc_replication_lag_records{") >= 2 and "ekc_replication_connected{" in text, text[:2000]
        # Each link knows the peer's clock from the heartbeat sent with the stream
        # header; all three share this machine's clock, so the offset is small.
        for link in n.replication()["peers"]:
            assert isinstance(link["clockOffsetMillis"], int) and abs(link["clockOffsetMillis"]) < 2000, link
            assert link["resync"] is None, link
        assert text.count("ekc_replication_peer_clock_offset_seconds{") >= 2, text[:2000]


def test_graceful_restart_of_a_node_resends_nothing(federation):
    """Issue 3: "reconnecting with nothing new costs one round trip and no rescan" —
    also when the node pulled from restarted: it remembers what it had served."""
    fed = federation()
    main = fed["irk-main"]
    # irk-main does not pull here, so no merge of its peers' echo commits on it after
    # its last send: what it has served must survive the restart by itself.
    for y in ("irk-office-1", "irk-office-2"):
        fed.proxies[("irk-main", y)].cut()
    for i in range(20):
        main.create(subject=f"до перезапуска {i}")
    ids = {t["id"] for t in list_all(main)}
    for x in ("irk-office-1", "irk-office-2"):
        wait_until(lambda: ids <= ticket_ids(fed[x]), 5.0, f"{x} has irk-main's tickets")
    before = {x: fed[x].link("irk-main")["recordsReceived"] for x in ("irk-office-1", "irk-office-2")}
    main.stop()
    assert main.proc.returncode == 0, main.tail()
    for x in ("irk-office-1", "irk-office-2"):
        wait_until(lambda: not fed[x].link("irk-main")["connected"], 10.0, f"{x} saw irk-main go")
    main.start()
    for x in ("irk-office-1", "irk-office-2"):
        wait_until(lambda: fed[x].link("irk-main")["connected"], 10.0, f"{x} reconnected to irk-main")
    time.sleep(0.5)
    for x in ("irk-office-1", "irk-office-2"):
        link = fed[x].link("irk-main")
        assert link["recordsReceived"] == before[x], (x, link)
        assert link["resync"] is None, (x, link)


# --- 2. kill -9 in the middle of a stream ---------------------------------------------------------

def test_kill9_of_the_receiving_node_during_a_stream_then_convergence(federation):
    fed = federation()
    src, victim = fed["irk-main"], fed["irk-office-1"]
    health_while_down = {}

    def kill_and_restart():
        victim.kill9()
        h = ekc_health(fed)  # a node is down: exit status 2
        health_while_down["rc"] = h.returncode
        health_while_down["out"] = h.stdout + h.stderr
        victim.start()

    acked, unacked = create_stream(src, seconds=2.0, threads=4, at=(1.0, kill_and_restart))
    print(f"stream on irk-main: {len(acked)} acknowledged, {unacked} not; health while down: {health_while_down}")
    assert unacked == 0, "irk-main itself was not touched: every create must be acknowledged"
    assert len(acked) >= 20, f"the stream made only {len(acked)} tickets"
    assert health_while_down["rc"] == 2, health_while_down["out"]

    expected = {t["id"] for t in acked}
    assert len(expected) == len(acked)
    converge_on_ids(fed, expected)
    for n in fed.all():
        assert_feed_once_each(n, expected)
    # Same records everywhere: every view, and notes and history of a few.
    assert_same_records(fed)
    for t in acked[:3] + acked[-3:]:
        wait_until(lambda: identical_everywhere(fed.all(), t["id"]), 5.0, f"{t['number']} identical")
    fed.wait_connected()
    assert ekc_health(fed).returncode == 0


def test_kill9_of_the_node_being_written_to_then_convergence(federation):
    fed = federation()
    victim = fed["irk-office-2"]
    restarted = threading.Event()

    def kill_and_restart():
        victim.kill9()
        victim.start()
        restarted.set()

    acked, unacked = create_stream(victim, seconds=2.0, threads=4, at=(1.0, kill_and_restart))
    assert restarted.is_set()
    print(f"stream on irk-office-2: {len(acked)} acknowledged, {unacked} attempts not acknowledged")
    assert len(acked) >= 20, f"the stream made only {len(acked)} acknowledged tickets"
    acked_ids = {t["id"] for t in acked}

    ids = converge_on_ids(fed)
    lost = acked_ids - ids
    assert not lost, f"acknowledged creates lost after kill -9: {sorted(lost)[:10]} ({len(lost)})"
    # Only creates in flight at the kill may exist unacknowledged (at most one per client).
    assert len(ids - acked_ids) <= 4, f"{len(ids - acked_ids)} tickets nobody was told about"
    for n in fed.all():
        assert_feed_once_each(n, ids)
    assert_same_records(fed)
    for t in acked[:2] + acked[-2:]:
        wait_until(lambda: identical_everywhere(fed.all(), t["id"]), 5.0, f"{t['number']} identical")


# --- 3. partition, concurrent edits, conflicts, resolution -----------------------------------------

def test_partition_concurrent_edits_conflicts_and_resolution(federation):
    fed = federation()
    main, o1, o2 = fed["irk-main"], fed["irk-office-1"], fed["irk-office-2"]
    t = main.create(subject="Правка с обеих сторон разрыва")
    tid = t["id"]
    wait_until(lambda: all(n.ticket(tid) for n in fed.all()), 5.0, "ticket everywhere before the cut")

    fed.cut("irk-office-2")

    def partitioned():
        return (not any(p["connected"] for p in o2.replication()["peers"])
                and not main.link("irk-office-2")["connected"] and not o1.link("irk-office-2")["connected"])
    wait_until(partitioned, 10.0, "irk-office-2 cut off in both directions")

    main.patch(tid, {"status": "IN_WORK", "assignee": "op-main"}, actor="op-ivanova")
    main.add_note(tid, "Заметка центра", actor="op-ivanova")
    o2.patch(tid, {"status": "DEFERRED", "assignee": "op-office2"}, actor="op-office2")
    o2.add_note(tid, "Заметка офиса 2", actor="op-office2")

    # The partition holds: irk-office-1 gets irk-main's edit, irk-office-2 does not, and
    # irk-office-2's edit reaches nobody.
    wait_until(lambda: o1.ticket(tid)["assignee"] == "op-main", 5.0, "main's edit on irk-office-1")
    time.sleep(0.3)
    assert o2.ticket(tid)["assignee"] == "op-office2"
    assert main.ticket(tid)["assignee"] == "op-main" and o1.ticket(tid)["assignee"] == "op-main"
    assert [n["text"] for n in o2.get(f"/v1/tickets/{tid}/notes")["items"]] == ["Заметка офиса 2"]

    fed.heal("irk-office-2")
    snap = wait_until(lambda: identical_everywhere(fed.all(), tid), CONVERGE,
                      "identical records on all three after the heal", interval=0.1)
    v, notes, history = snap
    assert sorted(n["text"] for n in notes) == ["Заметка офиса 2", "Заметка центра"]
    assert {v["status"], v["assignee"]} <= {"IN_WORK", "DEFERRED", "op-main", "op-office2"}

    def same_conflicts():
        lists = [sorted(n.conflicts(), key=lambda c: c["id"]) for n in fed.all()]
        mine = [[c for c in l if c["ticketId"] == tid] for l in lists]
        fields = {c["field"] for c in mine[0]}
        if not {"progress", "assignee"} <= fields:
            return False
        return mine[0] if all(m == mine[0] for m in mine[1:]) else False
    conflicts = wait_until(same_conflicts, CONVERGE, "the same conflicts (progress, assignee) on every node",
                           interval=0.1)
    by_field = {c["field"]: c for c in conflicts}
    assert sorted(by_field) == ["assignee", "progress"] and len(conflicts) == 2, conflicts
    # The losing values are the ones not shown in the ticket; winner and loser are the
    # two sides' writes.
    a = by_field["assignee"]
    assert {a["winner"]["value"], a["loser"]["value"]} == {"op-main", "op-office2"}
    assert {a["winner"]["node"], a["loser"]["node"]} == {"irk-main", "irk-office-2"}
    assert a["winner"]["value"] == v["assignee"]
    p = by_field["progress"]
    assert {p["winner"]["node"], p["loser"]["node"]} == {"irk-main", "irk-office-2"}
    assert v["status"] in str(p["winner"]["value"])
    loser_status = "DEFERRED" if v["status"] == "IN_WORK" else "IN_WORK"
    assert loser_status in str(p["loser"]["value"]), p
    # Each side shows every field of its register: the status and the deadline extension.
    assert p["winner"]["fields"] == {"status": v["status"], "extensionDays": None}, p
    assert p["loser"]["fields"] == {"status": loser_status, "extensionDays": None}, p
    assert a["loser"]["fields"] == {"assignee": a["loser"]["value"]}, a

    # Resolve the assignee conflict on a third node, keeping the losing value.
    keep = a["loser"]["value"]
    status, _, resolved = o1.request("POST", f"/v1/conflicts/{a['id']}/resolve", {"keep": "loser"},
                                     headers=o1.auth("op-senior"))
    assert status == 200, resolved
    assert resolved["assignee"] == keep

    def resolved_everywhere():
        for n in fed.all():
            ids = {c["id"] for c in n.conflicts()}
            if a["id"] in ids or p["id"] not in ids or n.ticket(tid)["assignee"] != keep:
                return False
        return identical_everywhere(fed.all(), tid)
    wait_until(resolved_everywhere, CONVERGE, "the resolved conflict gone everywhere, the choice on all three")
    # The other conflict is still listed, identically, everywhere.
    lists = [[c for c in n.conflicts() if c["ticketId"] == tid] for n in fed.all()]
    assert all(l == lists[0] for l in lists) and [c["field"] for c in lists[0]] == ["progress"], lists

    # Keeping the winner also clears a conflict everywhere: resolved on irk-office-2 with the CLI.
    listed = ekc("conflicts", "list", "--node", o2.url, "--json")
    assert listed.returncode == 0, listed.stderr
    import json as _json
    assert p["id"] in [c["id"] for c in _json.loads(listed.stdout)["items"]]
    table = ekc("conflicts", "list", "--node", o2.url)
    assert "progress" in table.stdout and p["id"] in table.stdout, table.stdout
    done = ekc("conflicts", "resolve", p["id"], "--keep", "winner", "--node", o2.url, "--json",
               env={"EKC_TOKEN": token("38", "op-senior")})
    assert done.returncode == 0, done.stderr
    resolved = _json.loads(done.stdout)
    assert resolved["status"] == v["status"]
    bad = ekc("conflicts", "resolve", p["id"], "--keep", "both", "--node", o2.url)
    assert bad.returncode != 0 and "winner or loser" in (bad.stdout + bad.stderr)

    def all_clear():
        if any(c["ticketId"] == tid for n in fed.all() for c in n.conflicts()):
            return False
        return identical_everywhere(fed.all(), tid)
    final, _, _ = wait_until(all_clear, CONVERGE, "no conflict left on any node")
    assert (final["status"], final["assignee"]) == (v["status"], keep)
    for n in fed.all():
        assert_feed_once_each(n, {tid})


# --- 4. mutual TLS and an independent decoder of the stream ----------------------------------------

def complete_frames(pb, data: bytes):
    """Every complete length-delimited Frame of a (possibly cut) stream, parsed by Python."""
    frames, pos = [], 0
    while pos < len(data):
        length = shift = 0
        p = pos
        while True:
            if p >= len(data):
                return frames  # truncated varint
            b = data[p]
            length |= (b & 0x7F) << shift
            p += 1
            if not b & 0x80:
                break
            shift += 7
        if p + length > len(data):
            return frames  # the capture ended inside a frame
        f = pb.Frame()
        f.ParseFromString(data[p:p + length])
        frames.append(f)
        pos = p + length
    return frames


CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid_bytes(s: str) -> bytes:
    n = 0
    for ch in s.upper():
        n = n * 32 + CROCKFORD.index(ch)
    return n.to_bytes(16, "big")


def curl_pull(port: int, req_file, out_file, cert=None, key=None):
    args = ["curl", "--http2", "-sk", "--max-time", "3", f"https://127.0.0.1:{port}/replication/v2/pull",
            "-X", "POST", "-H", "content-type: application/x-protobuf", "--data-binary", f"@{req_file}",
            "-o", str(out_file), "-w", "%{http_code}"]
    if cert:
        args += ["--cert", str(cert), "--key", str(key)]
    r = subprocess.run(args, capture_output=True, text=True, timeout=15)
    body = out_file.read_bytes() if out_file.exists() else b""
    return r.returncode, r.stdout.strip(), body


def test_mutual_tls_and_python_decodes_the_live_stream(federation, pb2, tmp_path):
    fed = federation(cert_ids=("irk-stranger",))
    main = fed["irk-main"]
    created = [main.create(subject=f"Для декодера {i}") for i in range(3)]
    req = tmp_path / "pull.req"
    req.write_bytes(pb2.PullRequest(protocol_version=2).SerializeToString())
    other_ca = make_certs(tmp_path / "other-ca", "irk-office-1")
    port = main.repl_port

    # No client certificate: the TLS 1.3 server rejects it after the handshake: no response.
    rc, code, body = curl_pull(port, req, tmp_path / "none.out")
    print(f"no client certificate: curl exit {rc}, HTTP {code}, {len(body)} bytes")
    assert code != "200" and rc != 0 and not body, (rc, code, body)
    # A certificate for a real peer's id, but from another CA: nothing either.
    rc, code, body = curl_pull(port, req, tmp_path / "other.out", other_ca / "irk-office-1.pem",
                               other_ca / "irk-office-1.key")
    print(f"certificate from another CA: curl exit {rc}, HTTP {code}, {len(body)} bytes")
    assert code != "200" and rc != 0 and not body, (rc, code, body)
    # A valid certificate of the federation CA, but not a peer: 403 and a FORBIDDEN frame.
    rc, code, body = curl_pull(port, req, tmp_path / "stranger.out", fed.certs / "irk-stranger.pem",
                               fed.certs / "irk-stranger.key")
    assert code == "403", (rc, code, body)
    frames = complete_frames(pb2, body)
    assert [f.WhichOneof("kind") for f in frames] == ["error"], frames
    assert frames[0].error.code == pb2.StreamError.FORBIDDEN

    # A peer's certificate: 200, a header naming irk-main, then batches with the tickets;
    # the stream stays open, so curl stops at --max-time (exit 28).
    rc, code, body = curl_pull(port, req, tmp_path / "peer.out", fed.certs / "irk-office-1.pem",
                               fed.certs / "irk-office-1.key")
    assert code == "200" and rc in (0, 28), (rc, code, body[:200])
    frames = complete_frames(pb2, body)
    assert frames and frames[0].WhichOneof("kind") == "header", frames[:1]
    h = frames[0].header
    rep = main.replication()
    assert h.protocol_version == 2 and h.node == "irk-main"
    assert h.store_id.hex() == rep["storeId"]
    assert h.resume_after == 0 and not h.checkpoint_reset and h.last_sequence >= 3
    kinds = [f.WhichOneof("kind") for f in frames[1:]]
    assert "batch" in kinds and set(kinds) <= {"batch", "heartbeat"}, kinds
    seen, through = {}, 0
    for f in frames[1:]:
        if f.WhichOneof("kind") != "batch":
            continue
        assert f.batch.through_sequence > through
        for c in f.batch.changes:
            assert through < c.sequence <= f.batch.through_sequence
            assert c.record.kind == pb2.RECORD_KIND_TICKET
            regs = {r.number: r for r in c.record.registers}
            seen.setdefault(bytes(c.record.id), {}).update(regs)
        through = f.batch.through_sequence
    assert through == h.last_sequence
    for t in created:
        regs = seen.get(ulid_bytes(t["id"]))
        assert regs is not None, f"{t['id']} not in the stream"
        # Register values are the ticket kind's messages (ticket.proto), decoded independently.
        hdr = pb2.TicketHeader.FromString(regs[pb2.TICKET_REGISTER_HEADER].versions[0].value)
        assert f"{hdr.number.region}-{hdr.number.year}-{hdr.number.sequence:06d}" == t["number"]
        assert hdr.origin_node == "irk-main"
        stmt = pb2.Statement.FromString(regs[pb2.TICKET_REGISTER_STATEMENT].versions[0].value)
        assert stmt.subject == t["subject"]


# --- 5. a replicated write its sender may not speak for ---------------------------------------------

def test_a_partner_may_not_edit_what_it_does_not_handle_and_its_notes_reach_the_region(federation, tmp_path):
    """A fund holds a region's ticket only through a transfer. Its node refuses its own
    operators' edits of what the region handles (409 not_owner: a write every region
    node would refuse), while its shared note, which a partner may add, reaches every
    node of the region through the centre."""
    fed = federation([
        {"id": "irk-main", "peers": ["irk-office-1", "irk-office-2", "sfr-federal"]},
        {"id": "irk-office-1"},
        {"id": "irk-office-2"},
        {"id": "sfr-federal", "region": "sfr", "peers": ["irk-main"]},
    ])
    main, sfr = fed["irk-main"], fed["sfr-federal"]
    t = main.create(subject="Региональное обращение")
    main.patch(t["id"], {"status": "IN_WORK", "assignee": "op-main"}, actor="op-ivanova")
    status, _, tr = main.request("POST", f"/v1/tickets/{t['id']}/transfers",
                                 {"to": "sfr", "kind": "INFO_REQUEST", "reason": {"code": "pension-info", "text": "Нужна справка"},
                                  "scope": ["ref"]}, headers=main.auth("op-ivanova"))
    assert status == 201, tr
    wait_until(lambda: (sfr.ticket(t["id"]) or {}).get("assignee") == "op-main", 10.0,
               "sfr-federal received the transferred ticket from irk-main")
    before = sfr.request("GET", f"/v1/tickets/{t['id']}")[2]

    status, _, body = sfr.request("PATCH", f"/v1/tickets/{t['id']}", {"assignee": "intruder"},
                                  headers=sfr.auth("op-sfr"))
    assert status == 409 and body["error"]["code"] == "not_owner", body
    assert "38" in body["error"]["message"], body
    assert sfr.request("GET", f"/v1/tickets/{t['id']}")[2] == before

    n = sfr.add_note(t["id"], "Справка подготовлена", actor="op-sfr", visibility="shared")
    for node in (main, fed["irk-office-1"], fed["irk-office-2"]):
        wait_until(lambda: any(x["id"] == n["id"] for x in node.get(f"/v1/tickets/{t['id']}/notes")["items"]), 10.0,
                   f"{node.node_id} received the fund's note")
        assert node.ticket(t["id"])["assignee"] == "op-main"
    for node in (main, sfr):
        assert node.link("sfr-federal" if node is main else "irk-main")["rejected"]["records"] == 0
    # The region's nodes still agree with each other.
    wait_until(lambda: identical_everywhere([main, fed["irk-office-1"], fed["irk-office-2"]], t["id"]), 5.0,
               "region 38 identical")

    # A node of the topology that is not a peer of irk-office-1 is refused there (403).
    req = tmp_path / "pull.req"
    req.write_bytes(b"\x08\x02")  # PullRequest{protocol_version: 2}
    rc, code, body = curl_pull(fed["irk-office-1"].repl_port, req, tmp_path / "sfr.out",
                               fed.certs / "sfr-federal.pem", fed.certs / "sfr-federal.key")
    assert code == "403", (rc, code, body)


# --- 6. a peer restored from a file-level backup ------------------------------------------------------

def test_peer_restored_from_a_backup_is_not_silently_skipped(federation):
    """Issue 3: "a restored or recreated peer is detected, and catch-up resumes correctly
    rather than silently skipping". proto/README.md §5: a store MUST take a new identity
    when it is restored from a backup. Here irk-office-2's data directory is restored from
    a copy taken while it was stopped (there is no `ekc` backup/restore command, so a file
    copy is the only backup there is); while cut off it writes past the sequence its peers
    had checkpointed, then the link heals."""
    fed = federation()
    o2 = fed["irk-office-2"]
    for i in range(3):
        o2.create(subject=f"до копии {i}")
    converge_on_ids(fed, timeout=5)
    o2.stop()
    backup = fed.root / "backup-irk-office-2"
    shutil.copytree(o2.data_dir, backup)
    o2.start()
    for i in range(5):
        o2.create(subject=f"после копии {i}")
    converge_on_ids(fed, timeout=5)
    seq_before = o2.replication()["lastSequence"]
    # The premise: both peers have checkpointed past the backup through their own links
    # to irk-office-2. Converging on ids is not enough, since a peer may have received the
    # tickets relayed through the other and still be reconnecting to irk-office-2.
    for x in ("irk-main", "irk-office-1"):
        deadline = time.time() + 40
        while fed[x].link("irk-office-2")["appliedSequence"] < seq_before and time.time() < deadline:
            time.sleep(0.1)
        assert fed[x].link("irk-office-2")["appliedSequence"] == seq_before, fed[x].link("irk-office-2")

    fed.cut("irk-office-2")
    o2.stop()
    shutil.rmtree(o2.data_dir)
    shutil.copytree(backup, o2.data_dir)
    o2.start()
    assert o2.replication()["lastSequence"] < seq_before  # restored: the feed went back
    new = [o2.create(subject=f"после восстановления {i}") for i in range(10)]
    assert o2.replication()["lastSequence"] > seq_before  # ...and now runs past the peers' checkpoints
    fed.heal("irk-office-2")

    new_ids = {t["id"] for t in new}
    try:
        converge_on_ids(fed, timeout=10)
    finally:
        missing = {n.node_id: sorted(t["subject"] for t in new if t["id"] not in ticket_ids(n)) for n in fed.all()}
        print("created after the restore, missing per node:", missing)
        print("irk-office-2 store id:", o2.replication()["storeId"], "links to it:",
              [fed[x].link("irk-office-2") for x in ("irk-main", "irk-office-1")])
    for n in fed.all():
        assert new_ids <= ticket_ids(n), n.node_id
    # Both peers say why they were sent changes again: irk-office-2 remembered serving
    # them less than they had applied. A peer may have received the new tickets through
    # the other before its own link reconnects (its backoff after the cut is up to 30 s),
    # so each link is given until then.
    for x in ("irk-main", "irk-office-1"):
        deadline = time.time() + 40
        while fed[x].link("irk-office-2")["resync"] is None and time.time() < deadline:
            time.sleep(0.2)
        resync = fed[x].link("irk-office-2")["resync"]
        assert resync is not None and resync["reason"] == "peerRewound", resync
        assert resync["resumedAfter"] < resync["checkpointSequence"], resync
    # The restored node reissued the numbers of the five tickets it had lost; every
    # node that received both tickets of such a number says so.
    reissued = {t["number"] for t in new} & {t["number"] for t in list_all(fed["irk-main"]) if t["subject"].startswith("после копии")}
    assert len(reissued) == 5, reissued
    for n in fed.all():
        seen = {x for link in n.replication()["peers"] for x in link["duplicateNumbers"]}
        assert reissued <= seen, (n.node_id, seen)


# --- 7. long tickets, and a peer that stops reading ------------------------------------------------

def metric(node, name: str) -> float:
    _, _, body = node.request("GET", "/metrics")
    text = body.decode() if isinstance(body, bytes) else str(body)
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ") or line.startswith(name + "{"))


def test_long_tickets_replicate_and_a_peer_that_stops_reading_holds_the_sender_back(federation, pb2):
    """Issue 3: "a slow peer never makes the sender buffer without limit; use HTTP/2 flow
    control and backpressure". 450 tickets with the longest statement allowed (40 KB of
    UTF-8 each) make an 18 MB feed: sent as 512-ticket batches they would exceed the 16 MiB
    frame limit; frames close at about 1 MiB (proto/README.md) and the feed arrives. Then
    a peer (Python h2, mutual TLS) that opens the default 64 KiB windows and never
    acknowledges anything receives no more than that, and the sender stops producing:
    about one frame, not the feed."""
    import socket
    import ssl

    import h2.config
    import h2.connection
    import h2.events

    fed = federation()
    main = fed["irk-main"]
    long_text = "Ж" * 20_000
    fed.cut("irk-office-2")  # it will catch up on all of them at once
    created = [main.create(subject=f"Длинное обращение {i}", statement=long_text) for i in range(450)]
    fed.heal("irk-office-2")
    converge_on_ids(fed, timeout=30)
    # Every stream caught up (irk-office-2 pulls the same tickets from both peers, each
    # on its own checkpoint), so that irk-main's sender is idle before we measure it.
    last = {n.node_id: n.replication()["lastSequence"] for n in fed.all()}
    wait_until(lambda: all(link["appliedSequence"] >= last[link["node"]]
                           for n in fed.all() for link in n.replication()["peers"]), 30.0, "every link caught up")

    def sender_idle():
        before = metric(main, "ekc_replication_bytes_sent_total")
        time.sleep(0.5)
        return metric(main, "ekc_replication_bytes_sent_total") == before
    wait_until(sender_idle, 15.0, "irk-main's sender idle", interval=0.1)

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(fed.certs / "ca.pem"))
    ctx.load_cert_chain(str(fed.certs / "irk-office-1.pem"), str(fed.certs / "irk-office-1.key"))
    ctx.check_hostname = False
    ctx.set_alpn_protocols(["h2"])
    sent_before = metric(main, "ekc_replication_bytes_sent_total")
    with socket.create_connection(("127.0.0.1", main.repl_port), timeout=5) as raw, ctx.wrap_socket(raw) as tls:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "POST"), (":path", "/replication/v2/pull"), (":scheme", "https"),
                                (":authority", "irk-main"), ("content-type", "application/x-protobuf")])
        conn.send_data(sid, pb2.PullRequest(protocol_version=2).SerializeToString(), end_stream=True)
        tls.sendall(conn.data_to_send())
        received = bytearray()
        unacknowledged = [0]

        def read(seconds: float, acknowledge: bool, until=lambda: False):
            deadline = time.monotonic() + seconds
            tls.settimeout(0.2)
            while time.monotonic() < deadline and not until():
                try:
                    data = tls.recv(1 << 16)
                except socket.timeout:
                    continue
                if not data:
                    break
                for ev in conn.receive_data(data):  # h2 itself refuses data beyond the window
                    if isinstance(ev, h2.events.DataReceived):
                        received.extend(ev.data)
                        if acknowledge:
                            conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                        else:
                            unacknowledged[0] += ev.flow_controlled_length
                out = conn.data_to_send()
                if out:
                    tls.sendall(out)

        read(3.0, acknowledge=False)
        stalled = len(received)
        produced = metric(main, "ekc_replication_bytes_sent_total") - sent_before
        print(f"stalled peer: {stalled} bytes received, {produced:.0f} bytes produced by the sender")
        assert 0 < stalled <= 65_535, stalled
        # The sender wrote about one frame into the stream and stopped: not the 16 MB feed.
        assert produced < 3 * (1 << 20), produced

        # Reading again, with acknowledgements: the whole feed arrives, in frames under the limit.
        conn.acknowledge_received_data(unacknowledged[0], sid)
        tls.sendall(conn.data_to_send())
        want = {ulid_bytes(t["id"]) for t in created}

        def all_there():
            got = {bytes(c.record.id) for f in complete_frames(pb2, bytes(received))
                   if f.WhichOneof("kind") == "batch" for c in f.batch.changes}
            return want <= got
        read(60.0, acknowledge=True, until=lambda: len(received) > 18_000_000 and all_there())
        frames = complete_frames(pb2, bytes(received))
        assert all_there(), f"{len(received)} bytes, {len(frames)} frames"
        sizes = [f.ByteSize() for f in frames if f.WhichOneof("kind") == "batch"]
        print(f"{len(sizes)} batch frames, largest {max(sizes)} bytes")
        assert max(sizes) < 2 * (1 << 20), max(sizes)
