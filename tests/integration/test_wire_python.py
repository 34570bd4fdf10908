"""An independent decoder reads our replication stream.

`protoc --python_out` compiles proto/ekc/replication/v2/*.proto (the `pb2` fixture),
Python's protobuf library (not swift-protobuf) parses the frames, each record's
registers and children, and each register's and child's value message; a
length-delimited reader written here splits the frames. Two streams are read:

* proto/testdata/sample.frames, committed: the wire format of v2 as it was fixed;
* a fresh stream written by the Swift code under test (the WireSampleTests suite, run
  with EKC_WIRE_SAMPLE=path), so the check follows the code, not only the file.

Both must decode to the expected typed values, and Python's re-encoding of every frame
(and of every value message inside) must give back the very bytes Swift wrote: both
sides encode canonically. Needs: protoc (Debian's protobuf-compiler) and Python's
protobuf package; the fresh stream needs a Swift test build (`swift build
--build-tests`; EKC_SWIFT_SCRATCH names its scratch directory, `.build` by default).
"""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "proto" / "testdata" / "sample.frames"
# testNow of Tests/TestSupport/Federation.swift: 2026-11-20 12:00 in Irkutsk.
BASE_TIME = 1_795_132_800_000 + 4 * 3_600_000

# The value message of each ticket register (ticket.proto) and of each collection's children.
REGISTER_MESSAGES = {1: "TicketHeader", 2: "Statement", 3: "CitizenValue", 4: "Progress", 5: "AssigneeValue",
                     6: "PriorityValue", 7: "Topic", 8: "OwnerValue", 9: "CitizenName", 10: "CitizenSnils",
                     11: "CitizenPhone"}
CHILD_MESSAGES = {1: "Note", 2: "HistoryEvent"}


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


def first_difference(a: bytes, b: bytes) -> str:
    i = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return f"{len(a)} vs {len(b)} bytes, first difference at {i}: {a[max(0, i - 8):i + 8].hex()} vs {b[max(0, i - 8):i + 8].hex()}"


def split_fields(data):
    """The top-level fields of a message: (number, wire type, body for length-delimited, raw bytes)."""
    fields, pos = [], 0
    while pos < len(data):
        start = pos
        tag, pos = read_varint(data, pos)
        number, wire = tag >> 3, tag & 7
        body = None
        if wire == 0:
            _, pos = read_varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 2:
            length, pos = read_varint(data, pos)
            body = data[pos:pos + length]
            pos += length
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"wire type {wire}")
        fields.append((number, wire, body, data[start:pos]))
    return fields


def explain(msg, raw, path=""):
    """Where the bytes Swift wrote (`raw`) and Python's encoding of the message it parsed
    from them first differ, as a field path; None if they do not."""
    from google.protobuf.message import Message
    ours, theirs = split_fields(raw), split_fields(msg.SerializeToString(deterministic=True))
    seen = {}
    for i in range(max(len(ours), len(theirs))):
        a = ours[i] if i < len(ours) else None
        b = theirs[i] if i < len(theirs) else None
        number = (a or b)[0]
        field = msg.DESCRIPTOR.fields_by_number.get(number)
        name = field.name if field else str(number)
        k = seen.get(number, 0)
        seen[number] = k + 1
        if a and b and a[3] == b[3]:
            continue
        if a and b and a[0] == b[0] and a[1] == 2 and field is not None and field.message_type is not None:
            value = getattr(msg, field.name)
            sub = value if isinstance(value, Message) else value[k]
            inner = explain(sub, a[2], f"{path}.{name}[{k}]")
            if inner:
                return inner
        return (f"{path or msg.DESCRIPTOR.name}: field {name}: Swift wrote {a[3].hex() if a else 'nothing'}, "
                f"Python writes {b[3].hex() if b else 'nothing'}")
    return None


class Record:
    """A RecordDelta of a ticket with its registers' and children's value messages parsed."""

    def __init__(self, pb2, delta):
        assert delta.kind == pb2.RECORD_KIND_TICKET
        self.delta = delta
        self.id = delta.id
        self.registers = {}
        for r in delta.registers:
            assert r.number not in self.registers, f"register {r.number} twice"
            versions = []
            for v in r.versions:
                value = getattr(pb2, REGISTER_MESSAGES[r.number])()
                value.ParseFromString(v.value)
                assert value.SerializeToString(deterministic=True) == v.value, \
                    f"register {r.number}: {first_difference(value.SerializeToString(deterministic=True), v.value)}"
                versions.append((v.dot.node, v.dot.stamp, value))
            self.registers[r.number] = (versions, {e.node: e.stamp for e in r.seen.entries})
        self.children = []
        for c in delta.children:
            value = getattr(pb2, CHILD_MESSAGES[c.collection])()
            value.ParseFromString(c.value)
            assert value.SerializeToString(deterministic=True) == c.value
            self.children.append((c.collection, c.id, c.dot.node, c.dot.stamp, value))
        keys = [(c.collection, c.id) for c in delta.children]
        assert keys == sorted(keys) and len(set(keys)) == len(keys), "children by (collection, id), once each"

    def value(self, number):
        """The only version's value of a register."""
        versions, _ = self.registers[number]
        assert len(versions) == 1, versions
        return versions[0][2]

    def of(self, collection):
        return [c for c in self.children if c[0] == collection]


