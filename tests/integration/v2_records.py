"""Protocol v2 records built in Python (proto/ekc/replication/v2): ULIDs, HLC stamps,
registers, and a valid ticket `RecordDelta` as a node of region 38 would send it.

`pb2` is the namespace of the `pb2` fixture (conftest.py): the classes of
replication.proto and ticket.proto together.

A valid ticket (`TicketFactory.ticket`) has all eight registers, each with one version
whose dot is (the factory's node, one fresh stamp) and whose value is the register's
value message serialised, a `seen` vector of exactly that dot, and one HistoryEvent
child written by the same dot. Its readable number is numbered in the factory node's
series (series × 10,000,000 + n, as CaseStore numbers), so that it never collides
with a number a real node of the region issues.
"""
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
DAY_MS = 86_400_000
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1


# --- ids ---------------------------------------------------------------------------------

def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_ulid(ms: int = None) -> bytes:
    """A ULID as 16 bytes, big-endian: 48 bits of Unix milliseconds, 80 random bits."""
    ms = now_ms() if ms is None else ms
    return (ms & 0xFFFF_FFFF_FFFF).to_bytes(6, "big") + os.urandom(10)


def ulid_str(b: bytes) -> str:
    """16 bytes → the 26-character Crockford base32 text the operator API shows."""
    assert len(b) == 16, len(b)
    n = int.from_bytes(b, "big")
    return "".join(CROCKFORD[(n >> (5 * (25 - i))) & 31] for i in range(26))


def ulid_bytes(s: str) -> bytes:
    n = 0
    for ch in s.upper():
        n = n * 32 + CROCKFORD.index(ch)
    return n.to_bytes(16, "big")


# --- stamps ------------------------------------------------------------------------------

class Stamps:
    """A hybrid logical clock of one node: stamps are (Unix ms << 16) + logical counter,
    strictly increasing, so every call names a new write."""

    def __init__(self):
        self._last = 0
        self._lock = threading.Lock()

    def next(self, gap: int = 1) -> int:
        """A fresh stamp; the `gap - 1` stamps below it are left unused (a caller may
        give them to writes of its own, e.g. s-5 and s-6 of a crafted history)."""
        with self._lock:
            self._last = max(now_ms() << 16, self._last + gap)
            return self._last


def stamp_at(ms: int, logical: int = 0) -> int:
    return (ms << 16) | logical


def stamp_millis(stamp: int) -> int:
    return stamp >> 16


# --- generic pieces ----------------------------------------------------------------------

def vector(pb2, entries):
    """VersionVector from {node: stamp} or [(node, stamp)], sorted by node id (the
    canonical order; pass `sort=False` to `vector_raw` to keep a hostile order)."""
    items = sorted(entries.items() if isinstance(entries, dict) else entries)
    return vector_raw(pb2, items)


def vector_raw(pb2, items):
    vv = pb2.VersionVector()
    for node, stamp in items:
        vv.entries.add(node=node, stamp=stamp)
    return vv


def register(pb2, number: int, versions, seen=None):
    """Register `number` with `versions` = [(node, stamp, value bytes)] in the order given,
    and `seen` = {node: stamp} (default: every version's dot, nothing more)."""
    r = pb2.Register(number=number)
    for node, stamp, value in versions:
        r.versions.add(dot=pb2.Dot(node=node, stamp=stamp), value=value)
    if seen is None:
        seen = {}
        for node, stamp, _ in versions:
            seen[node] = max(stamp, seen.get(node, 0))
    r.seen.CopyFrom(vector(pb2, seen))
    return r


def find_register(delta, number: int):
    return next(r for r in delta.registers if r.number == number)


# --- frames --------------------------------------------------------------------------------

def varint(n: int) -> bytes:
    assert n >= 0
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def delimited(body: bytes) -> bytes:
    """protobuf's writeDelimitedTo framing: varint length, then the bytes."""
    return varint(len(body)) + body


def read_varint(data, pos: int):
    value = shift = 0
    for i in range(10):
        if pos + i >= len(data):
            return None, pos  # incomplete
        b = data[pos + i]
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos + i + 1
        shift += 7
    raise ValueError("varint longer than 10 bytes")


def split_delimited(data):
    """(complete bodies, bytes consumed) of a length-delimited stream that may end inside
    a frame."""
    bodies, pos = [], 0
    while pos < len(data):
        length, p = read_varint(data, pos)
        if length is None or p + length > len(data):
            break
        bodies.append(bytes(data[p:p + length]))
        pos = p + length
    return bodies, pos


# --- tickets -------------------------------------------------------------------------------

TICKET_REGISTERS = {  # number -> (name, value message class name)
    1: ("header", "TicketHeader"),
    2: ("statement", "Statement"),
    3: ("citizen", "CitizenValue"),
    4: ("progress", "Progress"),
    5: ("assignee", "AssigneeValue"),
    6: ("priority", "PriorityValue"),
    7: ("topic", "Topic"),
    8: ("owner", "OwnerValue"),
}


