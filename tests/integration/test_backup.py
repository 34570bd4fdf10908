"""Hot backup (issue 19, item 4, first part): `ekc store backup` copies a store while its
node takes creates, into one file that mdb_stat reads and a manifest beside it;
`ekc store verify --backup` checks the copy against its manifest and then by the store's
rules; a backup never overwrites, and every way a backup can be wrong is named."""
import hashlib
import json
import subprocess
import threading
import time

from conftest import ekc

BODY = {"channel": "phone", "topic": "child-benefits", "subject": "Резервная копия",
        "statement": "Обращение, созданное во время копирования"}


def creates_while(node, stop: threading.Event, made: list):
    while not stop.is_set():
        status, _, t = node.request("POST", "/v1/tickets", BODY)
        assert status == 201, t
        made.append(t["id"])


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def backup(node, to):
    return ekc("store", "backup", "--data", str(node.data_dir), "--to", str(to), "--json", timeout=120)


def test_a_backup_taken_under_load_is_a_whole_store_its_manifest_describes(node, tmp_path):
    for _ in range(50):
        assert node.request("POST", "/v1/tickets", BODY)[0] == 201
    stop, made = threading.Event(), []
    writer = threading.Thread(target=creates_while, args=(node, stop, made))
    writer.start()
    try:
        time.sleep(0.5)
        to = tmp_path / "irk-test.backup"
        t0 = time.monotonic()
        r = backup(node, to)
        took = time.monotonic() - t0
        time.sleep(0.3)
    finally:
        stop.set()
        writer.join()
    assert r.returncode == 0, r.stdout + r.stderr
    m = json.loads(r.stdout)
    status, _, h = node.request("GET", "/v1/health")
    assert status == 200, h
    health = h["store"]
    print(f"\nbackup of {m['lastSequence']} sequences, {m['bytes']} bytes in {took:.2f} s; "
          f"{len(made)} creates during the run; the node at {health['lastSequence']}")
    assert len(made) > 0, "the node took no creates while the backup ran"
    # The manifest says what the copy is: this node's store, a sequence the node had reached.
    assert m["node"] == "irk-test" and m["storeId"] == health["storeId"]
    assert 50 <= m["lastSequence"] <= health["lastSequence"]
    assert m["bytes"] == to.stat().st_size and m["sha256"] == sha256(to)
    assert (tmp_path / "irk-test.backup.manifest.json").exists()
    assert not list(tmp_path.glob("*.partial")), "a finished backup leaves no partial file"
    # A real LMDB file: mdb_stat reads it as one (no subdirectory, no lock file needed).
    st = subprocess.run(["mdb_stat", "-n", "-a", str(to)], capture_output=True, text=True, timeout=30)
    assert st.returncode == 0 and "Status of tickets" in st.stdout, st.stdout + st.stderr
    (tmp_path / "irk-test.backup-lock").unlink()  # mdb_stat's: it opens the file with a lock
    # Verified by its manifest and then by every rule of the store; reading it writes nothing.
    before = sha256(to)
    v = ekc("store", "verify", "--backup", str(to), timeout=120)
    assert v.returncode == 0, v.stdout + v.stderr
    assert "as its manifest says" in v.stdout and "every rule holds" in v.stdout, v.stdout
    assert sha256(to) == before and not (tmp_path / "irk-test.backup-lock").exists()


def test_a_backup_never_overwrites_and_a_wrong_one_is_named(node, tmp_path):
    for _ in range(20):
        assert node.request("POST", "/v1/tickets", BODY)[0] == 201
    to = tmp_path / "b1"
    assert backup(node, to).returncode == 0
    good = to.read_bytes()
    manifest_path = tmp_path / "b1.manifest.json"
    manifest = json.loads(manifest_path.read_text())

    # Never overwrites: the file, or only its manifest, being there is enough to refuse.
    again = backup(node, to)
    assert again.returncode != 0 and "never overwrites" in again.stderr, again.stdout + again.stderr
    assert to.read_bytes() == good
    lone = tmp_path / "b2"
    (tmp_path / "b2.manifest.json").write_text("{}")
    r = backup(node, lone)
    assert r.returncode != 0 and "never overwrites" in r.stderr and not lone.exists()
    # No store at --data: refused, nothing written.
    r = ekc("store", "backup", "--data", str(tmp_path / "nowhere"), "--to", str(tmp_path / "b3"))
    assert r.returncode != 0 and "holds no store" in r.stderr and not (tmp_path / "b3").exists()

    def verify(expect_in: str, rc: int = 1):
        v = ekc("store", "verify", "--backup", str(to), timeout=60)
        out = v.stdout + v.stderr
        assert v.returncode == rc and expect_in in out, out
        return out

    # A flipped byte in the middle of the copy.
    flipped = bytearray(good)
    flipped[len(flipped) // 2] ^= 0x40
    to.write_bytes(bytes(flipped))
    verify("manifest: sha256")
    # A truncated copy.
    to.write_bytes(good[: len(good) // 2])
    verify("manifest: size")
    # A file that is no store at all, with a manifest written to match its bytes.
    junk = b"not an LMDB file " * 512
    to.write_bytes(junk)
    manifest_path.write_text(json.dumps(dict(manifest, bytes=len(junk), sha256=hashlib.sha256(junk).hexdigest())))
    verify("cannot be read as a store")
    # A manifest that lies about what the (intact) copy holds.
    to.write_bytes(good)
    manifest_path.write_text(json.dumps(dict(manifest, lastSequence=manifest["lastSequence"] + 1000)))
    verify("manifest: lastSequence")
    manifest_path.write_text(json.dumps(dict(manifest, node="nn-main")))
    verify("manifest: node")
    # A manifest that is not one, or none.
    manifest_path.write_text("[1, 2, 3]")
    verify("is not a backup manifest")
    manifest_path.write_text(json.dumps(dict(manifest, bytes=-1)))
    verify("is not a backup manifest")
    manifest_path.unlink()
    verify("is missing")
    # Two stores named at once: refused before either is read.
    r = ekc("store", "verify", "--backup", str(to), "--data", str(node.data_dir))
    assert r.returncode != 0 and "name two stores" in r.stderr, r.stdout + r.stderr
    # Put right, it verifies again.
    manifest_path.write_text(json.dumps(manifest))
    verify("every rule holds", rc=0)
