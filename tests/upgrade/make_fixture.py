#!/usr/bin/env python3
"""Writes the fixture stores of a release: tests/fixtures/stores/<release>/.

    python3 tests/upgrade/make_fixture.py [--release 0.18.0] [--bin PATH]

Runs a small federation on that release's binary (tests/upgrade/build-release.sh builds
it): region 38's centre and office and the pension fund. Through the operator API it
makes what the store holds in real use: tickets with citizen data (synthetic), edits,
notes shared and internal, a REDIRECT accepted, answered and completed, an INFO_REQUEST
rejected, a ticket of the office. Once every link is caught up, it dumps what each node
shows (fixture_dump.py), stops the nodes, and takes each store with that release's own
`ekc store backup` of this build (a read-only compacting copy that changes nothing of the
store's format; releases before 0.19 have no backup command): one file and its manifest. Every later release's tests
migrate these stores and compare what they show (tests/integration/test_store_fixtures.py),
so the chain of migrations is tested for as long as the project lives. Run once per
release, when it is tagged; the files are committed.
"""
import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(HERE))

import federation  # noqa: E402
from federation import Federation, post, wait_until  # noqa: E402
from fixture_dump import dump  # noqa: E402

NODES = [
    {"id": "irk-main", "region": "38", "peers": ["irk-office-1", "pension-1"]},
    {"id": "irk-office-1", "region": "38", "peers": ["irk-main"]},
    {"id": "pension-1", "region": "pension", "peers": ["irk-main"]},
]
CITIZENS = [("CIT-FX-1", "Соколова Анна Игоревна", "11223344595", "+79001112233"),
            ("CIT-FX-2", "Кузнецов Олег Петрович", "12345678964", "+79004445566"),
            ("CIT-FX-3", "Морозова Елена Сергеевна", "08765432102", "+79007778899")]


def ok(result, what):
    status, _, body = result
    assert status in (200, 201), (what, status, body)
    return body


def quiet(fed):
    """Every link applied all its peer had, twice in a row a second apart."""
    def caught_up():
        for n in fed.all():
            for link in n.replication()["peers"]:
                if not link["connected"] or link["appliedSequence"] < link["peerSequence"]:
                    return False
        return True
    wait_until(caught_up, 60, "every link caught up", interval=0.5)
    time.sleep(1.5)
    wait_until(caught_up, 60, "every link caught up", interval=0.5)


def make(fed):
    main, office, fund = fed["irk-main"], fed["irk-office-1"], fed["pension-1"]
    made = []
    for i, (ref, name, snils, phone) in enumerate(CITIZENS):
        t = main.create(subject=f"Перерасчёт пенсии {i + 1}", legalRegime="appeal-59fz" if i == 1 else "consultation",
                        citizen={"ref": ref, "name": name, "snils": snils, "phone": phone})
        t = main.patch(t["id"], {"status": "REGISTERED"})
        made.append(t)
    main.patch(made[0]["id"], {"assignee": "op-petrova", "priority": "high"})
    main.add_note(made[0]["id"], "Гражданка перезвонит после 15:00", visibility="shared")
    main.add_note(made[0]["id"], "Внутренняя пометка: проверить выплаты за 2025 год")
    # A REDIRECT to the pension fund, accepted, answered and completed there.
    tr = ok(post(main, f"/v1/tickets/{made[0]['id']}/transfers",
                 {"to": "pension", "kind": "REDIRECT", "scope": ["ref", "name"],
                  "reason": {"code": "pension-recalc", "text": "Вопрос компетенции фонда"}}, actor="op-ivanova"), "send")
    wait_until(lambda: fund.request("GET", f"/v1/transfers/{tr['id']}")[0] == 200, 30, "the fund seeing the transfer")
    ok(post(fund, f"/v1/transfers/{tr['id']}/accept", {}, actor="op-fund"), "accept")
    wait_until(lambda: fund.ticket(made[0]["id"]) is not None, 30, "the fund holding the ticket")
    fund.add_note(made[0]["id"], "Фонд запросил справку о стаже", visibility="shared")
    ok(post(fund, f"/v1/transfers/{tr['id']}/complete", {"answer": "Перерасчёт выполнен, ответ направлен заявителю"},
            actor="op-fund"), "complete")
    # An INFO_REQUEST the fund rejects.
    ir = ok(post(main, f"/v1/tickets/{made[1]['id']}/transfers",
                 {"to": "pension", "kind": "INFO_REQUEST", "scope": ["ref"],
                  "reason": {"code": "pension-info", "text": "Нужны сведения о стаже"}}, actor="op-ivanova"), "info request")
    wait_until(lambda: fund.request("GET", f"/v1/transfers/{ir['id']}")[0] == 200, 30, "the fund seeing the request")
    ok(post(fund, f"/v1/transfers/{ir['id']}/reject",
            {"reason": {"code": "not-competent", "text": "Сведения ведёт другой фонд"}}, actor="op-fund"), "reject")
    main.patch(made[2]["id"], {"status": "IN_WORK"})
    # The office's own ticket.
    o = office.create(subject="Запись на приём", citizen={"ref": "CIT-FX-4", "name": "Волков Игорь Андреевич"})
    office.add_note(o["id"], "Записан на 10:00")
    quiet(fed)


def main_():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--release", help="the release (default: the last of tests/upgrade/releases.txt)")
    ap.add_argument("--bin", help="that release's ekc binary (default: built by build-release.sh)")
    a = ap.parse_args()
    build = [str(HERE / "build-release.sh")] + ([a.release] if a.release else [])
    binary = Path(a.bin or subprocess.run(build, check=True, capture_output=True, text=True).stdout.strip()).resolve()
    release = json.loads(subprocess.run([str(binary), "version", "--json"], check=True, capture_output=True,
                                        text=True).stdout)["release"]
    out = REPO / "tests" / "fixtures" / "stores" / release
    if out.exists():
        sys.exit(f"{out} exists: a release's fixtures are written once")
    this_build = federation.EKC   # its `ekc store backup` copies the old store as it is
    federation.EKC = binary
    import tokens
    tokens.EKC = binary
    root = Path(tempfile.mkdtemp(prefix=f"ekc-fixture-{release}-"))
    fed = Federation(root / "fed", NODES)
    try:
        fed.start()
        fed.wait_connected()
        make(fed)
        dumps = {n.node_id: dump(n) for n in fed.all()}
    except BaseException:
        print(fed.logs())
        raise
    finally:
        fed.stop()
    out.mkdir(parents=True)
    for n in fed.all():
        r = subprocess.run([str(this_build), "store", "backup", "--data", str(n.data_dir), "--to", str(out / f"{n.node_id}.store")],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        (out / f"{n.node_id}.json").write_text(json.dumps(dumps[n.node_id], ensure_ascii=False, indent=1, sort_keys=True) + "\n")
        print(f"{n.node_id}: {len(dumps[n.node_id]['tickets'])} tickets, {len(dumps[n.node_id]['transfers'])} transfers, "
              f"store {(out / (n.node_id + '.store')).stat().st_size} bytes")
    (out / "nodes.json").write_text(json.dumps(NODES, indent=1) + "\n")
    shutil.rmtree(root, ignore_errors=True)
    print(f"fixtures of release {release} in {out}")


if __name__ == "__main__":
    main_()
