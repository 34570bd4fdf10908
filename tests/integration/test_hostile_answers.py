"""Every answer a peer gives to a call of this node is checked like a request (issue 17).

irk-main (region 38, the node under test) pulls from irk-office-1, a real node, and from
irk-office-9, a FakePeer (fake_peer.py) holding a valid federation certificate of region
38, which answers irk-main's anti-entropy calls (`/replication/v2/digest`, `/records`)
and its pull stream as each test scripts, hostile answers included:

1. A level-0 digest answer listing ranges 300 and 65535 (valid: 0-255) once killed the
   node pulling from it (`UInt8(r)`, SIGILL) at every anti-entropy round, restart or not.
   Now every round refuses it, `invalid_digest` on the link; the node stays up through ten
   rounds, before and after a restart, while its rounds with the honest office go on
   and repair divergence planted in its store.
2. A peer whose digest lists one record the node lacks and whose every records answer
   carries another record (a ticket stamped a year ahead) that was never asked for once
   kept a round going for 41 calls. Now each round ends at that first answer: four calls,
   `unasked_record`, nothing of the answer stored, before or after a restart.
3. A heartbeat whose source_last_sequence is UInt64.max once showed a lag of 1.8e19
   records; now it closes the stream as a protocol violation and the lag stays 0.
4. Answers that do not decode, records answers holding other frames, digests listing a
   record in the wrong bucket: each refused with its reason, the node unharmed.

Every wait is a bounded poll; every node process and the fake peer are stopped by the
fixture, pass or fail.
"""
import hashlib
import re
import time

import pytest

from conftest import ekc
from fake_peer import DIGEST_PATH, FRAMES_TYPE, PROTOBUF_TYPE, RECORDS_PATH, FakePeer, batch_frame
from federation import make_certs, wait_until
from test_digests import ALTERED, NOTE, _plant
from test_hostile_peer import FederationWithOutsiders
from v2_records import TicketFactory, new_ulid, now_ms, stamp_at, ulid_str

MAIN, OFFICE, FAKE = "irk-main", "irk-office-1", "irk-office-9"
ON_DEMAND = ["--anti-entropy-interval", "0"]
EVERY_SECOND = ["--anti-entropy-interval", "1"]
SUM = bytes(range(32))


def position(kind: int, record_id: bytes) -> int:
    """A record's bucket (proto/README.md §13): the first two bytes of SHA-256(kind, id)."""
    h = hashlib.sha256(bytes([kind]) + record_id).digest()
    return h[0] << 8 | h[1]


@pytest.fixture
def world(tmp_path, pb2):
    """`make(main_flags)`: the fake peer irk-office-9 (no feed: its pull is caught up at 0)
    and irk-main + irk-office-1 started and connected. Stopped at the end, pass or fail."""
    made = []

    def make(main_flags, office_flags=ON_DEMAND):
        root = tmp_path / "fed"
        certs = make_certs(root / "certs", MAIN, OFFICE, FAKE)
        fake = FakePeer(pb2, certs, FAKE, allowed_clients={MAIN}).start()
        made.append(fake)
        specs = [{"id": MAIN, "peers": [OFFICE], "flags": main_flags},
                 {"id": OFFICE, "peers": [MAIN], "flags": office_flags}]
        outsiders = [{"id": FAKE, "region": "38", "numberSeries": 9, "peers": [MAIN], "replication": fake.address}]
        fed = FederationWithOutsiders(root, specs, outsiders, {MAIN: [FAKE]})
        made.append(fed)
        fed.start()
        fed.wait_connected()
        wait_until(lambda: fed[MAIN].link(FAKE)["connected"], 20, "irk-main's pull from the fake peer")
        return fed, fake

    try:
        yield make
    finally:
        errors = []
        for x in reversed(made):
            try:
                if isinstance(x, FederationWithOutsiders):
                    print(x.logs())
                else:
                    print(f"fake peer: {x.connections} connections, {len(x.calls)} anti-entropy calls; "
                          f"errors {x.errors[-3:]}")
                x.stop()
            except Exception as e:
                errors.append(e)
        if errors:
            raise errors[0]


def reply(pb2, **fields) -> tuple:
    return 200, PROTOBUF_TYPE, pb2.DigestReply(store_id=b"fake-store", scope="38", ready=True, **fields).SerializeToString()


def refused(node, peer: str, reason: str) -> int:
    return node.link(peer)["rejected"]["byReason"].get(reason, 0)


def metric(node, name: str, **labels) -> float:
    text = node.request("GET", "/metrics")[2]
    text = text if isinstance(text, str) else text.decode()
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(r"^(\w+)\{([^}]*)\} ([\d.e+]+)$", line)
        if m and m.group(1) == name and ",".join(sorted(m.group(2).split(","))) == want:
            return float(m.group(3))
    return 0.0


