"""The short version of tests/faults/kill9.py (make kill9 KILLS=100): 8 kill -9 of the
region's two nodes and the fund's at random moments of a steady load of creates, edits,
notes, transfers and transfer steps; `mdb_stat` reads the killed node's store after each
kill; after the last one, every acknowledged operation is on the node that acknowledged
it and on every node entitled to it. A failure names the seed and the command to rerun
it, and keeps its files in tests/faults/runs/kill9-<seed>/."""
import sys
from pathlib import Path

import pytest

import conftest
import federation
import tokens
from conftest import EKC

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "faults"))
import kill9  # noqa: E402

SEED, KILLS = 4242, 8


@pytest.mark.skipif(not Path(EKC).exists(), reason="no node binary: swift build --product ekc")
def test_kill9_under_load_loses_nothing_acknowledged():
    # kill9.run pins a copy of the binary in its modules' EKC and removes it afterwards:
    # the tests after this one must find the real binary again.
    saved = {m: m.EKC for m in (conftest, federation, tokens)}
    try:
        res = kill9.run(kills=KILLS, seed=SEED, threads=6, ekc=EKC, quiet=True)
    finally:
        for m, v in saved.items():
            m.EKC = v
    kill9.print_summary(res)   # shown with -s, or with the failure
    assert res.ok, (f"kill9 seed {SEED} failed ({len(res.violations)} violations, files in {res.kept}); "
                    f"rerun: {res.rerun}\n" + "\n".join(str(v)[:800] for v in res.violations[:10]))
    s = res.summary
    assert s["kills"] == KILLS
    assert s["ops"]["acknowledged"] > 100, s
    for name in ("create", "edit", "note", "transfer", "step", "transfer-not-behind", "mdb_stat-final"):
        assert s["verified"].get(name, 0) > 0, (name, s["verified"])
