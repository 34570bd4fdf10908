"""Replica digests and anti-entropy (issue 10) on real node processes.

1. Two nodes of region 38 converge to identical digests of their organisation's scope;
   a region and a fund converge to identical digests of the scope they share (the
   fund's copy of what the transfer lets it hold), level by level through the API.
2. Divergence planted in one node's store while it is stopped (a register value
   altered in place by Python's `lmdb`, same write id and length: the replica keeps
   every version vector it had, so the feed will never resend it; and a note deleted)
   is found by the node's scrub, shown by `ekc cluster health` (exit 4, DIVERGED),
   and repaired by `ekc cluster repair`: the altered value and the note are back, the
   digests are equal, and the repaired-records metric counts the records.
"""
import json
import re
import subprocess
import time

import lmdb
import pytest

from conftest import ekc
from v2_records import ulid_bytes
from federation import running, wait_until

ON_DEMAND = ["--anti-entropy-interval", "0"]
REGION_AND_FUND = [
    {"id": "irk-main", "region": "38", "peers": ["irk-office-1", "pension-1"], "flags": ON_DEMAND},
    {"id": "irk-office-1", "region": "38", "peers": ["irk-main"], "flags": ON_DEMAND},
    {"id": "pension-1", "region": "pension", "peers": ["irk-main"], "flags": ON_DEMAND},
]
ALTERED = "DIGEST-PLANT-AAAA"
ALTERED_TO = "DIGEST-PLANT-ZZZZ"
NOTE = "DIGEST-NOTE-0451 перезвонить"


@pytest.fixture
def fed(tmp_path):
    yield from running(tmp_path / "fed", REGION_AND_FUND)


def digest(node, scope, **level):
    q = "&".join([f"scope={scope}"] + [f"{k}={v}" for k, v in level.items()])
    return node.get(f"/v1/digest?{q}")


def caught_up(fed):
    for n in fed.all():
        for p in n.replication()["peers"]:
            if not p["connected"] or p["lagRecords"] != 0:
                return False
    return True


def settled(fed):
    wait_until(lambda: caught_up(fed), 30, "every link caught up", interval=0.2)


