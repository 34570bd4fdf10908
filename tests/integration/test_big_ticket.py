"""A ticket far larger than a frame replicates, and one more note costs one note
(protocol v2 deltas): irk-main and irk-office-1 (region 38).

With irk-office-1 stopped, one ticket on irk-main gets 2,000 notes of the largest size
the API allows (the note budget is 20,000 bytes of UTF-8: 10,000 Cyrillic characters),
about 40 MB of notes: more than twice the 16 MiB frame limit, so the ticket can only
travel in parts. irk-office-1 starts and must end up with all 2,000. Then one more note
on irk-main must reach irk-office-1 for about its own size: irk-main's
`ekc_replication_bytes_sent_total` grows by less than 2 x (one note + 2 KiB), i.e. the
new note traveled, not the ticket.

The bytes sent are printed (pytest -s) and written to bytes_sent.txt in the test's
tmp dir, with the time each phase took.
"""
import json
import threading
import time
import urllib.request

import pytest

from federation import Federation, wait_until

NOTES = 2_000
NOTE_BYTES = 20_000
CATCH_UP = 900.0   # seconds: 40 MB into an empty debug-build node, generously
ONE_NOTE = 60.0
CYRILLIC = [chr(0x0410 + i) for i in range(32)]  # А..Я


def note_text(i: int) -> str:
    """Note i: 10,000 Cyrillic characters (20,000 bytes of UTF-8), its number written in
    the first four (base 32, А..Я), so every note differs."""
    tag = "".join(CYRILLIC[(i >> (5 * k)) & 31] for k in range(4))
    text = tag + "Ж" * (NOTE_BYTES // 2 - len(tag))
    assert len(text) == 10_000 and len(text.encode()) == NOTE_BYTES
    return text


def add_note(node, ticket_id: str, text: str):
    body = json.dumps({"text": text, "visibility": "internal"}, ensure_ascii=False).encode()
    status, _, note = node.request("POST", f"/v1/tickets/{ticket_id}/notes", raw=body,
                                   headers=node.auth("op-bulk"))
    assert status == 201, (status, note)
    return note


def get_json(node, path: str, timeout: float = 120.0):
    """GET with a long timeout: a listing of 2,000 such notes is about 40 MB of JSON."""
    with urllib.request.urlopen(urllib.request.Request(node.url + path, headers=node.auth()), timeout=timeout) as r:
        return json.loads(r.read())


def notes_of(node, ticket_id: str):
    return get_json(node, f"/v1/tickets/{ticket_id}/notes")["items"]


def bytes_sent(node) -> float:
    _, _, body = node.request("GET", "/metrics")
    text = body.decode() if isinstance(body, bytes) else str(body)
    name = "ekc_replication_bytes_sent_total"
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(name + " ") or line.startswith(name + "{"))


def caught_up(reader, source) -> bool:
    """`reader` has applied `source`'s feed up to `source`'s last sequence."""
    last = source.replication()["lastSequence"]
    link = next((p for p in reader.replication()["peers"] if p["node"] == source.node_id), None)
    return link is not None and link["appliedSequence"] >= last


def has_notes(reader, source, ticket_id: str, count: int):
    """The reader's notes of the ticket once there are `count` (the cheap link check first:
    each listing is tens of MB)."""
    if not caught_up(reader, source):
        return None
    items = notes_of(reader, ticket_id)
    return items if len(items) >= count else None


def sender_idle(node, quiet: float = 1.0):
    """irk-main's sender wrote nothing for `quiet` seconds; returns the counter."""
    before = bytes_sent(node)
    time.sleep(quiet)
    after = bytes_sent(node)
    return after if after == before else None


def test_a_ticket_larger_than_a_frame_replicates_and_one_more_note_costs_one_note(tmp_path):
    fed = Federation(tmp_path / "fed", [{"id": "irk-main"}, {"id": "irk-office-1"}])
    report = tmp_path / "bytes_sent.txt"
    timings = {}
    started = time.monotonic()
    try:
        main, office = fed["irk-main"], fed["irk-office-1"]
        main.start()  # irk-office-1 stays stopped while the ticket grows
        ticket = main.create(subject="Обращение с очень длинной перепиской",
                             statement="Заявитель присылает много длинных пояснений")
        tid = ticket["id"]

        # 2,000 notes of 20,000 bytes each, from four clients at once.
        t0 = time.monotonic()
        next_index, lock, failures = [0], threading.Lock(), []

        def client():
            while True:
                with lock:
                    i = next_index[0]
                    if i >= NOTES or failures:
                        return
                    next_index[0] += 1
                try:
                    add_note(main, tid, note_text(i))
                except BaseException as e:  # reported below; the other clients stop
                    with lock:
                        failures.append((i, repr(e)))
                    return

        workers = [threading.Thread(target=client, name=f"notes-{k}", daemon=True) for k in range(4)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(1800)
        assert not any(w.is_alive() for w in workers), "note clients did not finish"
        assert not failures, failures[:5]
        timings[f"add {NOTES:,} notes"] = time.monotonic() - t0
        on_main = notes_of(main, tid)
        assert len(on_main) == NOTES, len(on_main)
        assert all(len(n["text"].encode()) == NOTE_BYTES for n in on_main[:5] + on_main[-5:])

        # irk-office-1 starts empty and catches up with the whole ticket.
        t0 = time.monotonic()
        office.start()  # (no wait for irk-main's own link to it: that dialler may be in a long backoff)
        items = wait_until(lambda: has_notes(office, main, tid, NOTES), CATCH_UP,
                           f"irk-office-1 has all {NOTES} notes", interval=2.0)
        assert len(items) == NOTES, len(items)
        assert {n["id"] for n in items} == {n["id"] for n in on_main}
        timings["catch-up of the ticket"] = time.monotonic() - t0

        # One more note: it travels alone.
        total_before = wait_until(lambda: sender_idle(main), 60.0, "irk-main's sender idle", interval=0.1)
        assert total_before >= NOTES * NOTE_BYTES, \
            f"irk-main counts {total_before:.0f} bytes sent after sending {NOTES} notes of {NOTE_BYTES} bytes"
        t0 = time.monotonic()
        extra = add_note(main, tid, note_text(NOTES))
        items = wait_until(lambda: has_notes(office, main, tid, NOTES + 1), ONE_NOTE,
                           f"irk-office-1 has note {NOTES + 1}", interval=0.2)
        timings["one more note"] = time.monotonic() - t0
        assert extra["id"] in {n["id"] for n in items}
        total_after = wait_until(lambda: sender_idle(main), 60.0, "irk-main's sender idle again", interval=0.1)
        one_note = total_after - total_before
        limit = 2 * (NOTE_BYTES + 2048)
        timings["whole test"] = time.monotonic() - started

        lines = [f"catch-up of {NOTES} notes of {NOTE_BYTES} bytes: irk-main sent {total_before:.0f} bytes",
                 f"one more note of {NOTE_BYTES} bytes: irk-main sent {one_note:.0f} bytes (limit {limit})"]
        lines += [f"{what}: {seconds:.1f} s" for what, seconds in timings.items()]
        report.write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        assert one_note < limit, \
            f"one note of {NOTE_BYTES} bytes cost {one_note:.0f} bytes of replication (limit {limit}): " \
            f"the ticket traveled again, not the note"
    finally:
        print(fed.logs())
        fed.stop()