def check_stream(pb2, data):
    bodies = split_frames(data)
    frames = []
    for body in bodies:
        f = pb2.Frame()
        f.ParseFromString(body)
        frames.append(f)
    assert [f.WhichOneof("kind") for f in frames] == ["header", "batch", "heartbeat", "batch", "error"]

    header = frames[0].header
    assert header.protocol_version == 2
    assert header.node == "irk-main"
    assert header.store_id == bytes(range(0x10, 0x20))
    assert header.resume_after == 0 and header.checkpoint_reset and header.last_sequence == 3

    batch = frames[1].batch
    assert [c.sequence for c in batch.changes] == [2, 3]
    assert batch.through_sequence == 3 and batch.source_last_sequence == 3

    # The ticket edited on both sides of a partition: status and assignee conflict.
    t = Record(pb2, batch.changes[0].record)
    assert t.id == ulid_bytes(BASE_TIME, 0x38, 0x417)
    assert sorted(t.registers) == list(range(1, 12))
    assert [r.number for r in t.delta.registers] == list(range(1, 12)), "registers by ascending number"
    h = t.value(pb2.TICKET_REGISTER_HEADER)
    assert (h.number.region, h.number.year, h.number.sequence) == ("38", 2026, 417)
    assert h.origin_node == "irk-main" and h.received_at == BASE_TIME
    assert h.channel == pb2.CHANNEL_PHONE and h.legal_regime == pb2.LEGAL_REGIME_APPEAL_59FZ
    assert t.value(pb2.TICKET_REGISTER_STATEMENT).subject == "Единое пособие"
    # The reference in register 3; each other detail in a register of its own (9–11),
    # so that a transfer's scope is a set of whole registers.
    c = t.value(pb2.TICKET_REGISTER_CITIZEN).citizen
    assert c.ref == "CIT-7F3K2" and not c.HasField("name") and not c.HasField("snils") and not c.HasField("phone")
    assert t.value(pb2.TICKET_REGISTER_CITIZEN_NAME).name == "Иванова Мария Петровна"
    assert t.value(pb2.TICKET_REGISTER_CITIZEN_SNILS).snils == "11223344595"
    assert t.value(pb2.TICKET_REGISTER_CITIZEN_PHONE).phone == "+79140000067"

    progress, seen = t.registers[pb2.TICKET_REGISTER_PROGRESS]
    assert [(node, stamp >> 16) for node, stamp, _ in progress] == [("irk-main", BASE_TIME + 100),
                                                                     ("irk-office-1", BASE_TIME + 120)]
    assert [v.status for _, _, v in progress] == [pb2.TICKET_STATUS_IN_WORK, pb2.TICKET_STATUS_DEFERRED]
    # The register's context holds both writes; neither write had seen the other.
    assert seen == {node: stamp for node, stamp, _ in progress}
    for _, _, v in progress:
        assert v.HasField("registered_at") and v.HasField("deadlines") and v.deadlines.HasField("answer_by")
    assignee, _ = t.registers[pb2.TICKET_REGISTER_ASSIGNEE]
    assert [v.operator for _, _, v in assignee] == ["op-petrova", "op-sidorov"]
    assert t.value(pb2.TICKET_REGISTER_PRIORITY).priority == pb2.PRIORITY_NORMAL
    topic = t.value(pb2.TICKET_REGISTER_TOPIC)
    assert topic.topic == "child-benefits" and topic.support_measure == "single-allowance"
    assert t.value(pb2.TICKET_REGISTER_OWNER).node == "irk-main"

    notes = t.of(pb2.TICKET_COLLECTION_NOTES)
    assert len(notes) == 2
    assert {(node, n.visibility) for _, _, node, _, n in notes} == {("irk-main", pb2.NOTE_VISIBILITY_INTERNAL),
                                                                   ("irk-office-1", pb2.NOTE_VISIBILITY_SHARED)}
    assert all(n.text.startswith("заметка") and len(cid) == 16 for _, cid, _, _, n in notes)
    history = t.of(pb2.TICKET_COLLECTION_HISTORY)
    assert {(e.field, e.old_value if e.HasField("old_value") else None, e.new_value) for *_, e in history} == {
        ("ticket", None, "created 38-2026-000417 as REGISTERED"),
        ("status", "REGISTERED", "IN_WORK"), ("status", "REGISTERED", "DEFERRED")}
    assert all(e.at == stamp >> 16 for _, _, _, stamp, e in history)

    # A plain ticket: absent optionals stay absent.
    p = Record(pb2, batch.changes[1].record)
    assert p.id == ulid_bytes(BASE_TIME, 0x38, 0x418)
    assert all(len(p.registers[n][0]) == 1 and p.registers[n][0][0][:2] == ("irk-office-1", (BASE_TIME + 1000) << 16)
               for n in p.registers)
    ph = p.value(pb2.TICKET_REGISTER_HEADER)
    assert ph.channel == pb2.CHANNEL_WEB and ph.legal_regime == pb2.LEGAL_REGIME_CONSULTATION
    assert ph.number.sequence == 418 and ph.origin_node == "irk-office-1"
    pp = p.value(pb2.TICKET_REGISTER_PROGRESS)
    assert pp.status == pb2.TICKET_STATUS_NEW and not pp.HasField("registered_at")
    assert not pp.deadlines.HasField("answer_by") and pp.deadlines.register_by == BASE_TIME + 1000 + 3 * 86_400_000
    assert not p.value(pb2.TICKET_REGISTER_CITIZEN).HasField("citizen")
    assert p.value(pb2.TICKET_REGISTER_ASSIGNEE).operator == "op-ivanova"
    assert not p.value(pb2.TICKET_REGISTER_TOPIC).HasField("support_measure")
    assert p.value(pb2.TICKET_REGISTER_OWNER).node == "irk-office-1" and not p.children

    hb = frames[2].heartbeat
    assert hb.source_last_sequence == 3
    assert (hb.source_stamp >> 16, hb.source_stamp & 0xFFFF) == (BASE_TIME + 5000, 1)

    empty = frames[3].batch
    assert not empty.changes and empty.through_sequence == 5 and empty.source_last_sequence == 5

    err = frames[4].error
    assert err.code == pb2.StreamError.SHUTTING_DOWN
    assert err.message == "node irk-main is stopping"

    # Python re-encodes each frame to the very bytes Swift wrote.
    differing = [f"frame {i} ({f.WhichOneof('kind')}, {first_difference(f.SerializeToString(deterministic=True), body)}): "
                 f"{explain(f, body)}"
                 for i, (f, body) in enumerate(zip(frames, bodies)) if f.SerializeToString(deterministic=True) != body]
    assert not differing, "; ".join(differing)
    return frames


