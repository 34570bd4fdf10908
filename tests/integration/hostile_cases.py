"""The hostile records of test_hostile_peer.py, one `Case` each, and the scenario that
surrounds one: [valid ticket A, the hostile record, valid ticket B] at sequences 1, 2, 3
of one ChangeBatch served by the fake peer irk-office-9 (region 38).

Every record is a valid ticket (v2_records.TicketFactory), or a delta of ticket A, with
one thing made wrong, so that the refusal can only be for that thing, and each case names the one
reason the node must give (its `/v1/replication` link `rejected.byReason` key and the
`reason` label of `ekc_replication_rejected_records_total`):

  malformed             the bytes are not the protobuf message they should be: a value that
                        does not parse, a string that is not UTF-8
  invalid_value         a well-formed message whose field breaks a rule: a year or instant out
                        of range, an unknown enum value, an id that is not 16 bytes, a zero
                        stamp, a string that is not a node id, one dot twice in a register
  too_large             over a byte budget or a count bound (checked before anything costlier)
  unknown_node          a well-formed node id the topology does not know
  impossible_causality  a context that claims what no history can produce
  stamp_too_far_ahead   a stamp beyond the allowed clock skew
  not_authorised        the author's organisation may not write that register
  cannot_speak_for      the sending node may not relay that author's writes
  equivocation          a dot, or a child id, seen before with other content
  unknown_kind          a record kind, register or collection the node does not know

(These are the meanings RefusalReason gives them in Sources/Replication/Record/
RecordSchema.swift.)

Admission refusals (stamp_too_far_ahead, not_authorised, cannot_speak_for) may be judged
per register and per child rather than per record: in those cases every part of the
hostile record carries the fault, so that nothing of it may be stored either way,
except `stamp_far_ahead_in_one_register`, which holds the node to refusing the WHOLE
record for one bad register (as the brief for this suite asks).

Topology of the scenario (test_hostile_peer.py): irk-main and irk-office-1 (real nodes),
irk-office-9 (the fake peer), irk-office-8 (region 38, never started: a known author
whose own clock no running node has), sfr-federal (region "sfr", never started: a known
node of another organisation).
"""
from dataclasses import dataclass

from v2_records import (INT64_MAX, INT64_MIN, BuiltTicket, TicketFactory, find_register, new_ulid, now_ms,
                        register, stamp_at)

FAKE = "irk-office-9"
QUIET_38 = "irk-office-8"   # region 38, in the topology, never started
OTHER_ORG = "sfr-federal"   # region "sfr", in the topology, never started
REASONS = ("malformed", "invalid_value", "too_large", "unknown_node", "impossible_causality",
           "stamp_too_far_ahead", "not_authorised", "cannot_speak_for", "equivocation", "unknown_kind")


@dataclass
class Hostile:
    record: bytes                 # the record's bytes, exactly as sent
    id: bytes                     # 16-byte id of the ticket it names (looked up on the node)
    number: str = None            # its readable number, when it has a valid one
    b: BuiltTicket = None         # a replacement for ticket B, when the case needs one
    target_a: bool = False        # the record is a delta of ticket A, which must stay as it was


@dataclass
class Case:
    name: str
    reason: str
    about: str
    build: object                 # (Ctx) -> Hostile
    id_shown: bool = True         # rejected.recent[].id is the record's ULID text
    detail: str = None            # the end of rejected.recent[].detail: the field and the rule, as the API says them


@dataclass
class Ctx:
    pb2: object
    f: TicketFactory
    a: BuiltTicket


@dataclass
class Scenario:
    case: Case
    reason: str
    a: BuiltTicket
    b: BuiltTicket
    hostile: Hostile
    changes: list                 # [(1, A), (2, hostile bytes), (3, B)]


def build_scenario(pb2, case: Case, node: str = FAKE) -> Scenario:
    f = TicketFactory(pb2, node=node, region="38", series=9)
    a = f.ticket(1)
    h = case.build(Ctx(pb2, f, a))
    b = h.b or f.ticket(3)
    assert case.reason in REASONS, case.reason
    return Scenario(case, case.reason, a, b, h, [(1, a), (2, h.record), (3, b)])