def test_digest_positions_out_of_range_are_refused_every_round_and_honest_repair_goes_on(world, pb2):
    fed, fake = world(EVERY_SECOND)
    main, office = fed[MAIN], fed[OFFICE]

    def answer(path, request):
        if path == DIGEST_PATH and request.level == 0:
            return reply(pb2, records=2, ranges=[pb2.DigestRange(position=300, sum=SUM, records=1),
                                                 pb2.DigestRange(position=65535, sum=SUM, records=1)])
        if path == DIGEST_PATH:
            return reply(pb2, ranges=[pb2.DigestRange(position=request.position, sum=SUM, records=1)])
        return 200, FRAMES_TYPE, b""
    fake.answer = answer

    altered = main.create(subject=ALTERED)
    noted = main.create(subject="С заметкой")
    main.add_note(noted["id"], NOTE)
    wait_until(lambda: office.ticket(noted["id"]) and NOTE in str(office.get(f"/v1/tickets/{noted['id']}/notes")),
               30, "the office holds both tickets")

    def ten_rounds_refused(since: int):
        wait_until(lambda: refused(main, FAKE, "invalid_digest") >= since + 10, 60,
                   "ten anti-entropy rounds with the fake peer refused", interval=0.5)
        assert main.alive(), main.tail(3000)
        round_ = main.link(FAKE)["antiEntropy"]
        assert round_["result"] == "refused" and round_["refusal"]["reason"] == "invalid_digest", round_
        assert "position 300 is not in 0–255" in round_["refusal"]["detail"], round_
        assert round_["calls"] == 1, "refused at the first answer"
        return refused(main, FAKE, "invalid_digest")

    ten_rounds_refused(0)
    # Every refusal is one round: the fake peer was asked level 0 once per round, nothing else.
    assert [p for p, r in fake.calls] == [DIGEST_PATH] * len(fake.calls)
    assert all(r.level == 0 for _, r in fake.calls)
    assert metric(main, "ekc_replication_rejected_records_total", peer=FAKE, reason="invalid_digest") >= 10
    recent = [r for r in main.link(FAKE)["rejected"]["recent"] if r["reason"] == "invalid_digest"]
    assert recent and recent[-1]["kind"] is None and recent[-1]["sequence"] == 0, recent
    # The honest link compares as ever.
    wait_until(lambda: (main.link(OFFICE)["antiEntropy"] or {}).get("result") == "equal", 30, "rounds with the office")

    # Divergence planted in irk-main's store while it is stopped: its rounds with the
    # office repair it, while every round with the fake peer is still refused.
    main.stop()
    planted = _plant(main.data_dir)
    assert [k for k, _ in planted] == ["record", "note"], planted
    main.start()
    ten_rounds_refused(0)  # the link's counts start again with the process
    wait_until(lambda: main.get("/v1/health")["digests"]["damagedRecords"] == 0
               and main.get("/v1/health")["digests"]["scrubPasses"] >= 1, 60, "the office repairs irk-main", interval=0.5)
    assert main.ticket(altered["id"])["subject"] == ALTERED
    assert NOTE in str(main.get(f"/v1/tickets/{noted['id']}/notes"))
    assert main.alive()

    r = ekc("cluster", "health", "--config", str(fed.cluster_file), timeout=60)
    assert re.search(rf"{MAIN}\s+{FAKE}\s+connected.*invalid_digest \d+", r.stdout), r.stdout
    assert "Fatal error" not in main.tail(20000)


def test_records_never_asked_for_end_the_round_at_its_first_answer(world, pb2):
    fed, fake = world(ON_DEMAND)
    main = fed[MAIN]
    factory = TicketFactory(pb2, node=FAKE, region="38", series=9)
    missing = new_ulid()
    p = position(pb2.RECORD_KIND_TICKET, missing)
    stranger = factory.ticket(7, stamp=stamp_at(now_ms() + 365 * 86_400_000))

    def answer(path, request):
        if path == RECORDS_PATH:
            return 200, FRAMES_TYPE, batch_frame([(1, stranger.bytes())], 1, 1)
        if request.level == 0:
            return reply(pb2, records=1, ranges=[pb2.DigestRange(position=p >> 8, sum=SUM, records=1)])
        if request.level == 1 and request.position == p >> 8:
            return reply(pb2, ranges=[pb2.DigestRange(position=p, sum=SUM, records=1)])
        if request.level == 2 and request.position == p:
            return reply(pb2, entries=[pb2.DigestRecord(kind=pb2.RECORD_KIND_TICKET, id=missing, sum=SUM)])
        return reply(pb2)
    fake.answer = answer

    def ten_rounds():
        before = len(fake.calls)
        for _ in range(10):
            status, _, body = main.request("POST", "/v1/digest/repair", {"peer": FAKE})
            assert status == 502, (status, body)
            assert body["result"] == "refused" and body["refusal"]["reason"] == "unasked_record", body
            assert "not asked for" in body["refusal"]["detail"], body
            assert body["calls"] == 4 and body["pulled"] == 0 and body["repaired"] == 0, body
        calls = fake.calls[before:]
        assert len(calls) == 40, len(calls)
        assert [path for path, _ in calls[:4]] == [DIGEST_PATH, DIGEST_PATH, DIGEST_PATH, RECORDS_PATH]
        asked = calls[3][1].records
        assert [bytes(r.id) for r in asked] == [missing]
        assert main.ticket(stranger.id_text) is None and main.ticket(ulid_str(missing)) is None

    ten_rounds()
    assert refused(main, FAKE, "unasked_record") == 10
    assert main.tail(20000).count("anti-entropy round refused the peer's answer") == 10
    assert "refused a record from a peer" not in main.tail(20000), "nothing of the answer reached a merge"
    main.stop()
    main.start()
    fed.wait_connected(nodes=[MAIN])
    assert main.ticket(stranger.id_text) is None
    ten_rounds()
    assert main.alive()


