"""Restore (issue 19, item 4): a backup taken while a node takes creates becomes the
node's store again after the node is lost, and the node rejoins its federation.

- What the node acknowledged after the backup comes back from its peer; nothing
  acknowledged anywhere is lost.
- The restored store has a new store id: the peer resets its checkpoint and pulls the
  restored feed from its start.
- No readable number is issued twice anywhere (both stores are read): numbering goes on
  from the next million, and the node takes no local write (503 `restoring`) until it has
  caught up with its peer, shown here by holding its link cut.
- The access log goes on with an entry recording the restore, and its chain holds.
- `ekc store verify` names a missing index entry and a broken access-log link (a flipped
  byte and a truncated backup are test_backup.py's), and every way a restore can be asked
  wrongly is refused with nothing written.
- The backup's rate is printed beside `mdb_copy -c` of the same store, same run.
"""
import json
import shutil
import struct
import subprocess
import threading
import time
from urllib.parse import quote

import lmdb
import pytest

from conftest import ekc, list_all
from federation import running, wait_until

MAIN, OFFICE = "irk-main", "irk-office-1"
BODY = {"channel": "phone", "topic": "child-benefits", "subject": "Восстановление",
        "statement": "Обращение, созданное до и после копии"}
WRITERS = 12


@pytest.fixture
def fed(tmp_path):
    yield from running(tmp_path / "fed", [{"id": MAIN, "numberSeries": 3}, {"id": OFFICE, "numberSeries": 4}])


def create_loop(node, stop: threading.Event, made: list, lock: threading.Lock):
    while not stop.is_set():
        try:
            status, _, t = node.request("POST", "/v1/tickets", BODY)
        except OSError:
            continue
        if status == 201:
            with lock:
                made.append((time.monotonic(), t["id"], t["number"]))


def restore(*args, timeout=120):
    return ekc("store", "restore", *args, timeout=timeout)


def health(node):
    status, _, h = node.request("GET", "/v1/health")
    assert status == 200, h
    return h