# --- helpers -----------------------------------------------------------------------------------

def _ticket(ctx: Ctx, mutate=None, **kw) -> BuiltTicket:
    return ctx.f.ticket(2, mutate=mutate, **kw)


def _hostile(t: BuiltTicket, number: bool = True) -> Hostile:
    return Hostile(record=t.bytes(), id=t.id, number=t.number if number else None)


def _replace_register(t: BuiltTicket, reg):
    """Puts `reg` in place of the register of the same number (or appends it)."""
    for i, r in enumerate(t.delta.registers):
        if r.number == reg.number:
            t.delta.registers[i].CopyFrom(reg)
            return t
    t.delta.registers.append(reg)
    return t


# --- the cases ---------------------------------------------------------------------------------

def negative_year(ctx):
    t = _ticket(ctx, lambda v: setattr(v[ctx.pb2.TICKET_REGISTER_HEADER].number, "year", -2026))
    return _hostile(t, number=False)


def received_at_int64_min(ctx):
    return _hostile(_ticket(ctx, lambda v: setattr(v[ctx.pb2.TICKET_REGISTER_HEADER], "received_at", INT64_MIN)))


def deadline_int64_max(ctx):
    return _hostile(_ticket(ctx, lambda v: setattr(v[ctx.pb2.TICKET_REGISTER_PROGRESS].deadlines,
                                                   "register_by", INT64_MAX)))


def register_20000_versions(ctx):
    """The assignee register holds 20,000 versions (stamps s-20000 .. s-1, unused by any
    other write), each a different operator."""
    pb2, f = ctx.pb2, ctx.f
    s = f.stamps.next(gap=20_001)
    t = f.ticket(2, stamp=s)
    versions = [(FAKE, s - 20_000 + i, pb2.AssigneeValue(operator=f"op-{i:05d}").SerializeToString())
                for i in range(20_000)]
    return _hostile(_replace_register(t, register(pb2, pb2.TICKET_REGISTER_ASSIGNEE, versions)))


def seen_10001_entries(ctx):
    """The progress register's `seen` has 10,001 entries: the author, and 10,000 more nodes."""
    pb2 = ctx.pb2
    t = _ticket(ctx)
    reg = find_register(t.delta, pb2.TICKET_REGISTER_PROGRESS)
    seen = {FAKE: t.stamp}
    seen.update({f"node-{i:05d}": t.stamp for i in range(10_000)})
    new = register(pb2, reg.number, [(FAKE, t.stamp, reg.versions[0].value)], seen)
    assert len(new.seen.entries) == 10_001
    return _hostile(_replace_register(t, new))


def assignee_600_bytes(ctx):
    op = "op-" + "x" * 597
    assert len(op.encode()) == 600
    return _hostile(_ticket(ctx, lambda v: setattr(v[ctx.pb2.TICKET_REGISTER_ASSIGNEE], "operator", op)))


def impossible_causality(ctx):
    """v1's "two versions whose contexts each claim to have seen the other", in v2's one
    context per register. a = irk-office-9, b = irk-office-8 (region 38, never running),
    stamps a@s+5 < b@s+6:

    * the hostile record's progress register holds only a@s+5, and its `seen` claims
      b@s+6: a write later than any version the register holds, which nothing it holds
      superseded. Impossible: refused.
    * separately, ticket B's progress register holds b@s+6 with `seen` {a: s+5, b: s+6}:
      b@6 has seen a@5 and superseded it. Ordinary: B must be accepted as usual.
    """
    pb2, f = ctx.pb2, ctx.f
    s = f.stamps.next(gap=8) - 7  # s .. s+6 are this case's own
    t = f.ticket(2, stamp=s)
    progress = find_register(t.delta, pb2.TICKET_REGISTER_PROGRESS).versions[0].value
    _replace_register(t, register(pb2, pb2.TICKET_REGISTER_PROGRESS, [(FAKE, s + 5, progress)],
                                  {FAKE: s + 5, QUIET_38: s + 6}))
    sb = f.stamps.next(gap=8) - 7
    b = f.ticket(3, stamp=sb)
    progress_b = find_register(b.delta, pb2.TICKET_REGISTER_PROGRESS).versions[0].value
    _replace_register(b, register(pb2, pb2.TICKET_REGISTER_PROGRESS, [(QUIET_38, sb + 6, progress_b)],
                                  {FAKE: sb + 5, QUIET_38: sb + 6}))
    h = _hostile(t)
    h.b = b
    return h


