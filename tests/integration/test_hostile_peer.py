"""A hostile peer cannot hurt a node (protocol v2): each bad record is refused alone,
recorded with its reason, and the link moves on past it.

irk-main (the node under test, region 38) pulls from two peers: irk-office-1, a real
node, and irk-office-9, a FakePeer (fake_peer.py) with a valid federation certificate.
The fake peer serves ONE ChangeBatch: [valid ticket A, the hostile record, valid ticket
B] at sequences 1, 2, 3 (through_sequence 3), then heartbeats. hostile_cases.py builds
each hostile record (one fault each) and names the reason the node must give.

For every case:
  * irk-main is alive and /v1/health answers 200;
  * A and B (around the hostile record) are on irk-main, and reach irk-office-1;
  * a ticket created on irk-office-1 after the batch was applied is on irk-main within 1 s;
  * the hostile record's ticket is not (404, not by number, not listed, not in the change
    feed, not on irk-office-1); a hostile delta of A left A as it was;
  * /v1/replication shows the refusal on the irk-office-9 link ("rejected": records,
    byReason, recent[] with at, sequence, kind, id, reason, detail) and /metrics has
    ekc_replication_rejected_records_total{peer="irk-office-9",reason=REASON} >= 1;
  * that link's appliedSequence reaches 3 (no stall, no retry of the batch);
  * irk-main's own clock was not dragged along (a write of its own is stamped now);
  * after a restart (SIGTERM, start) all of this still holds, and the fake peer is asked
    from the checkpoint (its store id, sequence 3), never again for sequences <= 3.

Every wait is a bounded poll; every node process and the fake peer are stopped by the
fixture, pass or fail.
"""
import json
import re
import time

import pytest

from conftest import all_changes, list_all
from fake_peer import FakePeer
from federation import Federation, make_certs, wait_until
from hostile_cases import CASES, FAKE, OTHER_ORG, QUIET_38, build_scenario
from v2_records import BuiltTicket, now_ms, ulid_str

MAIN, OFFICE = "irk-main", "irk-office-1"
SPECS = [{"id": MAIN, "peers": [OFFICE]}, {"id": OFFICE, "peers": [MAIN]}]
OUTSIDERS = [  # in every topology file, never started by the federation
    {"id": FAKE, "region": "38", "numberSeries": 9, "peers": [MAIN]},  # the fake peer; its address is set below
    {"id": QUIET_38, "region": "38", "numberSeries": 8, "peers": []},
    {"id": OTHER_ORG, "region": "sfr", "numberSeries": 0, "peers": []},
]
APPLY = 30.0      # seconds for irk-main to apply the fake peer's batch (a 15 MiB frame on a debug build)
CONVERGE = 10.0


class FederationWithOutsiders(Federation):
    """A Federation whose topology files also list nodes it does not start (`outsiders`:
    {"id", "region", "numberSeries", "peers", "replication"}), with `extra_peers` {real node:
    [outsider ids]} added to those real nodes' peers. Real nodes get explicit peer lists,
    so no real node dials an outsider it was not told to."""

    def __init__(self, root, specs, outsiders, extra_peers, cert_ids=()):
        self.outsiders = [dict(o) for o in outsiders]
        self.extra_peers = {k: list(v) for k, v in extra_peers.items()}
        super().__init__(root, specs, cert_ids=(*cert_ids, *[o["id"] for o in self.outsiders]))

    def _write_topology(self, path, dialler):
        super()._write_topology(path, dialler)
        topology = json.loads(path.read_text())
        for e in topology["nodes"]:
            if "peers" not in e:
                e["peers"] = self.peers_of(e["id"])
            e["peers"] = e["peers"] + self.extra_peers.get(e["id"], [])
        for o in self.outsiders:
            topology["nodes"].append({
                "id": o["id"], "region": o["region"], "role": "test", "utcOffsetMinutes": 480,
                "numberSeries": o["numberSeries"], "replication": o.get("replication", "127.0.0.1:9"),
                "peers": list(o.get("peers", [])),
                "identity": {"cert": str(self.certs / f"{o['id']}.pem"), "key": str(self.certs / f"{o['id']}.key"),
                             "ca": str(self.certs / "ca.pem")},
            })
        path.write_text(json.dumps(topology, indent=2))


