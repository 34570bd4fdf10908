"""A node whose disk fills: writes answer 507 `insufficient_storage` with Retry-After and
store nothing of themselves; the node keeps answering; once space is freed it writes
again, and after a restart exactly the acknowledged writes are there.

The store lives on a tmpfs of its own (mounting one needs root, as CI has)."""
import errno
import os
import subprocess

import pytest

from conftest import Node, list_all

TMPFS_SIZE = 32 * 1024 * 1024


@pytest.fixture
def small_disk(tmp_path):
    d = tmp_path / "disk"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700", "tmpfs", str(d)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (root needed): {(r.stderr or r.stdout).strip()}")
    yield d
    subprocess.run(["umount", "-l", str(d)], capture_output=True)


def fill(disk):
    """Writes ballast until the filesystem refuses; returns its path."""
    ballast = disk / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
    finally:
        os.close(fd)
    return ballast


def test_a_full_disk_refuses_writes_with_507_and_loses_nothing(small_disk):
    n = Node(small_disk / "data")
    n.start()
    try:
        acknowledged = [n.create(subject=f"До заполнения диска {i}")["id"] for i in range(20)]
        ballast = fill(small_disk)
        refused = 0
        for i in range(30):
            body = {"channel": "phone", "topic": "child-benefits", "subject": f"На полном диске {i}",
                    "statement": "Когда будет решение по заявлению? " + "х" * 4000}
            status, headers, err = n.request("POST", "/v1/tickets", body)
            if status == 201:
                acknowledged.append(err["id"])   # a page freed inside the map may still take one
                continue
            assert status == 507, (status, err)
            assert err["error"]["code"] == "insufficient_storage" and "retry" in err["error"]["message"], err
            assert int({k.lower(): v for k, v in headers.items()}["retry-after"]) > 0
            refused += 1
        assert refused > 0, "the disk never filled"
        # The node still answers (health needs no write).
        status, _, health = n.request("GET", "/v1/health")
        assert status in (200, 503) and "node" in health, health
        assert n.proc.poll() is None, "the node exited on a full disk"

        ballast.unlink()
        acknowledged.append(n.create(subject="После освобождения места")["id"])
        assert n.stop() == 0
        n.start()
        held = {t["id"] for t in list_all(n)}
        assert held == set(acknowledged), (len(held), len(acknowledged))
        r = subprocess.run(["mdb_stat", "-e", str(small_disk / "data")], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    finally:
        n.stop()