def test_replicas_converge_to_equal_digests_within_and_across_organisations(fed):
    main, office, fund = fed["irk-main"], fed["irk-office-1"], fed["pension-1"]
    tickets = [main.create(subject=f"Дайджест {i}") for i in range(12)] + [office.create(subject=f"Офис {i}") for i in range(8)]
    main.add_note(tickets[0]["id"], "заметка для дайджеста")
    office.patch(tickets[1]["id"], {"status": "REGISTERED"})
    t = main.create(subject="Передача в фонд", citizen={"ref": "CIT-D1", "name": "Петров Пётр Петрович", "snils": "11223344595"})
    status, _, tr = main.request("POST", f"/v1/tickets/{t['id']}/transfers",
                                 {"to": "pension", "kind": "REDIRECT", "scope": ["ref", "name"],
                                  "reason": {"code": "pension-recalc", "text": "Вопрос компетенции фонда"}},
                                 headers=main.auth("op-ivanova"))
    assert status == 201, tr
    wait_until(lambda: fund.request("GET", f"/v1/transfers/{tr['id']}")[0] == 200, 20, "the fund holds the transfer")
    wait_until(lambda: fund.ticket(t["id"]) is not None, 20, "the fund holds the transferred ticket")
    settled(fed)

    # Within region 38: the same records, the same root, range by range.
    def same_org():
        a, b = digest(main, "38"), digest(office, "38")
        return a["ready"] and b["ready"] and a["root"] == b["root"] and a
    top = wait_until(same_org, 30, "region 38's nodes have equal digests", interval=0.3)
    # 21 tickets and 1 transfer: every record the region holds.
    assert top["records"] == 22, top
    assert top["ranges"] and all(len(r["sum"]) == 64 for r in top["ranges"])
    some = top["ranges"][0]["range"]
    assert digest(main, "38", range=some) == {**digest(office, "38", range=some), "node": "irk-main"}
    bucket = digest(main, "38", range=some)["buckets"][0]["bucket"]
    leaves = digest(main, "38", bucket=bucket)["entries"]
    assert leaves and leaves == digest(office, "38", bucket=bucket)["entries"]

    # Across organisations: the region's digest of the fund's scope is the fund's of the
    # region's: the transferred ticket (as far as the scope lets the fund hold it) and the transfer.
    def across():
        a, b = digest(main, "pension"), digest(fund, "38")
        return a["root"] == b["root"] and (a, b)
    a, b = wait_until(across, 30, "region and fund agree on their shared scope", interval=0.3)
    assert a["records"] == b["records"] == 2, (a, b)
    # The office holds the region's whole state, so its digest of the fund's scope is the same.
    assert digest(office, "pension")["root"] == a["root"]
    # The fund's own organisation scope holds exactly those two as well (nothing else arrived).
    assert digest(fund, "pension")["records"] == 2

    r = ekc("cluster", "health", "--config", str(fed.cluster_file), timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "DIVERGED" not in r.stdout and r.stdout.count(" equal ") >= 2, r.stdout

    # Bad input: a clear 400 naming the parameter.
    for q, field in (("scope=38&range=300", "range"), ("scope=38&bucket=x", "bucket"),
                     ("scope=38&range=1&bucket=2", "bucket"), ("scope=38&level=1", None)):
        status, _, err = main.request("GET", f"/v1/digest?{q}")
        assert status == 400, (q, status, err)
        if field:
            assert err["error"]["field"] == field, err


def _plant(data_dir):
    """Alters the ticket register holding ALTERED in place (same length) and deletes the
    note holding NOTE, straight in LMDB. Returns what it changed."""
    env = lmdb.open(str(data_dir), max_dbs=64, subdir=True, lock=True)
    changed = []
    with env.begin(write=True) as txn:
        records = env.open_db(b"records", txn=txn, create=False)
        children = env.open_db(b"children", txn=txn, create=False)
        for key, value in txn.cursor(db=records):
            if ALTERED.encode() in value:
                txn.put(key, value.replace(ALTERED.encode(), ALTERED_TO.encode()), db=records)
                changed.append(("record", key.hex()))
        for key, value in list(txn.cursor(db=children)):
            if NOTE.encode() in value:
                txn.delete(key, db=children)
                changed.append(("note", key.hex()))
    env.close()
    return changed


def test_divergence_planted_in_a_store_is_found_by_digests_shown_by_health_and_repaired(fed):
    main, office = fed["irk-main"], fed["irk-office-1"]
    altered = main.create(subject=ALTERED)
    noted = main.create(subject="С заметкой")
    main.add_note(noted["id"], NOTE)
    for i in range(10):
        office.create(subject=f"Фон {i}")
    settled(fed)
    wait_until(lambda: digest(main, "38")["root"] == digest(office, "38")["root"], 30, "equal digests before planting")

    office.stop()
    planted = _plant(office.data_dir)
    assert [k for k, _ in planted] == ["record", "note"], planted
    office.start()
    fed.wait_connected()

    # The scrub at start hashes every record again: both records are damaged here.
    def scrubbed():
        h = office.get("/v1/health")["digests"]
        return h["scrubPasses"] >= 1 and h
    h = wait_until(scrubbed, 30, "the office's scrub pass", interval=0.2)
    assert h["damagedRecords"] == 2, h
    # (The ticket view operators read is a projection the planting left alone: the
    # replicated record is what differs.)
    assert NOTE not in json.dumps(office.get(f"/v1/tickets/{noted['id']}/notes"), ensure_ascii=False)
    settled(fed)
    a, b = digest(main, "38"), digest(office, "38")
    assert a["root"] != b["root"] and a["records"] == b["records"], (a, b)

    # Level by level, the difference narrows to the two records.
    ranges_a = {r["range"]: r for r in a["ranges"]}
    differing = [r["range"] for r in b["ranges"] if ranges_a.get(r["range"]) != r]
    assert 1 <= len(differing) <= 2, differing
    leaves = []
    for rng in differing:
        ba = {x["bucket"]: x for x in digest(main, "38", range=rng)["buckets"]}
        for bk in digest(office, "38", range=rng)["buckets"]:
            if ba.get(bk["bucket"]) != bk:
                la = {x["id"]: x["sum"] for x in digest(main, "38", bucket=bk["bucket"])["entries"]}
                leaves += [x["id"] for x in digest(office, "38", bucket=bk["bucket"])["entries"] if la.get(x["id"]) != x["sum"]]
    assert sorted(leaves) == sorted([altered["id"], noted["id"]])

    # `ekc cluster health` shows it before any repair (anti-entropy runs on demand here).
    r = ekc("cluster", "health", "--config", str(fed.cluster_file), timeout=60)
    assert r.returncode == 4, r.stdout + r.stderr
    assert re.search(r"irk-main\s+irk-office-1\s+38\s+DIVERGED", r.stdout), r.stdout
    assert "ekc cluster repair" in r.stdout
    print(r.stdout)

    r = ekc("cluster", "repair", "--config", str(fed.cluster_file), "--node", "irk-office-1", timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    print(r.stdout)
    assert re.search(r"irk-office-1\s+irk-main\s+differed\s+2\s+2", r.stdout), r.stdout
    assert office.ticket(altered["id"])["subject"] == ALTERED
    assert NOTE in json.dumps(office.get(f"/v1/tickets/{noted['id']}/notes"), ensure_ascii=False)
    assert digest(main, "38")["root"] == digest(office, "38")["root"]
    assert office.get("/v1/health")["digests"]["damagedRecords"] == 0
    link = office.link("irk-main")["antiEntropy"]
    assert link["repaired"] == 2 and link["damagedReplaced"] == 2 and link["differingRecords"] == 2, link
    metrics = office.request("GET", "/metrics")[2]
    text = metrics if isinstance(metrics, str) else metrics.decode()
    assert re.search(r"^ekc_anti_entropy_repaired_records_total 2(\.0)?$", text, re.M), text[-3000:]

    settled(fed)
    r = ekc("cluster", "health", "--config", str(fed.cluster_file), timeout=60)
    assert r.returncode == 0 and "DIVERGED" not in r.stdout, r.stdout + r.stderr


def test_a_repair_of_hundreds_of_records_runs_on_one_connection(fed):
    """Hundreds of records lost from one replica (deleted under the stopped node: the feed
    will never resend them) come back in one repair round: several hundred digest and
    records calls on one HTTP/2 connection, none of which may look like a rapid reset to
    the peer (a call used to reset its stream when its answer ended)."""
    main, office = fed["irk-main"], fed["irk-office-1"]
    made = [main.create(subject=f"Потерянное {i}")["id"] for i in range(400)]
    settled(fed)
    wait_until(lambda: digest(main, "38")["root"] == digest(office, "38")["root"], 30, "equal digests before the loss")

    office.stop()
    env = lmdb.open(str(office.data_dir), max_dbs=64, subdir=True, lock=True)
    lost = 0
    with env.begin(write=True) as txn:
        records = env.open_db(b"records", txn=txn, create=False)
        children = env.open_db(b"children", txn=txn, create=False)
        for tid in made:
            key = bytes([1]) + ulid_bytes(tid)
            if txn.delete(key, db=records):
                lost += 1
            cur = txn.cursor(db=children)
            if cur.set_range(key):
                while cur.key().startswith(key):
                    if not cur.delete():
                        break
    env.close()
    assert lost == 400
    office.start()
    fed.wait_connected()
    wait_until(lambda: office.get("/v1/health")["digests"]["scrubPasses"] >= 1, 60, "the office's scrub pass", interval=0.2)
    assert digest(office, "38")["records"] == digest(main, "38")["records"] - 400

    r = ekc("cluster", "repair", "--config", str(fed.cluster_file), "--node", "irk-office-1", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    link = office.link("irk-main")["antiEntropy"]
    assert link["repaired"] == 400 and link.get("error") is None, link
    assert digest(main, "38")["root"] == digest(office, "38")["root"]
    assert all(office.ticket(t) is not None for t in made[::37])



def _call(port, path, body, tmp_path, cert):
    """POSTs `body` to the replication port with `cert`'s identity: (HTTP status, body)."""
    req, out = tmp_path / "req.bin", tmp_path / "out.bin"
    req.write_bytes(body)
    args = ["curl", "--http2", "-sk", "--max-time", "10", f"https://127.0.0.1:{port}{path}", "-X", "POST",
            "-H", "content-type: application/x-protobuf", "--data-binary", f"@{req}", "-o", str(out), "-w", "%{http_code}",
            "--cert", str(cert.with_suffix(".pem")), "--key", str(cert.with_suffix(".key"))]
    r = subprocess.run(args, capture_output=True, text=True, timeout=20)
    return int(r.stdout.strip() or 0), (out.read_bytes() if out.exists() else b"")


def test_the_digest_and_records_calls_refuse_what_a_wrong_or_hostile_peer_sends(fed, pb2, tmp_path):
    """Everything a peer with a valid certificate can send the two anti-entropy calls:
    each refused with a status and a reason, nothing answered beyond its scope, and the
    node keeps serving its honest peer."""
    main, office = fed["irk-main"], fed["irk-office-1"]
    t = main.create(subject="Для враждебного пира")
    settled(fed)
    port, me = main.repl_port, fed.certs / "irk-office-1"
    digest_path, records_path = "/replication/v2/digest", "/replication/v2/records"

    def ref(kind=1, rid=None):
        return pb2.RecordRef(kind=kind, id=rid if rid is not None else ulid_bytes(t["id"]))

    refused = [
        (digest_path, b"\xff\xff\xff", "DigestRequest"),
        (digest_path, pb2.DigestRequest(protocol_version=3).SerializeToString(), "protocol_version 3"),
        (digest_path, pb2.DigestRequest(protocol_version=2, level=3).SerializeToString(), "level 3"),
        (digest_path, pb2.DigestRequest(protocol_version=2, level=1, position=256).SerializeToString(), "0-255"),
        (digest_path, pb2.DigestRequest(protocol_version=2, level=2, position=65536).SerializeToString(), "0-65535"),
        (records_path, b"\x12\x05\x08", "RecordsRequest"),
        (records_path, pb2.RecordsRequest(protocol_version=1, records=[ref()]).SerializeToString(), "protocol_version 1"),
        (records_path, pb2.RecordsRequest(protocol_version=2, records=[ref()] * 1001).SerializeToString(), "at most 1000"),
        (records_path, pb2.RecordsRequest(protocol_version=2, records=[ref(kind=0)]).SerializeToString(), "16-byte id"),
        (records_path, pb2.RecordsRequest(protocol_version=2, records=[ref(rid=b"\x01" * 15)]).SerializeToString(), "16-byte id"),
        # Past the 64 KiB a request may hold, named as the request it is (once: "the PullRequest exceeds").
        (records_path, pb2.RecordsRequest(protocol_version=2, records=[ref()] * 1_000_000).SerializeToString(),
         "the RecordsRequest exceeds 65536 bytes"),
        (digest_path, pb2.DigestRequest(protocol_version=2).SerializeToString() + b"\x00" * 70_000,
         "the DigestRequest exceeds 65536 bytes"),
    ]
    for path, body, reason in refused:
        status, answer = _call(port, path, body, tmp_path, me)
        assert status == 400 and reason in answer.decode(errors="replace"), (path, reason, status, answer[:200])

    # A certificate the node knows, of a node that is not its peer: 403, nothing answered.
    status, answer = _call(office.repl_port, digest_path, pb2.DigestRequest(protocol_version=2).SerializeToString(),
                           tmp_path, fed.certs / "pension-1")
    assert status == 403 and b"not a peer" in answer, (status, answer)
    # The fund, a peer of irk-main, asks for a region ticket it has no transfer of: nothing of it.
    status, answer = _call(port, records_path, pb2.RecordsRequest(protocol_version=2, records=[ref()]).SerializeToString(),
                           tmp_path, fed.certs / "pension-1")
    assert status == 200 and "Для враждебного пира".encode() not in answer, answer[:300]
    # The honest peer is still served, and the digests are still equal.
    status, answer = _call(port, digest_path, pb2.DigestRequest(protocol_version=2).SerializeToString(), tmp_path, me)
    assert status == 200
    assert pb2.DigestReply.FromString(answer).records == digest(office, "38")["records"]
    assert digest(main, "38")["root"] == digest(office, "38")["root"]


def test_a_repair_with_an_unreachable_peer_answers_502_and_changes_nothing(fed):
    main, office = fed["irk-main"], fed["irk-office-1"]
    t = main.create(subject="До остановки")
    # A link shows no lag until a batch or heartbeat says the peer is ahead: wait for the ticket itself.
    wait_until(lambda: office.ticket(t["id"]), 30, "the ticket at the office")
    settled(fed)
    before = digest(office, "38")
    main.stop()
    status, _, body = office.request("POST", "/v1/digest/repair", {"peer": "irk-main"})
    assert status == 502 and body["error"], body
    assert digest(office, "38") == before
    status, _, body = office.request("POST", "/v1/digest/repair", {"peer": "nn-main"})
    assert status in (404, 422) and body["error"]["field"] == "peer", body