@pytest.fixture
def hostile_world(tmp_path, pb2):
    """`make(scenario)`: the fake peer irk-office-9 serving the scenario's batch, and the
    federation irk-main + irk-office-1 started and connected. Everything is stopped at the
    end, pass or fail; node logs and what the fake peer saw are printed."""
    made = []

    def make(scenario):
        root = tmp_path / "fed"
        certs = make_certs(root / "certs", MAIN, OFFICE, *[o["id"] for o in OUTSIDERS])
        fake = FakePeer(pb2, certs, FAKE, allowed_clients={MAIN}).start()
        made.append(fake)
        fake.add_batch(scenario.changes, through=3)
        outsiders = [dict(o, replication=fake.address) if o["id"] == FAKE else o for o in OUTSIDERS]
        fed = FederationWithOutsiders(root, SPECS, outsiders, {MAIN: [FAKE]})
        made.append(fed)
        fed.start()
        fed.wait_connected()
        return fed, fake

    try:
        yield make
    finally:
        errors = []
        for x in reversed(made):  # the nodes first, then the fake peer
            try:
                if isinstance(x, Federation):
                    print(x.logs())
                else:
                    print(f"fake peer: {x.connections} connections; requests "
                          f"{[(r.client, r.status, r.checkpoint[1], r.resume_after) for r in x.requests]}; "
                          f"streams {[(s.status, s.frames[:6], s.sequences) for s in x.streams]}; "
                          f"handshake failures {x.handshake_failures[-3:]}; errors {x.errors[-3:]}")
                x.stop()
            except Exception as e:  # stop everything else all the same
                errors.append(e)
        if errors:
            raise errors[0]


# --- helpers ---------------------------------------------------------------------------------------

def link_of(node, peer: str):
    """The node's /v1/replication entry for `peer`, or None."""
    return next((p for p in node.replication()["peers"] if p["node"] == peer), None)


def applied(node, peer: str, sequence: int):
    link = link_of(node, peer)
    return link if link is not None and link["appliedSequence"] >= sequence else None


def metric_samples(node, name: str):
    """[(labels dict, value)] of one metric in /metrics."""
    status, _, body = node.request("GET", "/metrics")
    assert status == 200, status
    text = body.decode() if isinstance(body, bytes) else str(body)
    out = []
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            labels = {}
            if line.startswith(name + "{"):
                labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', line[len(name) + 1:line.rindex("}")]))
            out.append((labels, float(line.split()[-1])))
    return out


def rejected_metric(node, peer: str, reason: str) -> float:
    return sum(v for labels, v in metric_samples(node, "ekc_replication_rejected_records_total")
               if labels.get("peer") == peer and labels.get("reason") == reason)


def assert_ticket(node, t: BuiltTicket):
    v = node.ticket(t.id_text)
    assert v is not None, f"{node.node_id} lacks ticket {t.id_text} ({t.number})"
    assert (v["id"], v["number"]) == (t.id_text, t.number), v
    assert (v["subject"], v["originNode"], v["topic"]) == (t.subject, FAKE, "child-benefits"), v
    return v


def health_ok(node):
    status, _, body = node.request("GET", "/v1/health")
    assert status == 200, (status, body)
    return body


def own_write_is_stamped_now(node):
    """A ticket created on `node` now has a history stamp within a minute of the wall
    clock: a far-future stamp from a peer did not drag the node's clock along."""
    t = node.create(subject="Проверка часов узла")
    history = node.get(f"/v1/tickets/{t['id']}/history")["items"]
    millis = int(str(history[0]["stamp"]).split(".")[0])
    assert abs(millis - now_ms()) < 60_000, (history[0], now_ms())
    return t


