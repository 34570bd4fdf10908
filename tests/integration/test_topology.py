"""`ekc cluster check`: the topology files in cluster/ pass, and every kind of mistake a
person can make in one is named with what to do, with exit 1."""
import json
import re
import shutil

import pytest

from conftest import EKC, REPO, run

DEV = ["irk-main", "irk-office-1", "nn-main", "pension-1", "employment-1"]


def check(cwd, config, *extra):
    return run([EKC, "cluster", "check", "--config", config, *extra], cwd=cwd, timeout=60)


@pytest.fixture
def dev(tmp_path):
    """A working directory with the development federation's file and its certificates."""
    shutil.copy(REPO / "cluster" / "dev-federation.json", tmp_path / "topology.json")
    r = run([REPO / "ops" / "dev-ca.sh", tmp_path / ".ekc" / "certs", *DEV], timeout=120)
    assert r.returncode == 0, r.stderr
    return tmp_path


def edit(cwd, change):
    t = json.loads((cwd / "topology.json").read_text())
    change(t)
    (cwd / "bad.json").write_text(json.dumps(t))
    r = check(cwd, "bad.json")
    assert r.returncode == 1, f"a broken topology passed:\n{r.stdout}\n{r.stderr}"
    assert "problem(s) in bad.json" in r.stderr
    return r.stdout


def node(t, nid):
    return next(n for n in t["nodes"] if n["id"] == nid)