def test_a_heartbeat_past_any_feed_position_closes_the_stream_and_shows_no_lag(world, pb2):
    fed, fake = world(ON_DEMAND)
    main = fed[MAIN]
    fake.heartbeat_interval = 0.2
    fake.heartbeat_last = (1 << 64) - 1
    fake.disconnect_all()  # the next stream's first heartbeat carries it
    worst = 0
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        link = main.link(FAKE)
        worst = max(worst, link["lagRecords"])
        time.sleep(0.1)
    assert worst == 0, worst
    link = main.link(FAKE)
    assert refused(main, FAKE, "protocol_violation") >= 1, link
    assert any("past the largest feed position" in r["detail"] for r in link["rejected"]["recent"]), link
    assert main.alive()
    # An honest peer again: the link comes up and stays.
    fake.add_batch([(1, TicketFactory(pb2, node=FAKE, region="38", series=9).ticket(1).bytes())], through=5)
    fake.heartbeat_last = None
    wait_until(lambda: main.link(FAKE)["connected"] and main.link(FAKE)["appliedSequence"] == 5, 60, "the link back",
               interval=0.2)
    assert main.link(FAKE)["lagRecords"] == 0


@pytest.mark.parametrize("case", ["undecodable_digest", "records_with_a_header_frame", "record_in_another_bucket",
                                  "digest_unsorted", "digest_sum_of_5_bytes", "records_undecodable"])
def test_malformed_answers_are_refused_with_their_reason(world, pb2, case):
    fed, fake = world(ON_DEMAND)
    main = fed[MAIN]
    rid = new_ulid()
    p = position(pb2.RECORD_KIND_TICKET, rid)
    header = delimited_frame(pb2, header=pb2.StreamHeader(protocol_version=2, node=FAKE, store_id=b"x"))

    def answer(path, request):
        if path == RECORDS_PATH:
            return 200, FRAMES_TYPE, header if case == "records_with_a_header_frame" else b"\x05\x12\x03\xff\xff"
        if case == "undecodable_digest":
            return 200, PROTOBUF_TYPE, b"\xff\xff\xff"
        if case == "digest_unsorted":
            return reply(pb2, records=2, ranges=[pb2.DigestRange(position=9, sum=SUM, records=1),
                                                 pb2.DigestRange(position=3, sum=SUM, records=1)])
        if case == "digest_sum_of_5_bytes":
            return reply(pb2, records=1, ranges=[pb2.DigestRange(position=9, sum=b"12345", records=1)])
        if request.level == 0:
            return reply(pb2, records=1, ranges=[pb2.DigestRange(position=p >> 8, sum=SUM, records=1)])
        if request.level == 1:
            return reply(pb2, ranges=[pb2.DigestRange(position=p, sum=SUM, records=1)])
        other = new_ulid()
        listed = other if case == "record_in_another_bucket" else rid
        while case == "record_in_another_bucket" and position(pb2.RECORD_KIND_TICKET, listed) == p:
            listed = new_ulid()
        return reply(pb2, entries=[pb2.DigestRecord(kind=pb2.RECORD_KIND_TICKET, id=listed, sum=SUM)])
    fake.answer = answer

    expected = {"undecodable_digest": ("malformed_answer", "DigestReply"),
                "records_with_a_header_frame": ("malformed_answer", "ChangeBatch frames only"),
                "record_in_another_bucket": ("invalid_digest", "belongs in bucket"),
                "digest_unsorted": ("invalid_digest", "positions increase"),
                "digest_sum_of_5_bytes": ("invalid_digest", "sum has 5 bytes, not 32"),
                "records_undecodable": ("malformed_answer", "records answer")}[case]
    status, _, body = main.request("POST", "/v1/digest/repair", {"peer": FAKE})
    assert status == 502 and body["result"] == "refused", body
    assert body["refusal"]["reason"] == expected[0] and expected[1] in body["refusal"]["detail"], body
    assert refused(main, FAKE, expected[0]) == 1
    assert main.alive() and main.get("/v1/health")


def delimited_frame(pb2, **kind) -> bytes:
    from v2_records import delimited
    return delimited(pb2.Frame(**kind).SerializeToString())
