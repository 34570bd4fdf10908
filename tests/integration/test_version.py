"""Versions a person can read (issue 19, item 1): `ekc version` names the release that
CHANGELOG.md lists last, the store format a node writes into its store (read back with
`mdb_dump`) and the replication protocol versions; `GET /v1/health` gives ops the same;
every replication link shows the version it speaks, and `ekc cluster health` shows both."""
import json
import re
import subprocess

import pytest

from conftest import REPO, ekc
from federation import Federation

CHANGELOG = REPO / "CHANGELOG.md"


@pytest.fixture
def fed(tmp_path):
    f = Federation(tmp_path / "fed", [{"id": "irk-main"}, {"id": "irk-office-1"}], ())
    try:
        f.start()
        f.wait_connected()
        yield f
    finally:
        print(f.logs())
        f.stop()


def newest_release() -> str:
    """The first `## X.Y.Z` heading of CHANGELOG.md (newest first)."""
    for line in CHANGELOG.read_text().splitlines():
        m = re.match(r"^## (\d+\.\d+\.\d+(?:-[0-9a-z.]+)?)\b", line)
        if m:
            return m.group(1)
    raise AssertionError("CHANGELOG.md names no release")


def version() -> dict:
    r = ekc("version", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def store_format(data_dir) -> int:
    """schema_version of the store's meta table, as mdb_dump prints it (printable form)."""
    r = subprocess.run(["mdb_dump", "-p", "-s", "meta", str(data_dir)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    lines = [ln.strip() for ln in r.stdout.splitlines()]
    value = lines[lines.index("schema_version") + 1]
    # mdb_dump -p writes non-printable bytes as \xx hex pairs: a big-endian UInt64.
    raw = bytes(int(h, 16) for h in re.findall(r"\\([0-9a-f]{2})", value)) if "\\" in value else value.encode()
    return int.from_bytes(raw, "big")


def test_ekc_version_names_the_changelogs_release_the_store_format_and_the_protocol():
    v = version()
    assert v["release"] == newest_release(), (v, "CHANGELOG.md's newest release and the binary's differ")
    assert v["protocolVersions"]["min"] <= v["protocolVersions"]["max"]
    text = ekc("version")
    assert text.returncode == 0
    assert text.stdout.splitlines()[0] == f"ekc {v['release']}"
    assert f"store format      {v['storeFormat']}" in text.stdout


def test_health_links_and_cluster_health_show_the_release_and_the_protocol_spoken(fed):
    v = version()
    for node in fed.all():
        # The format the binary says it writes is the one in its store.
        assert store_format(node.data_dir) == v["storeFormat"]
        health = node.get("/v1/health")
        assert health["release"] == {"name": v["release"], "storeFormat": v["storeFormat"],
                                     "protocolVersions": v["protocolVersions"], "capabilities": v["capabilities"]}, health
        # Without a token: liveness only, no release (what is running is ops' to know).
        status, _, anonymous = node.request("GET", "/v1/health", authorize=False)
        assert status == 200 and "release" not in anonymous, anonymous
        for link in node.replication()["peers"]:
            assert link["protocolVersion"] == v["protocolVersions"]["max"], link
    h = ekc("cluster", "health", "--config", fed.cluster_file, timeout=30)
    assert h.returncode == 0, h.stdout + h.stderr
    rows = h.stdout.splitlines()
    nodes = [r for r in rows if r.startswith(("irk-main ", "irk-office-1 ")) and " up " in r]
    assert len(nodes) == 2 and all(f" {v['release']} " in r for r in nodes), h.stdout
    links = [r for r in rows if " connected " in r]
    assert len(links) == 2 and all(f" v{v['protocolVersions']['max']} " in r for r in links), h.stdout
