"""Stores written by earlier releases open, migrate and answer the API as they did
(issue 19, item 3). tests/fixtures/stores/<release>/ holds each release's stores, taken
by tests/upgrade/make_fixture.py, with what that release's API showed of every ticket
and transfer. For every fixture store: `ekc store migrate --dry-run` says which steps
would run and writes nothing; `ekc store migrate` brings it to this build's format (and
a second run finds nothing to do); a node of this build started on it shows every field
the old release showed, with the same value; `ekc store verify` finds every rule holding.
One store of each release is instead migrated by the node itself as it starts. A build
older than the format is refused: `make upgrade-test` starts the previous release on an
upgraded store."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import EKC, REPO, Node, ekc
from test_version import store_format

sys.path.insert(0, str(REPO / "tests" / "upgrade"))
from fixture_dump import dump, missing  # noqa: E402

FIXTURES = REPO / "tests" / "fixtures" / "stores"
STORES = sorted((rel.name, n["id"], n["region"]) for rel in FIXTURES.iterdir() if rel.is_dir()
                for n in json.loads((rel / "nodes.json").read_text()))


def this_format() -> int:
    return json.loads(ekc("version", "--json").stdout)["storeFormat"]


def placed(release: str, node_id: str, tmp_path: Path) -> Path:
    data = tmp_path / "data" / node_id
    data.mkdir(parents=True, mode=0o700)
    shutil.copy(FIXTURES / release / f"{node_id}.store", data / "data.mdb")
    return data


def test_there_is_a_fixture_of_every_release_the_changelog_names():
    changelog = (REPO / "CHANGELOG.md").read_text()
    released = re.findall(r"^## (\d+\.\d+\.\d+) — ", changelog, flags=re.M)
    assert released, "CHANGELOG.md names no release"
    assert set(released) <= {r for r, _, _ in STORES}, (released, "make_fixture.py writes a release's fixtures")


@pytest.mark.parametrize("release, node_id, region", STORES)
def test_a_fixture_store_migrates_and_shows_what_its_release_showed(release, node_id, region, tmp_path):
    data = placed(release, node_id, tmp_path)
    old = store_format(data)
    first_of_release = node_id == next(n for r, n, _ in STORES if r == release)
    if old < this_format() and not first_of_release:
        dry = ekc("store", "migrate", "--data", str(data), "--dry-run")
        assert dry.returncode == 0, dry.stdout + dry.stderr
        assert f"format {old}" in dry.stdout and f"step {old} → {old + 1}" in dry.stdout and "nothing written" in dry.stdout
        assert store_format(data) == old
        r = ekc("store", "migrate", "--data", str(data))
        assert r.returncode == 0, r.stdout + r.stderr
        assert store_format(data) == this_format()
        again = ekc("store", "migrate", "--data", str(data))
        assert again.returncode == 0 and "nothing to migrate" in again.stdout, again.stdout
    # The first store of each release is migrated by the node as it opens it.
    node = Node(data, node_id=node_id, extra=["--region", region]).start()
    try:
        assert store_format(data) == this_format()
        then = json.loads((FIXTURES / release / f"{node_id}.json").read_text())
        now = dump(node)
        problems = missing(then, now)
        assert not problems, "\n".join(problems[:30])
        assert len(now["tickets"]) == len(then["tickets"]) > 0
        print(f"{release} {node_id}: format {old} → {this_format()}, {len(then['tickets'])} tickets and "
              f"{len(then['transfers'])} transfers shown as release {release} showed them")
    finally:
        assert node.stop() == 0
    v = ekc("store", "verify", "--data", str(data))
    assert v.returncode == 0, v.stdout + v.stderr


def test_migrate_refuses_what_it_cannot_do_and_the_lock_keeps_one_writer(tmp_path):
    release, node_id, region = STORES[0]
    data = placed(release, node_id, tmp_path)
    node = Node(data, node_id=node_id, extra=["--region", region]).start()
    try:
        # The node migrated its store as it opened it; a second node on the directory is refused.
        r = ekc("store", "migrate", "--data", str(data))
        assert r.returncode == 0 and "nothing to migrate" in r.stdout, r.stdout + r.stderr
        second = subprocess.run([str(EKC), "node", "start", "--node-id", node_id,
                                 "--data", str(data), "--region", region, "--listen", "127.0.0.1:0"],
                                capture_output=True, text=True, timeout=60)
        assert second.returncode != 0 and "held by ekc node" in second.stdout + second.stderr, second.stdout + second.stderr
    finally:
        assert node.stop() == 0
    # A store of a format newer than this build's: refused, naming the release that wrote it.
    env = __import__("lmdb").open(str(data), max_dbs=64)
    with env.begin(write=True, db=env.open_db(b"meta")) as txn:
        txn.put(b"schema_version", (this_format() + 1).to_bytes(8, "big"))
        txn.put(b"release", b"9.0.0")
    env.close()
    for args in (["store", "migrate", "--data", str(data)], ["store", "migrate", "--data", str(data), "--dry-run"]):
        r = ekc(*args)
        assert r.returncode != 0 and "written by release 9.0.0" in r.stderr, r.stdout + r.stderr
    start = subprocess.run([str(EKC), "node", "start", "--node-id", node_id, "--data", str(data),
                            "--region", region, "--listen", "127.0.0.1:0"], capture_output=True, text=True, timeout=60)
    assert start.returncode != 0 and "written by release 9.0.0" in start.stdout + start.stderr, start.stdout + start.stderr
    # Not a store at all.
    empty = tmp_path / "empty"
    empty.mkdir()
    r = ekc("store", "migrate", "--data", str(empty))
    assert r.returncode != 0 and "holds no store" in r.stderr