def test_a_node_restored_from_a_backup_taken_under_load_rejoins_and_issues_nothing_twice(fed, tmp_path):
    main, office = fed[MAIN], fed[OFFICE]
    old_store = health(main)["store"]["storeId"]
    stop, made, lock = threading.Event(), [], threading.Lock()
    writers = [threading.Thread(target=create_loop, args=(main, stop, made, lock)) for _ in range(WRITERS)]
    started = time.monotonic()
    for w in writers:
        w.start()
    try:
        time.sleep(2.0)
        backup = tmp_path / "irk-main.backup"
        b0 = time.monotonic()
        r = ekc("store", "backup", "--data", str(main.data_dir), "--to", str(backup), "--json", timeout=120)
        backup_at = time.monotonic()
        assert r.returncode == 0, r.stdout + r.stderr
        manifest = json.loads(r.stdout)
        time.sleep(2.0)
    finally:
        stop.set()
        for w in writers:
            w.join()
    seconds = time.monotonic() - started
    after = [m for m in made if m[0] > backup_at]
    print(f"\n{len(made)} creates in {seconds:.1f} s ({len(made) / seconds:.0f}/s, {WRITERS} clients); backup took "
          f"{backup_at - b0:.2f} s at sequence {manifest['lastSequence']}; {len(after)} acknowledged after it")
    assert after, "nothing was created after the backup"
    ids = {i for _, i, _ in made}
    # The office holds every acknowledged create before the node is lost.
    wait_until(lambda: ids <= {t["id"] for t in list_all(office)}, 120, "the office holding every create", interval=0.5)

    # The node is lost: kill -9, its directory moved aside.
    main.kill9()
    lost = main.data_dir.with_name(main.data_dir.name + ".lost")
    main.data_dir.rename(lost)
    r = restore("--backup", str(backup), "--config", str(main.config), "--node-id", MAIN,
                "--reason", "Диск сервера вышел из строя", "--by", "ops-petrov", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    record = json.loads(r.stdout)
    assert record["fromStoreId"] == old_store and record["storeId"] != old_store
    assert record["backupSequence"] == manifest["lastSequence"]
    assert record["numbersFrom"] % 1_000_000 == 0 and record["numbersFrom"] > 0

    # Held apart from its peer, the restored node serves reads and refuses writes.
    fed.proxies[(MAIN, OFFICE)].cut()
    main.start()
    h = health(main)
    assert h["store"]["storeId"] == record["storeId"] and h["restore"]["pending"] is True, h
    status, _, refused = main.request("POST", "/v1/tickets", BODY)
    assert status == 503 and refused["error"]["code"] == "restoring", (status, refused)
    assert "caught up with every peer" in refused["error"]["message"]
    # The office pulls from a new store: its checkpoint is reset.
    wait_until(lambda: office.link(MAIN).get("resync", {}) and office.link(MAIN)["resync"]["reason"] == "checkpointReset",
               60, "the office's checkpoint reset against the restored store", interval=0.3)

    fed.proxies[(MAIN, OFFICE)].heal()
    wait_until(lambda: health(main)["restore"]["pending"] is False, 120, "the restored node caught up", interval=0.3)
    status, _, fresh = main.request("POST", "/v1/tickets", BODY)
    assert status == 201, fresh
    # Series 3: 3×10^7 + a counter past the next million.
    assert int(fresh["number"].split("-")[2]) > 3 * 10_000_000 + record["numbersFrom"], (fresh["number"], record)

    # Everything acknowledged, before and after the backup, on both nodes; one ticket per number.
    ids.add(fresh["id"])
    wait_until(lambda: ids <= {t["id"] for t in list_all(main)} and ids <= {t["id"] for t in list_all(office)}, 120,
               "every create on both nodes", interval=0.5)
    numbers = {}
    for node in (main, office):
        for t in list_all(node):
            assert numbers.setdefault(t["number"], t["id"]) == t["id"], f"{t['number']} names two tickets"
    for _, i, n in made:
        assert numbers[n] == i

    # The access log goes on from the copy's head, with the restore in it, chained.
    s, _, page = main.request("GET", "/v1/audit/access?limit=1000&subject=ops-petrov",
                              headers=main.auth("aud-1", roles=("auditor",)))
    assert s == 200, page
    [entry] = page["items"]
    assert entry["action"] == "store.restore" and entry["reason"] == "Диск сервера вышел из строя", entry
    s, _, v = main.request("GET", "/v1/audit/verify", headers=main.auth("aud-1", roles=("auditor",)))
    assert s == 200 and v["intact"] is True, v
    main.stop()
    office.stop()
    for node in (main, office):
        r = ekc("store", "verify", "--data", str(node.data_dir))
        assert r.returncode == 0, r.stdout + r.stderr


def test_every_wrong_restore_is_refused_and_writes_nothing(fed, tmp_path):
    main = fed[MAIN]
    for _ in range(5):
        assert main.request("POST", "/v1/tickets", BODY)[0] == 201
    backup = tmp_path / "b"
    assert ekc("store", "backup", "--data", str(main.data_dir), "--to", str(backup)).returncode == 0
    target = tmp_path / "restored"
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("evidence")
    lying = tmp_path / "lying"
    shutil.copy(backup, lying)
    m = json.loads((tmp_path / "b.manifest.json").read_text())
    m["lastSequence"] += 1
    (tmp_path / "lying.manifest.json").write_text(json.dumps(m))
    not_a_store = tmp_path / "junk"
    not_a_store.write_bytes(b"\0" * 8192)
    (tmp_path / "junk.manifest.json").write_text((tmp_path / "b.manifest.json").read_text())
    cases = [
        (["--backup", str(tmp_path / "none"), "--data", str(target), "--reason", "x"], "no such file"),
        (["--backup", str(lying), "--data", str(target), "--reason", "x"], "lastSequence"),
        (["--backup", str(not_a_store), "--data", str(target), "--reason", "x"], "not the copy its manifest describes"),
        (["--backup", str(backup), "--data", str(occupied), "--reason", "x"], "holds keep.txt"),
        (["--backup", str(backup), "--data", str(target), "--reason", "  "], "--reason must be 1 to 500"),
        (["--backup", str(backup), "--data", str(target), "--reason", "x" * 501], "--reason must be 1 to 500"),
        (["--backup", str(backup), "--config", str(main.config), "--node-id", OFFICE, "--reason", "x"],
         f"backup of node {MAIN}, not {OFFICE}"),
        (["--backup", str(backup), "--data", str(target), "--reason", "x", "--by", "a b"], "--by a b"),
    ]
    for args, why in cases:
        r = restore(*args)
        assert r.returncode != 0, (args, r.stdout)
        assert why in r.stderr + r.stdout, (args, r.stderr + r.stdout)
        assert not target.exists(), args
        assert sorted(p.name for p in occupied.iterdir()) == ["keep.txt"]
        assert not list(tmp_path.glob(".restored.restoring-*")), args


def _edit(data_dir, db: bytes, body):
    env = lmdb.open(str(data_dir), max_dbs=64, subdir=True)
    try:
        with env.begin(write=True, db=env.open_db(db, create=False)) as txn:
            body(txn)
    finally:
        env.close()


def test_verify_names_a_missing_index_entry_and_a_broken_access_log_link(fed):
    main = fed[MAIN]
    t = main.create(citizen={"ref": "CIT-RS-1", "name": "Петров Пётр Петрович", "snils": "11223344595"})
    for i in range(3):
        s, _, _ = main.request("GET", f"/v1/tickets/{t['id']}?unmask=name&reason=" + quote(f"Проверка обращения {i}"))
        assert s == 200
    fed.stop()
    r = ekc("store", "verify", "--data", str(main.data_dir))
    assert r.returncode == 0, r.stdout + r.stderr

    def drop_status_index(txn):
        key = next(k for k, _ in txn.cursor())
        assert txn.delete(key)
    _edit(main.data_dir, b"idx_status", drop_status_index)
    r = ekc("store", "verify", "--data", str(main.data_dir))
    assert r.returncode == 1 and "ticket.index:" in r.stdout, r.stdout + r.stderr

    def break_link(txn):
        key = struct.pack(">Q", 2)
        v = bytearray(txn.get(key))
        v[-1] ^= 0x01  # the last byte of the stored entry's own hash: the chain to #3 breaks
        txn.put(key, bytes(v))
    _edit(main.data_dir, b"access_log", break_link)
    r = ekc("store", "verify", "--data", str(main.data_dir))
    assert r.returncode == 1 and "access_log: entry #2" in r.stdout, r.stdout + r.stderr


def test_backup_rate_beside_mdb_copy(fed, tmp_path):
    main = fed[MAIN]
    stop, made, lock = threading.Event(), [], threading.Lock()
    writers = [threading.Thread(target=create_loop, args=(main, stop, made, lock)) for _ in range(WRITERS)]
    for w in writers:
        w.start()
    time.sleep(6)
    stop.set()
    for w in writers:
        w.join()
    main.stop()
    t0 = time.monotonic()
    r = ekc("store", "backup", "--data", str(main.data_dir), "--to", str(tmp_path / "ours"))
    ours = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    (tmp_path / "mdb").mkdir()
    t0 = time.monotonic()
    c = subprocess.run(["mdb_copy", "-c", str(main.data_dir), str(tmp_path / "mdb")], capture_output=True, text=True, timeout=120)
    theirs = time.monotonic() - t0
    assert c.returncode == 0, c.stderr
    size = (tmp_path / "ours").stat().st_size
    print(f"\nbackup of {len(made)} tickets, {size} bytes: ekc store backup {ours:.3f} s "
          f"({size / ours / 1e6:.0f} MB/s, with SHA-256 and manifest), mdb_copy -c {theirs:.3f} s "
          f"({(tmp_path / 'mdb' / 'data.mdb').stat().st_size / theirs / 1e6:.0f} MB/s)")
    assert abs(size - (tmp_path / "mdb" / "data.mdb").stat().st_size) <= 1 << 20