def statement_15_mib(ctx):
    text = "Ж" * (15 * 1024 * 1024 // 2)
    return _hostile(_ticket(ctx, lambda v: setattr(v[ctx.pb2.TICKET_REGISTER_STATEMENT], "text", text)))


def unknown_record_kind(ctx):
    t = _ticket(ctx)
    t.delta.kind = 7  # RecordKind has 0 and 1
    return _hostile(t)


def id_17_bytes(ctx):
    t = _ticket(ctx)
    t.delta.id = t.id + b"\x01"
    return _hostile(t)  # looked up by its first 16 bytes: must not exist either


def unknown_node_in_dot(ctx):
    """The priority register's version is by irk-office-77: a well-formed id no topology names."""
    pb2 = ctx.pb2
    t = _ticket(ctx)
    value = find_register(t.delta, pb2.TICKET_REGISTER_PRIORITY).versions[0].value
    return _hostile(_replace_register(t, register(pb2, pb2.TICKET_REGISTER_PRIORITY,
                                                  [("irk-office-77", t.stamp, value)])))


def stamp_far_in_the_future(ctx):
    """A ticket written a week from now: every register and the history event carry a
    stamp 7 days ahead (the skew bound is 15 minutes)."""
    return _hostile(_ticket(ctx, stamp=stamp_at(now_ms() + 7 * 86_400_000)))


def stamp_far_ahead_in_one_register(ctx):
    """Only the topic register's version is stamped a week ahead: the whole record must be
    refused, not the ticket stored without that register."""
    pb2 = ctx.pb2
    t = _ticket(ctx)
    ahead = stamp_at(now_ms() + 7 * 86_400_000)
    value = find_register(t.delta, pb2.TICKET_REGISTER_TOPIC).versions[0].value
    return _hostile(_replace_register(t, register(pb2, pb2.TICKET_REGISTER_TOPIC, [(FAKE, ahead, value)])))


def same_dot_other_value(ctx):
    """A delta of ticket A: its topic register again, with A's own dot but another value."""
    pb2, a = ctx.pb2, ctx.a
    d = pb2.RecordDelta(kind=pb2.RECORD_KIND_TICKET, id=a.id)
    d.registers.append(register(pb2, pb2.TICKET_REGISTER_TOPIC,
                                [(FAKE, a.stamp, pb2.Topic(topic="pension-payments").SerializeToString())]))
    return Hostile(record=d.SerializeToString(), id=a.id, number=a.number, target_a=True)


def unknown_enum_value(ctx):
    return _hostile(_ticket(ctx, lambda v: setattr(v[ctx.pb2.TICKET_REGISTER_HEADER], "channel", 99)))


def invalid_utf8(ctx):
    """The statement's text holds bytes that are not UTF-8 (written into the serialised
    Statement by hand: no protobuf library writes them)."""
    pb2 = ctx.pb2
    placeholder = "PLACEHOLDER!"
    bad = b"\xd0\x96\xff\xfe\xc3\x28\xe2\x82\x28\xf0\x28\x8c"  # Ж, then five invalid sequences
    assert len(bad) == len(placeholder)
    st = pb2.Statement(subject="Обращение с битой кодировкой", text=placeholder).SerializeToString()
    raw = st.replace(placeholder.encode(), bad)
    return _hostile(ctx.f.ticket(2, raw_values={pb2.TICKET_REGISTER_STATEMENT: raw}))


def child_same_id_other_content(ctx):
    """A delta of ticket A with a history event that has the id of A's history event,
    another dot and other content."""
    pb2, a, f = ctx.pb2, ctx.a, ctx.f
    d = pb2.RecordDelta(kind=pb2.RECORD_KIND_TICKET, id=a.id)
    forged = pb2.HistoryEvent(actor=pb2.Actor(user="op-forger", role="operator"), at=now_ms(), field="ticket",
                              new_value="изменено задним числом")
    d.children.add(collection=pb2.TICKET_COLLECTION_HISTORY, id=a.history_id,
                   dot=pb2.Dot(node=FAKE, stamp=f.stamps.next()), value=forged.SerializeToString())
    return Hostile(record=d.SerializeToString(), id=a.id, number=a.number, target_a=True)


def zero_stamp(ctx):
    """The priority register's version has stamp 0 (and an empty `seen`, which covers it,
    so that the zero stamp is the only fault)."""
    pb2 = ctx.pb2
    t = _ticket(ctx)
    value = find_register(t.delta, pb2.TICKET_REGISTER_PRIORITY).versions[0].value
    return _hostile(_replace_register(t, register(pb2, pb2.TICKET_REGISTER_PRIORITY, [(FAKE, 0, value)], {})))


def garbage_value(ctx):
    """The progress register's value is not a Progress: field 3 claims 127 bytes, 3 follow."""
    pb2 = ctx.pb2
    return _hostile(ctx.f.ticket(2, raw_values={pb2.TICKET_REGISTER_PROGRESS: b"\x1a\x7f\x00\x00\x00"}))


def node_id_not_a_node_id(ctx):
    """The owner register's version is by "IRK_Office-9": upper case and '_' (not a node id)."""
    pb2 = ctx.pb2
    t = _ticket(ctx)
    value = find_register(t.delta, pb2.TICKET_REGISTER_OWNER).versions[0].value
    return _hostile(_replace_register(t, register(pb2, pb2.TICKET_REGISTER_OWNER, [("IRK_Office-9", t.stamp, value)])))


def dot_twice_in_a_register(ctx):
    pb2 = ctx.pb2
    t = _ticket(ctx)
    value = find_register(t.delta, pb2.TICKET_REGISTER_PRIORITY).versions[0].value
    return _hostile(_replace_register(t, register(pb2, pb2.TICKET_REGISTER_PRIORITY,
                                                  [(FAKE, t.stamp, value), (FAKE, t.stamp, value)])))


def unknown_register_number(ctx):
    pb2 = ctx.pb2
    t = _ticket(ctx)
    t.delta.registers.append(register(pb2, 99, [(FAKE, t.stamp, b"\x08\x01")]))
    return _hostile(t)


def origin_in_another_organisation(ctx):
    """The ticket names sfr-federal (a fund) as its origin and its owner, but irk-office-9
    (region 38) wrote every register and the history event: neither organisation that
    may write them did."""
    pb2 = ctx.pb2

    def claim_fund(v):
        v[pb2.TICKET_REGISTER_HEADER].origin_node = OTHER_ORG
        v[pb2.TICKET_REGISTER_OWNER].node = OTHER_ORG
    return _hostile(_ticket(ctx, claim_fund))


def fund_write_relayed_by_own_organisation(ctx):
    """A region-38 ticket whose assignee sfr-federal (a fund that has no transfer of it)
    wrote, relayed by irk-office-9 (region 38). A node of the receiver's own
    organisation may relay another organisation's writes (that is how a fund's progress
    reaches a region's offices through its centre); the write is then judged as the
    fund's own, and the fund does not handle this ticket."""
    pb2 = ctx.pb2
    t = _ticket(ctx)
    value = find_register(t.delta, pb2.TICKET_REGISTER_ASSIGNEE).versions[0].value
    return _hostile(_replace_register(t, register(pb2, pb2.TICKET_REGISTER_ASSIGNEE, [(OTHER_ORG, t.stamp, value)])))


def note_one_byte_over_budget(ctx):
    """A note of 20,001 bytes of UTF-8 (the budget is 20,000)."""
    pb2 = ctx.pb2
    t = _ticket(ctx)
    text = "Ж" * 10_000 + "!"
    note = pb2.Note(author=pb2.Actor(user="op-fake", role="operator"), at=now_ms(),
                    visibility=pb2.NOTE_VISIBILITY_INTERNAL, text=text)
    history = list(t.delta.children)
    del t.delta.children[:]
    # Children in canonical order, by (collection, id): the note (1) before the history event (2).
    t.delta.children.add(collection=pb2.TICKET_COLLECTION_NOTES, id=new_ulid(),
                         dot=pb2.Dot(node=FAKE, stamp=ctx.f.stamps.next()), value=note.SerializeToString())
    t.delta.children.extend(history)
    return _hostile(t)


def snils_wrong_checksum(ctx):
    """Register 10 (citizenSnils) holds eleven digits whose checksum does not match
    (112-233-445 95 is valid; 96 is not): well-formed, the shape the wire used to check,
    and refused by the operator API with `citizen.snils: checksum does not match`. The
    ticket names its citizen (register 3) as a ticket with a SNILS does."""
    pb2 = ctx.pb2

    def with_snils(v):
        v[pb2.TICKET_REGISTER_CITIZEN] = pb2.CitizenValue(citizen=pb2.Citizen(ref="CIT-7F3K2"))
        v[pb2.TICKET_REGISTER_CITIZEN_SNILS] = pb2.CitizenSnils(snils="11223344596")
    return _hostile(_ticket(ctx, with_snils))


CASES = [
    Case("negative_year", "invalid_value", "header number with year -2026", negative_year),
    Case("received_at_int64_min", "invalid_value", "header received_at = -2^63", received_at_int64_min),
    Case("deadline_int64_max", "invalid_value", "progress deadlines.register_by = 2^63-1", deadline_int64_max),
    Case("register_20000_versions", "too_large", "assignee register with 20,000 versions", register_20000_versions),
    Case("seen_10001_entries", "too_large", "progress register seen with 10,001 entries", seen_10001_entries),
    Case("assignee_600_bytes", "too_large", "assignee operator of 600 bytes", assignee_600_bytes),
    Case("impossible_causality", "impossible_causality",
         "a@5 whose seen claims b@6 (refused); separately B with b@6 that has seen a@5 (accepted)",
         impossible_causality),
    Case("statement_15_mib", "too_large", "statement text of 15 MiB", statement_15_mib),
    Case("unknown_record_kind", "unknown_kind", "RecordDelta.kind = 7", unknown_record_kind),
    Case("id_17_bytes", "invalid_value", "record id of 17 bytes", id_17_bytes, id_shown=False),
    Case("unknown_node_in_dot", "unknown_node", "priority version by irk-office-77", unknown_node_in_dot),
    Case("stamp_far_in_the_future", "stamp_too_far_ahead", "every part stamped 7 days ahead",
         stamp_far_in_the_future),
    Case("stamp_far_ahead_in_one_register", "stamp_too_far_ahead", "only the topic version stamped 7 days ahead",
         stamp_far_ahead_in_one_register),
    Case("same_dot_other_value", "equivocation", "A's topic dot again with another value", same_dot_other_value),
    Case("unknown_enum_value", "invalid_value", "header channel = 99", unknown_enum_value),
    Case("invalid_utf8", "malformed", "statement text with invalid UTF-8", invalid_utf8),
    Case("child_same_id_other_content", "equivocation", "A's history event id with other content",
         child_same_id_other_content),
    Case("zero_stamp", "invalid_value", "priority version with stamp 0", zero_stamp),
    Case("garbage_value", "malformed", "progress value that is not a Progress", garbage_value),
    Case("node_id_not_a_node_id", "invalid_value", "owner version by 'IRK_Office-9'", node_id_not_a_node_id),
    Case("dot_twice_in_a_register", "invalid_value", "priority register with one dot twice", dot_twice_in_a_register),
    Case("unknown_register_number", "unknown_kind", "a register numbered 99", unknown_register_number),
    Case("origin_in_another_organisation", "not_authorised",
         "origin and owner sfr-federal, every part written by irk-office-9",
         origin_in_another_organisation),
    Case("fund_write_relayed_by_own_organisation", "not_authorised",
         "a region-38 ticket's assignee written by sfr-federal, relayed by irk-office-9", fund_write_relayed_by_own_organisation),
    Case("note_one_byte_over_budget", "too_large", "a note of 20,001 bytes", note_one_byte_over_budget),
    Case("snils_wrong_checksum", "invalid_value", "citizenSnils register: 11 digits, wrong checksum",
         snils_wrong_checksum, detail="citizen.snils: checksum does not match"),
]
assert len({c.name for c in CASES}) == len(CASES)
