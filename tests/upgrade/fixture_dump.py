"""What a fixture store holds, as the operator API shows it: every ticket (the ticket,
its notes, its history, its transfers) and every transfer, by id. Made by the release
that wrote the store (make_fixture.py) and again by every later release after migrating
it (tests/integration/test_store_fixtures.py); the later dump must contain the earlier
one: every field the earlier release showed, with the same value (a later release may
add fields)."""
from urllib.parse import quote


def _get(node, path):
    status, _, body = node.request("GET", path)
    assert status == 200, (node.node_id, path, status, body)
    return body


def _all_tickets(node):
    items, cursor = [], None
    while True:
        page = _get(node, "/v1/tickets?limit=500" + (f"&cursor={quote(cursor)}" if cursor else ""))
        items += page["items"]
        cursor = page.get("next")
        if not cursor:
            return items


def dump(node) -> dict:
    tickets, transfers = {}, {}
    for t in _all_tickets(node):
        tid = t["id"]
        tickets[tid] = {
            "ticket": _get(node, f"/v1/tickets/{tid}"),
            "notes": _get(node, f"/v1/tickets/{tid}/notes"),
            "history": _get(node, f"/v1/tickets/{tid}/history"),
            "transfers": _get(node, f"/v1/tickets/{tid}/transfers"),
        }
        for tr in tickets[tid]["transfers"].get("items", []):
            transfers[tr["id"]] = _get(node, f"/v1/transfers/{tr['id']}")
    return {"tickets": tickets, "transfers": transfers}


# Fields a read computes from the time of the read, not from the store: they may differ
# between the dump made when the fixture was written and one made years later.
TIME_DERIVED = {"overdue", "dueIn", "ageSeconds", "deadlineState", "lagSeconds"}


def missing(old, new, path="$"):
    """Where `new` lacks or changes what `old` holds (a list of paths with both values)."""
    out = []
    if isinstance(old, dict):
        if not isinstance(new, dict):
            return [f"{path}: {old!r} became {new!r}"]
        for k, v in old.items():
            if k in TIME_DERIVED:
                continue
            if k not in new:
                out.append(f"{path}.{k}: gone (was {v!r})")
            else:
                out += missing(v, new[k], f"{path}.{k}")
    elif isinstance(old, list):
        if not isinstance(new, list) or len(old) != len(new):
            return [f"{path}: {len(old)} items became {new!r}"[:400]]
        for i, (a, b) in enumerate(zip(old, new)):
            out += missing(a, b, f"{path}[{i}]")
    elif old != new:
        out.append(f"{path}: {old!r} became {new!r}")
    return out
