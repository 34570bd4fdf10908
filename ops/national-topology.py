#!/usr/bin/env python3
"""Writes cluster/national.json: an example national topology of 89 regions (codes 01-89)
and the four federal funds, each region with a regional centre and remote offices, each
fund with two nodes. Certificates are looked for in .ekc/national-certs, which
`ops/dev-ca.sh .ekc/national-certs $(python3 ops/national-topology.py --ids)` fills with
development ones, so that `ekc cluster check --config cluster/national.json` can check
them too. Addresses are placeholders of the form ekc-ID.example.ru."""
import json
import sys

# Local time east of UTC, in minutes; regions not listed are on Moscow time (180).
OFFSETS = {"02": 300, "03": 480, "04": 420, "14": 540, "17": 420, "18": 240, "19": 420, "22": 420, "24": 420,
           "25": 600, "27": 600, "28": 540, "30": 240, "38": 480, "39": 120, "41": 720, "42": 420, "45": 300,
           "49": 660, "54": 420, "55": 360, "56": 300, "59": 300, "63": 240, "64": 240, "65": 660, "66": 300,
           "70": 420, "72": 300, "73": 240, "74": 300, "75": 540, "79": 600, "86": 300, "87": 720, "89": 300}
NAMES = {"38": "Иркутская область", "52": "Нижегородская область", "77": "Москва", "78": "Санкт-Петербург"}
OFFICES = {"38": 3, "77": 5, "78": 3, "52": 2}
FUNDS = [("pension", "pf", "Социальный фонд России: пенсии"), ("social-insurance", "si", "Социальный фонд России: социальное страхование"),
         ("employment", "emp", "Служба занятости"), ("mse", "mse", "Медико-социальная экспертиза")]


def node(nid, org, role, series, offset):
    return {"id": nid, "organisation": org, "role": role, "utcOffsetMinutes": offset, "numberSeries": series,
            "listen": f"ekc-{nid}.example.ru:8400", "replication": f"ekc-{nid}.example.ru:9400", "data": f"/var/lib/ekc/{nid}",
            "identity": {"cert": f".ekc/national-certs/{nid}.pem", "key": f".ekc/national-certs/{nid}.key",
                         "ca": ".ekc/national-certs/ca.pem"}}


def idp(org):
    """The organisation's identity provider: its Keycloak realm, and the JWKS file the
    deployment keeps up to date on each node (re-read on change or SIGHUP)."""
    return {"issuer": f"https://sso-{org}.example.ru/realms/ekc", "jwks": f"/etc/ekc/idp/{org}.jwks.json",
            "audiences": ["ekc"], "rolesClaim": "realm_access.roles", "subjectClaim": "preferred_username"}


def topology():
    orgs, nodes = [], []
    for i in range(1, 90):
        code = f"{i:02d}"
        org = {"id": code, "kind": "region", "identityProvider": idp(code)}
        if code in NAMES:
            org["name"] = NAMES[code]
        orgs.append(org)
        offset = OFFSETS.get(code, 180)
        nodes.append(node(f"r{code}-main", code, "regional-centre", 0, offset))
        for k in range(1, OFFICES.get(code, 1) + 1):
            nodes.append(node(f"r{code}-office-{k}", code, "remote-office", k, offset))
    for fid, numbering, name in FUNDS:
        orgs.append({"id": fid, "kind": "fund", "name": name, "numbering": numbering, "identityProvider": idp(fid)})
        for k in range(1, 3):
            nodes.append(node(f"{fid}-{k}", fid, "fund", k - 1, 180))
    return {"federation": "national-example", "organisations": orgs, "nodes": nodes}


if __name__ == "__main__":
    t = topology()
    if "--ids" in sys.argv:
        print(" ".join(n["id"] for n in t["nodes"]))
    else:
        with open("cluster/national.json", "w") as f:
            json.dump(t, f, ensure_ascii=False, indent=1)
            f.write("\n")