def test_development_federation_passes_and_derives_its_links(dev):
    r = check(dev, "topology.json", "--links", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["problems"] == [] and out["nodes"] == 5 and out["organisations"] == 4
    links = {(l["a"], l["b"]): l["scope"] for l in out["links"]}
    # Within region 38, everything; between organisations only through gateways, scoped.
    assert links[("irk-main", "irk-office-1")] == "organisation"
    assert links[("irk-main", "pension-1")] == "transfers"
    assert links[("irk-main", "nn-main")] == "transfers"
    assert not any("irk-office-1" in pair for pair, scope in links.items() if scope == "transfers"), links
    assert ("employment-1", "pension-1") not in links  # funds do not link to each other


def test_national_example_passes(tmp_path):
    ids = run(["python3", REPO / "ops" / "national-topology.py", "--ids"], cwd=REPO).stdout.split()
    assert len(ids) >= 89 + 4
    shutil.copy(REPO / "cluster" / "national.json", tmp_path / "national.json")
    r = run([REPO / "ops" / "dev-ca.sh", tmp_path / ".ekc" / "national-certs", *ids], timeout=600)
    assert r.returncode == 0, r.stderr
    r = check(tmp_path, "national.json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "89 regions, 4 funds" in r.stdout


def test_structural_mistakes_are_each_named(dev):
    def change(t):
        node(t, "irk-office-1")["role"] = "regional-centre"
        node(t, "nn-main")["replication"] = node(t, "irk-main")["replication"]
        node(t, "pension-1")["role"] = "remote-office"
        node(t, "employment-1")["numberSeries"] = 100
        t["organisations"].append({"id": "sfr", "kind": "fund"})
        t["organisations"].append({"id": "7", "kind": "region"})
        t["nodes"].append({"id": "Bad_Id", "organisation": "52", "role": "remote-office"})
        t["nodes"].append({"id": "x-1", "organisation": "99", "role": "remote-office"})
    out = edit(dev, change)
    for expected in [
        "38 +.*the region has 2 regional centres",
        "replication address 127.0.0.1:9411 is also irk-main's",
        "pension-1 +.*a remote-office belongs to a region, and pension is a fund",
        "employment-1 +.*numberSeries 100 must be 0 to 99",
        "sfr +.*a fund is one of pension, social-insurance, employment, mse",
        "7 +.*a region is named by its two-digit code",
        "Bad_Id +.*a node id is 1–63 lower-case letters",
        "x-1 +.*organisation \"99\" is not among the organisations",
        "sfr +.*the organisation has no node",
    ]:
        assert re.search(expected, out), f"missing /{expected}/ in:\n{out}"


def test_an_offset_or_a_leeway_out_of_range_is_named_and_no_node_starts_with_it(dev):
    """Numbers the node multiplies into milliseconds: a zone offset (ticket numbers,
    deadlines) and a token leeway (every token checked). From the file, an Int64 extreme
    overflowed there; it is refused before the node starts."""
    def change(t):
        node(t, "irk-main")["utcOffsetMinutes"] = 9223372036854775807
        node(t, "nn-main")["utcOffsetMinutes"] = -721
        org = next(o for o in t["organisations"] if o["id"] == "52")
        org["identityProvider"] = {"issuer": "https://sso.example/realms/ekc", "jwks": "52.jwks.json",
                                   "leewaySeconds": 10 ** 16}
    out = edit(dev, change)
    for expected in [
        "irk-main +.*utcOffsetMinutes 9223372036854775807 must be -720 to 840",
        "nn-main +.*utcOffsetMinutes -721 must be -720 to 840",
        "52 +.*identityProvider.leewaySeconds 10000000000000000 must be 0 to 3600",
    ]:
        assert re.search(expected, out), f"missing /{expected}/ in:\n{out}"
    # Each alone stops `ekc node start` with the rule, before anything listens.
    t = json.loads((dev / "topology.json").read_text())
    node(t, "irk-main")["utcOffsetMinutes"] = 9223372036854775807
    (dev / "offset.json").write_text(json.dumps(t))
    change(t)
    node(t, "irk-main")["utcOffsetMinutes"] = 480
    node(t, "nn-main")["utcOffsetMinutes"] = 180
    (dev / "leeway.json").write_text(json.dumps(t))
    for config, rule in [("offset.json", "utcOffsetMinutes 9223372036854775807 must be -720 to 840"),
                         ("leeway.json", "leewaySeconds 10000000000000000 must be 0 to 3600")]:
        r = run([EKC, "node", "start", "--config", config, "--node-id", "irk-main", "--data", str(dev / "data")],
                cwd=dev, timeout=60)
        assert r.returncode != 0 and rule in r.stderr, (config, r.returncode, r.stderr[-2000:])
        assert "Fatal error" not in r.stderr and "listening" not in r.stdout, r.stdout + r.stderr


def test_certificate_mistakes_are_each_named(dev, tmp_path):
    other = tmp_path / "other-ca"
    assert run([REPO / "ops" / "dev-ca.sh", other, "nn-main"], timeout=60).returncode == 0
    soon = tmp_path / "soon"
    r = run([REPO / "ops" / "dev-ca.sh", soon, "employment-1"], timeout=60,
            env={"EKC_DEV_NODE_DAYS": "3", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr

    def change(t):
        node(t, "irk-office-1")["identity"]["cert"] = ".ekc/certs/irk-main.pem"       # another node's certificate
        node(t, "irk-office-1")["identity"]["key"] = ".ekc/certs/irk-main.key"
        node(t, "nn-main")["identity"]["cert"] = str(other / "nn-main.pem")            # from another CA
        node(t, "nn-main")["identity"]["key"] = str(other / "nn-main.key")
        node(t, "pension-1")["identity"]["key"] = ".ekc/certs/irk-main.key"            # a key of another certificate
        node(t, "employment-1")["identity"] = {"cert": str(soon / "employment-1.pem"), "key": str(soon / "employment-1.key"),
                                               "ca": str(soon / "ca.pem")}             # expiring soon, and another CA
        node(t, "irk-main")["identity"]["cert"] = ".ekc/certs/missing.pem"
    out = edit(dev, change)
    for expected in [
        "irk-office-1 +.*irk-main.pem is issued to node irk-main, not irk-office-1",
        "nn-main +.*nn-main.pem was not issued by the CA in .ekc/certs/ca.pem",
        "pension-1 +.*the key .ekc/certs/irk-main.key does not belong to the certificate .ekc/certs/pension-1.pem",
        "employment-1 +.*employment-1.pem expires on \\d{4}-\\d\\d-\\d\\d; renew it",
        "employment-1 +.*trusts another CA than",
        "irk-main +.*certificate .ekc/certs/missing.pem does not exist or cannot be read",
    ]:
        assert re.search(expected, out), f"missing /{expected}/ in:\n{out}"


def test_unreadable_and_malformed_files_get_a_clear_error(tmp_path):
    r = check(tmp_path, "nope.json")
    assert r.returncode != 0 and "cannot read nope.json" in r.stderr
    (tmp_path / "bad.json").write_text('{"nodes": [{"id": 5}]}')
    r = check(tmp_path, "bad.json")
    assert r.returncode != 0 and "bad.json" in r.stderr and "Traceback" not in r.stderr and "Fatal" not in r.stderr