@dataclass
class BuiltTicket:
    """A ticket RecordDelta and what a test needs to find it on a node."""
    delta: object               # pb2.RecordDelta
    id: bytes                   # 16 bytes
    number: str                 # "38-2026-90000007", as the API shows it
    stamp: int                  # the one dot stamp of every register and the history child
    node: str
    values: dict                # register number -> value message (as serialised)
    history_id: bytes
    history: object             # pb2.HistoryEvent
    subject: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def id_text(self) -> str:
        return ulid_str(self.id)

    def bytes(self) -> bytes:
        return self.delta.SerializeToString()


class TicketFactory:
    """Valid ticket records written by `node` (origin and owner), region `region`,
    numbering series `series` of that region; times in the region's local year
    (`utc_offset_minutes`, Irkutsk: +480)."""

    def __init__(self, pb2, node: str = "irk-office-9", region: str = "38", series: int = 9,
                 utc_offset_minutes: int = 480):
        self.pb2 = pb2
        self.node = node
        self.region = region
        self.series = series
        self.utc_offset = timedelta(minutes=utc_offset_minutes)
        self.stamps = Stamps()

    def year(self, ms: int) -> int:
        return (datetime.fromtimestamp(ms / 1000, timezone.utc) + self.utc_offset).year

    def number(self, n: int, year: int):
        return self.pb2.TicketNumber(region=self.region, year=year, sequence=self.series * 10_000_000 + n)

    @staticmethod
    def number_text(num) -> str:
        return f"{num.region}-{num.year}-{num.sequence:06d}"

    def values(self, n: int, received_at: int = None) -> dict:
        """The eight value messages of a valid, freshly registered phone consultation."""
        pb2 = self.pb2
        t = now_ms() if received_at is None else received_at
        return {
            pb2.TICKET_REGISTER_HEADER: pb2.TicketHeader(
                number=self.number(n, self.year(t)), origin_node=self.node, channel=pb2.CHANNEL_PHONE,
                legal_regime=pb2.LEGAL_REGIME_CONSULTATION, received_at=t),
            pb2.TICKET_REGISTER_STATEMENT: pb2.Statement(
                subject=f"Единое пособие, обращение {n} с узла {self.node}",
                text="Когда будет решение по заявлению на единое пособие?"),
            pb2.TICKET_REGISTER_CITIZEN: pb2.CitizenValue(),  # no identified citizen
            pb2.TICKET_REGISTER_PROGRESS: pb2.Progress(
                status=pb2.TICKET_STATUS_REGISTERED, registered_at=t,
                deadlines=pb2.Deadlines(register_by=t + 3 * DAY_MS)),
            pb2.TICKET_REGISTER_ASSIGNEE: pb2.AssigneeValue(),  # unassigned
            pb2.TICKET_REGISTER_PRIORITY: pb2.PriorityValue(priority=pb2.PRIORITY_NORMAL),
            pb2.TICKET_REGISTER_TOPIC: pb2.Topic(topic="child-benefits"),
            pb2.TICKET_REGISTER_OWNER: pb2.OwnerValue(node=self.node),
        }

    def ticket(self, n: int, *, mutate=None, stamp: int = None, record_id: bytes = None,
               raw_values: dict = None) -> BuiltTicket:
        """A valid ticket delta numbered n (in this node's series). `mutate(values)` may
        change the value messages before they are serialised; `raw_values` {register
        number: bytes} replaces serialised values outright (for bytes no message makes)."""
        pb2 = self.pb2
        stamp = self.stamps.next() if stamp is None else stamp
        record_id = new_ulid() if record_id is None else record_id
        values = self.values(n, received_at=stamp_millis(stamp))
        if mutate:
            mutate(values)
        delta = pb2.RecordDelta(kind=pb2.RECORD_KIND_TICKET, id=record_id)
        for number in sorted(values):
            value = (raw_values or {}).get(number)
            if value is None:
                value = values[number].SerializeToString()
            delta.registers.append(register(pb2, number, [(self.node, stamp, value)]))
        header = values[pb2.TICKET_REGISTER_HEADER]
        number_text = self.number_text(header.number)
        history = pb2.HistoryEvent(actor=pb2.Actor(user="op-fake", role="operator"), at=stamp_millis(stamp),
                                   field="ticket", new_value=f"created {number_text} as REGISTERED")
        history_id = new_ulid(stamp_millis(stamp))
        delta.children.add(collection=pb2.TICKET_COLLECTION_HISTORY, id=history_id,
                           dot=pb2.Dot(node=self.node, stamp=stamp), value=history.SerializeToString())
        return BuiltTicket(delta=delta, id=record_id, number=number_text, stamp=stamp, node=self.node,
                           values=values, history_id=history_id, history=history,
                           subject=values[pb2.TICKET_REGISTER_STATEMENT].subject)