def test_python_decodes_committed_sample(pb2):
    check_stream(pb2, SAMPLE.read_bytes())


def test_python_decodes_fresh_swift_output(pb2, tmp_path):
    """The Swift code under test writes the sample now; Python decodes it."""
    swift = shutil.which(os.environ.get("SWIFT", "swift"))
    scratch = REPO / os.environ.get("EKC_SWIFT_SCRATCH", ".build")
    tests_built = list(scratch.glob("*/debug/ekcPackageTests.xctest")) or list(scratch.glob("debug/ekcPackageTests.xctest"))
    if not swift or not tests_built:
        pytest.skip(f"Swift test build not present in {scratch} (run `swift build --build-tests` first)")
    out = tmp_path / "fresh.frames"
    r = subprocess.run([swift, "test", "--skip-build", "--scratch-path", str(scratch),
                        "--filter", "WireSampleTests/writeSampleWhenAsked"],
                       cwd=REPO, env={**os.environ, "EKC_WIRE_SAMPLE": str(out)},
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert out.exists(), "the Swift sample writer did not run"
    data = out.read_bytes()
    assert data == SAMPLE.read_bytes(), "the Swift code now writes another sample than the committed one"
    check_stream(pb2, data)


def test_python_encoded_request_is_well_formed(pb2):
    """A PullRequest as a Python puller would send it: fields where the spec puts them."""
    req = pb2.PullRequest(protocol_version=2, max_batch=256,
                          checkpoint=pb2.Checkpoint(source_store_id=bytes(16), sequence=300))
    raw = req.SerializeToString()
    # field 1 varint 2; field 2 (len) checkpoint; field 3 varint 256
    assert raw[:2] == b"\x08\x02" and raw[2] == 0x12 and raw.endswith(b"\x18\x80\x02")
    back = pb2.PullRequest()
    back.ParseFromString(raw)
    assert back == req
