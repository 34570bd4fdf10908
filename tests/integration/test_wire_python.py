"""An independent decoder reads our replication stream.

`protoc --python_out` compiles proto/ekc/replication/v1/replication.proto, Python's
protobuf library (not swift-protobuf) parses the frames, and a length-delimited
reader written here splits them. Two streams are read:

* proto/testdata/sample.frames, committed: the wire format of v1 as it was fixed;
* a fresh stream written by the Swift code under test (the WireSampleTests suite,
  run with EKC_WIRE_SAMPLE=path), so the check follows the code, not only the file.

Both must decode to the expected typed values, and Python's re-encoding of every
frame must give back the very bytes Swift wrote (both sides encode canonically).
Needs: protoc (Debian's protobuf-compiler) and Python's protobuf package.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "proto" / "testdata" / "sample.frames"
BASE_TIME = 1_795_000_000_000  # baseTime of Tests/WireTests/Support.swift


def ulid_bytes(millis, random_high, random_low):
    high = (millis & 0xFFFF_FFFF_FFFF) << 16 | random_high
    return high.to_bytes(8, "big") + random_low.to_bytes(8, "big")


def read_varint(data, pos):
    """A protobuf base-128 varint at `pos`: (value, next position)."""
    value = shift = 0
    for i in range(10):
        if pos + i >= len(data):
            raise ValueError("truncated varint")
        b = data[pos + i]
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos + i + 1
        shift += 7
    raise ValueError("varint longer than 10 bytes")


def split_frames(data):
    """The bodies of a length-delimited stream (writeDelimitedTo framing)."""
    bodies, pos = [], 0
    while pos < len(data):
        length, pos = read_varint(data, pos)
        assert pos + length <= len(data), "stream ends inside a frame"
        bodies.append(data[pos:pos + length])
        pos += length
    return bodies


def check_stream(pb, data):
    bodies = split_frames(data)
    frames = []
    for body in bodies:
        f = pb.Frame()
        f.ParseFromString(body)
        # Python re-encodes each frame to the very bytes Swift wrote.
        assert f.SerializeToString(deterministic=True) == body
        frames.append(f)
    assert [f.WhichOneof("kind") for f in frames] == ["header", "batch", "heartbeat", "batch", "error"]

    header = frames[0].header
    assert header.protocol_version == 1
    assert header.node == "irk-main"
    assert header.store_id == bytes(range(0x10, 0x20))
    assert header.resume_after == 0 and header.checkpoint_reset and header.last_sequence == 3

    batch = frames[1].batch
    assert [c.sequence for c in batch.changes] == [2, 3]
    assert batch.through_sequence == 3 and batch.source_last_sequence == 3

    # The ticket edited on both sides of a partition: status and assignee conflict.
    t = batch.changes[0].ticket
    assert t.id == ulid_bytes(BASE_TIME, 0x38, 0x417)
    assert len(t.header) == 1
    h = t.header[0].value
    assert (h.number.region, h.number.year, h.number.sequence) == ("38", 2026, 417)
    assert h.origin_node == "irk-main" and h.received_at == BASE_TIME
    assert h.channel == pb.CHANNEL_PHONE and h.legal_regime == pb.LEGAL_REGIME_APPEAL_59FZ
    assert t.statement[0].value.subject == "Единое пособие"
    c = t.citizen[0].value
    assert (c.ref, c.name, c.snils, c.phone) == ("CIT-7F3K2", "Иванова Мария Петровна", "11223344595", "+79140000067")

    progress = sorted(t.progress, key=lambda v: (v.dot.stamp, v.dot.node))
    assert [v.value.status for v in progress] == [pb.TICKET_STATUS_IN_WORK, pb.TICKET_STATUS_DEFERRED]
    assert [v.dot.node for v in progress] == ["irk-main", "irk-office-1"]
    assert [v.dot.stamp >> 16 for v in progress] == [BASE_TIME + 100, BASE_TIME + 120]
    for v in progress:
        # Each context holds its own dot; neither version has seen the other.
        ctx = {e.node: e.stamp for e in v.context.entries}
        assert ctx[v.dot.node] == v.dot.stamp
        others = [w for w in progress if w is not v]
        assert all(ctx.get(w.dot.node, 0) < w.dot.stamp for w in others)
        assert v.value.HasField("registered_at") and v.value.deadlines.HasField("answer_by")
    assert sorted(v.value for v in t.assignee) == ["op-petrova", "op-sidorov"]
    assert t.priority[0].value == pb.PRIORITY_NORMAL
    assert t.topic[0].value.topic == "child-benefits"
    assert t.topic[0].value.support_measure == "single-allowance"
    assert t.owner[0].value == "irk-main"

    assert len(t.notes) == 2
    assert {n.visibility for n in t.notes} == {pb.NOTE_VISIBILITY_SHARED, pb.NOTE_VISIBILITY_INTERNAL}
    assert all(n.text.startswith("заметка") and len(n.id) == 16 for n in t.notes)
    assert [n.id for n in t.notes] == sorted(n.id for n in t.notes)
    assert len(t.history) == 2
    assert {(e.field, e.old_value, e.new_value) for e in t.history} == {
        ("status", "REGISTERED", "IN_WORK"), ("status", "REGISTERED", "DEFERRED")}

    # A plain ticket: absent optionals stay absent.
    p = batch.changes[1].ticket
    assert p.id == ulid_bytes(BASE_TIME, 0x38, 0x418)
    assert p.header[0].value.channel == pb.CHANNEL_WEB
    assert p.header[0].value.legal_regime == pb.LEGAL_REGIME_CONSULTATION
    assert p.progress[0].value.status == pb.TICKET_STATUS_NEW
    assert not p.progress[0].value.HasField("registered_at")
    assert not p.citizen[0].HasField("value")
    assert p.assignee[0].HasField("value") and p.assignee[0].value == "op-ivanova"
    assert p.owner[0].value == "irk-office-1" and not p.notes and not p.history

    hb = frames[2].heartbeat
    assert hb.source_last_sequence == 3
    assert (hb.source_stamp >> 16, hb.source_stamp & 0xFFFF) == (BASE_TIME + 5000, 1)

    empty = frames[3].batch
    assert not empty.changes and empty.through_sequence == 5

    err = frames[4].error
    assert err.code == pb.StreamError.SHUTTING_DOWN
    assert err.message == "node irk-main is stopping"
    return frames


def test_python_decodes_committed_sample(pb):
    check_stream(pb, SAMPLE.read_bytes())


def test_python_decodes_fresh_swift_output(pb, tmp_path):
    """The Swift code under test writes the sample now; Python decodes it."""
    swift = shutil.which(os.environ.get("SWIFT", "swift"))
    tests_built = list((REPO / ".build").glob("*/debug/ekcPackageTests.xctest")) or \
        list((REPO / ".build").glob("debug/ekcPackageTests.xctest"))
    if not swift or not tests_built:
        pytest.skip("Swift test build not present (run `swift build --build-tests` first)")
    out = tmp_path / "fresh.frames"
    r = subprocess.run([swift, "test", "--skip-build", "--filter", "WireSampleTests"],
                       cwd=REPO, env={**os.environ, "EKC_WIRE_SAMPLE": str(out)},
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert out.exists(), "the Swift sample writer did not run"
    data = out.read_bytes()
    check_stream(pb, data)
    assert data == SAMPLE.read_bytes()


def test_python_encoded_request_is_well_formed(pb):
    """A PullRequest as a Python puller would send it: fields where the spec puts them."""
    req = pb.PullRequest(protocol_version=1, max_batch=256,
                         checkpoint=pb.Checkpoint(source_store_id=bytes(16), sequence=300))
    raw = req.SerializeToString()
    # field 1 varint 1; field 2 (len) checkpoint; field 3 varint 256
    assert raw[:2] == b"\x08\x01" and raw[2] == 0x12 and raw.endswith(b"\x18\x80\x02")
    back = pb.PullRequest()
    back.ParseFromString(raw)
    assert back == req