def assert_nothing_of_it_stored(node, sc, expected_ids):
    """The hostile record left no trace: its ticket absent by id and number, every listing
    and the change feed exactly `expected_ids`, no conflict; a delta of A left A as it was."""
    h = sc.hostile
    if not h.target_a:
        assert node.ticket(ulid_str(h.id)) is None, f"{node.node_id} stored the hostile ticket"
        if h.number:
            assert node.ticket(h.number) is None, f"{node.node_id} has the hostile ticket's number {h.number}"
    listed = {t["id"] for t in list_all(node)}
    assert listed == expected_ids, (node.node_id, listed ^ expected_ids)
    changes, _ = all_changes(node)
    assert {c["id"] for c in changes} == expected_ids, (node.node_id, changes)
    assert node.conflicts() == [], node.conflicts()
    a = assert_ticket(node, sc.a)
    assert a["topic"] == "child-benefits"
    history = node.get(f"/v1/tickets/{sc.a.id_text}/history")["items"]
    assert [e["new"] for e in history if e["id"] == ulid_str(sc.a.history_id)] == [sc.a.history.new_value], history
    assert not [e for e in history if "задним числом" in str(e.get("new"))], history


# --- the test --------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_hostile_record_is_refused_alone_and_the_link_moves_on(case, pb2, hostile_world):
    sc = build_scenario(pb2, case)
    fed, fake = hostile_world(sc)
    main, office = fed[MAIN], fed[OFFICE]
    reason = sc.reason
    print(f"case {case.name}: {case.about}; expected reason {reason}; hostile record {len(sc.hostile.record)} bytes")

    # The link to the fake peer applies the whole batch: it moves past the hostile record.
    link = wait_until(lambda: applied(main, FAKE, 3), APPLY, f"irk-main applied the fake peer's batch through 3")
    assert link["appliedSequence"] == 3, link
    first = fake.requests[0]
    assert first.client == MAIN and first.request.protocol_version == 2 and first.checkpoint == (b"", 0), first
    # It did not stall on the record: no pull started again from before sequence 3.
    assert len([r for r in fake.requests if r.checkpoint[1] < 3]) == 1, \
        [(r.checkpoint[1], r.status) for r in fake.requests]

    # The node is alive and healthy.
    assert main.alive(), main.tail()
    health_ok(main)

    # A and B, around the hostile record, are there.
    assert_ticket(main, sc.a)
    assert_ticket(main, sc.b)

    # A ticket created on irk-office-1 after the batch reaches irk-main within a second.
    t = office.create(subject="После враждебного пакета")
    created = time.monotonic()
    wait_until(lambda: main.ticket(t["id"]), 5.0, "irk-office-1's ticket on irk-main", interval=0.01)
    took = time.monotonic() - created
    assert took <= 1.0, f"irk-office-1's ticket took {took:.3f} s to reach irk-main (goal: within 1 s)"

    # Nothing of the hostile record was stored, here or on irk-office-1 (A and B were relayed).
    expected = {sc.a.id_text, sc.b.id_text, t["id"]}
    assert_nothing_of_it_stored(main, sc, expected)
    wait_until(lambda: {sc.a.id_text, sc.b.id_text} <= {x["id"] for x in list_all(office)}, CONVERGE,
               "A and B relayed to irk-office-1")
    assert_nothing_of_it_stored(office, sc, expected)

    # The refusal is reported on the fake peer's link, with its reason...
    link = link_of(main, FAKE)
    assert link["appliedSequence"] == 3, link
    rejected = link["rejected"]
    assert rejected["records"] >= 1, rejected
    assert rejected["byReason"].get(reason, 0) >= 1, rejected
    assert set(rejected["byReason"]) == {reason}, f"only the hostile record may be refused: {rejected}"
    entries = [r for r in rejected["recent"] if r["sequence"] == 2]
    assert entries, rejected
    entry = entries[-1]
    assert {"at", "sequence", "kind", "id", "reason", "detail"} <= set(entry), entry
    assert entry["reason"] == reason, entry
    assert isinstance(entry["detail"], str) and entry["detail"], entry
    if case.detail:
        assert entry["detail"].endswith(case.detail), entry
    assert entry["at"], entry
    if case.name != "unknown_record_kind":
        assert "ticket" in str(entry["kind"]).lower() or entry["kind"] == 1, entry
    if case.id_shown:
        assert entry["id"] == ulid_str(sc.hostile.id), entry
    # ...and in the metrics.
    assert rejected_metric(main, FAKE, reason) >= 1, metric_samples(main, "ekc_replication_rejected_records_total")
    # The real peer's link refused nothing.
    assert not (link_of(main, OFFICE).get("rejected") or {}).get("records"), link_of(main, OFFICE)

    # The node's own clock was not dragged along by any stamp it refused.
    mine = own_write_is_stamped_now(main)
    wait_until(lambda: office.ticket(mine["id"]), CONVERGE, "irk-main's own ticket on irk-office-1")
    expected.add(mine["id"])

    # --- restart: the refusal is durable and the checkpoint is past the batch ---------------------
    pulls_before = len(fake.requests)
    streams_before = len(fake.streams)
    assert main.stop() == 0, main.tail()
    main.start()
    again = fake.wait_for_requests(1, 20.0, since=pulls_before)[0]
    assert again.client == MAIN, again
    assert again.checkpoint == (fake.store_id, 3), \
        f"after a restart irk-main asked from {again.checkpoint}, not (the fake peer's store, 3)"
    assert (again.resume_after, again.checkpoint_reset) == (3, False), again
    wait_until(lambda: (link_of(main, FAKE) or {}).get("connected"), CONVERGE, "irk-main reconnected to the fake peer")
    fed.wait_connected()
    assert all(s.sequences == [] for s in fake.streams[streams_before:]), \
        [s.sequences for s in fake.streams[streams_before:]]
    assert all(r.checkpoint[1] >= 3 for r in fake.requests[pulls_before:]), \
        [r.checkpoint for r in fake.requests[pulls_before:]]
    assert main.alive(), main.tail()
    health_ok(main)
    assert link_of(main, FAKE)["appliedSequence"] == 3
    assert_nothing_of_it_stored(main, sc, expected)
    assert_ticket(main, sc.b)
    # Still working both ways.
    t2 = office.create(subject="После перезапуска")
    wait_until(lambda: main.ticket(t2["id"]), CONVERGE, "irk-office-1's ticket on irk-main after the restart")
    mine2 = own_write_is_stamped_now(main)
    wait_until(lambda: office.ticket(mine2["id"]), CONVERGE, "irk-main's ticket on irk-office-1 after the restart")


def test_a_peer_answer_whose_status_is_no_http_status_fails_the_call_not_the_node(tmp_path, pb2):
    """NIO's HTTP/1 view of an HTTP/2 response takes any decimal `:status` to
    `HTTPResponseStatus(statusCode:)`, which traps on a negative one: the fake peer
    answering its pull and an anti-entropy call with `:status: -1` crashed irk-main.
    Now each such stream fails with the reason, the link shows it, and irk-main serves on."""
    root = tmp_path / "fed"
    certs = make_certs(root / "certs", MAIN, OFFICE, *[o["id"] for o in OUTSIDERS])
    fake = FakePeer(pb2, certs, FAKE, allowed_clients={MAIN}).start()
    fake.pull_status = "-1"
    fake.answer = lambda path, request: ("-1", "application/x-protobuf", b"")
    outsiders = [dict(o, replication=fake.address) if o["id"] == FAKE else o for o in OUTSIDERS]
    fed = FederationWithOutsiders(root, SPECS, outsiders, {MAIN: [FAKE]})
    try:
        fed.start()
        main = fed[MAIN]
        wait_until(lambda: "three-digit" in str((link_of(main, FAKE) or {}).get("lastError")), 30,
                   "irk-main's link to the fake peer names the refused :status")
        assert any(r.path == "/replication/v2/pull" for r in fake.requests)
        status, _, body = main.request("POST", "/v1/digest/repair", {"peer": FAKE})
        assert status == 502 and ':status "-1" is not a three-digit HTTP status' in str(body.get("error")), (status, body)
        assert main.alive(), main.tail()
        health_ok(main)
        fed.wait_connected(nodes=[MAIN, OFFICE])
        t = fed[OFFICE].create(subject="После ответа без статуса")
        wait_until(lambda: main.ticket(t["id"]) is not None, CONVERGE, "irk-main pulls from irk-office-1 as before")
        assert main.alive() and "Fatal error" not in main.tail()
    finally:
        print(fed.logs())
        fed.stop()
        fake.stop()
