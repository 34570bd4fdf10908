#!/usr/bin/env bash
# Benchmarks, printing figures. Usage: ops/bench.sh BIN_DIR   (make bench builds BIN_DIR in release)
#  1. the case store: durable writes (one per transaction, grouped), point reads, index range reads
#  2. replication between two nodes: catch-up of an empty node, lag at a steady rate, reconnect
#  3. transfers between organisations, real node processes (ops/bench-transfers.py): round trip at a
#     steady rate, fan-in of 20 regions to one fund, catch-up of a fund against a same-organisation node
#  4. the operator API under h2load (-c 4 -m 16) next to a bare NIO HTTP/2 endpoint, same run, as ratios
# SKIP_STORE=1, SKIP_REPLICATION=1, SKIP_TRANSFERS=1, SKIP_API=1 leave a part out;
# TRANSFERS_ARGS="--seconds 60 --tickets 20000" passes options to ops/bench-transfers.py.
# ANCHOR=1 also runs PostgreSQL 15 logical replication doing the same work right after the
# replication figures (../shared/anchors/pg-bench.sh --durable --tests bc) and prints the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-.build-release/release}
WORK=$(mktemp -d /tmp/ekc-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

echo "== store (every commit fsync'd) =="
[ "${SKIP_STORE:-0}" = 1 ] || "$BIN/ekc-bench" store --dir "$WORK/store" ${STORE_ARGS:-}
sync

echo
echo "== replication: two nodes in one process, loopback HTTP/2 with mutual TLS, every commit fsync'd =="
ops/dev-ca.sh "$WORK/certs" irk-main irk-office-1 >/dev/null
[ "${SKIP_REPLICATION:-0}" = 1 ] || "$BIN/ekc-bench" replication --dir "$WORK/replication" --certs "$WORK/certs" ${REPLICATION_ARGS:-} \
    | tee "$WORK/replication.out"
rm -rf "$WORK/replication"

if [ "${ANCHOR:-0}" = 1 ] && [ "${SKIP_REPLICATION:-0}" != 1 ]; then
  ANCHORS="${ANCHORS:-../shared/anchors}"
  echo
  echo "== PostgreSQL 15 logical replication, the same work, this run ($ANCHORS/pg-bench.sh --durable --tests bc) =="
  "$ANCHORS/pg-bench.sh" --durable --tests bc 2>&1 | tee "$WORK/anchor.out" | grep -E '^pg ' || true
  python3 - "$WORK/replication.out" "$WORK/anchor.out" <<'PY'
import re, sys
ours, pg = open(sys.argv[1]).read(), open(sys.argv[2]).read()
def num(pattern, text):
    m = re.search(pattern, text)
    return float(m.group(1)) if m else None
catchup = num(r"replication\.catchup\s+([\d.]+) tickets/s", ours)
p99 = num(r"replication\.lag\s+p50 [\d.]+ ms\s+p99 ([\d.]+) ms", ours)
pg_catchup = num(r"catchup_records_per_s=([\d.]+)", pg)
pg_p99 = num(r"lag_p99_ms=([\d.]+)", pg)
if catchup and pg_catchup:
    print(f"ratio.catchup        {catchup / pg_catchup:.2f}x   ({catchup:.0f} tickets/s against PostgreSQL's {pg_catchup:.0f} rows/s)")
if p99 and pg_p99:
    print(f"ratio.lag_p99        {p99 / pg_p99:.2f}x   ({p99:.2f} ms against PostgreSQL's {pg_p99:.2f} ms; under 1 is better)")
PY
fi

if [ "${SKIP_TRANSFERS:-0}" != 1 ]; then
  echo
  echo "== transfers: real node processes on loopback, mutual TLS, every commit fsync'd (ops/bench-transfers.py) =="
  python3 ops/bench-transfers.py --bin "$BIN" ${TRANSFERS_ARGS:-}
fi

[ "${SKIP_API:-0}" = 1 ] && exit 0

NODE_PORT=${NODE_PORT:-18470}
BARE_PORT=${BARE_PORT:-18480}
"$BIN/ekc" node start --node-id bench --data "$WORK/node" --listen "127.0.0.1:$NODE_PORT" --dev-idp "$WORK/idp" \
  --log-level warning >"$WORK/node.log" 2>&1 &
PIDS+=($!)
"$BIN/ekc-bench" bare-server --port "$BARE_PORT" >"$WORK/bare.log" 2>&1 &
PIDS+=($!)
for port in $NODE_PORT $BARE_PORT; do
  for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done

# Every request carries a bearer token (the bare endpoint gets the same header and ignores it):
# the node verifies it once and remembers it until it expires.
TOKEN=$("$BIN/ekc" login --dev-idp "$WORK/idp" --org 38 --user op-bench --role supervisor --role ops --print)
AUDITOR=$("$BIN/ekc" login --dev-idp "$WORK/idp" --org 38 --user aud-bench --role auditor --print)
AUTH="authorization: Bearer $TOKEN"
BODY="$WORK/ticket.json"
cat >"$BODY" <<'EOT'
{"channel":"phone","topic":"child-benefits","supportMeasure":"unified-allowance","subject":"Единое пособие: срок рассмотрения","statement":"Подала заявление на единое пособие в прошлом месяце, ответа пока нет. Прошу сообщить срок.","legalRegime":"appeal-59fz","citizen":{"ref":"CIT-BENCH-1","name":"Синтетическая Анна Петровна","snils":"112-233-445 95","phone":"+79001112233"}}
EOT
ID=$(curl -fs -XPOST -H "$AUTH" -H 'content-type: application/json' --data-binary @"$BODY" "http://127.0.0.1:$NODE_PORT/v1/tickets" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')

N_GET=${N_GET:-100000}
N_POST=${N_POST:-20000}
ROUNDS=${ROUNDS:-3}
# One h2load run; prints its requests per second and keeps its status line.
rps() { h2load "$@" >"$WORK/h2load.out" 2>&1; cat "$WORK/h2load.out" >>"$WORK/h2load.log"
        grep -E "^status codes:" "$WORK/h2load.out" >"$WORK/last-codes"
        awk '/^finished in/ {gsub(",","",$4); print $4}' "$WORK/h2load.out"; }
median() { python3 -c "import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }

echo
echo "== API under h2load -c 4 -m 16 (HTTP/2 prior knowledge, cleartext, bearer token), $ROUNDS interleaved rounds, medians =="
h2load -c 4 -m 16 -n 20000 -H "$AUTH" "http://127.0.0.1:$NODE_PORT/v1/tickets/$ID" >/dev/null 2>&1   # warm-up
h2load -c 4 -m 16 -n 20000 -H "$AUTH" "http://127.0.0.1:$BARE_PORT/v1/tickets/$ID" >/dev/null 2>&1
N_UNMASK=${N_UNMASK:-5000}
UNMASKED="http://127.0.0.1:$NODE_PORT/v1/tickets/$ID?unmask=name,snils&reason=bench%20load%20of%20disclosures"
BG=(); NG=(); BP=(); NP=(); NU=()
for r in $(seq 1 "$ROUNDS"); do
  BG+=("$(rps -c 4 -m 16 -n "$N_GET" -H "$AUTH" "http://127.0.0.1:$BARE_PORT/v1/tickets/$ID")")
  NG+=("$(rps -c 4 -m 16 -n "$N_GET" -H "$AUTH" "http://127.0.0.1:$NODE_PORT/v1/tickets/$ID")"); GET_CODES=$(cat "$WORK/last-codes")
  BP+=("$(rps -c 4 -m 16 -n "$N_POST" -d "$BODY" -H "$AUTH" -H 'content-type: application/json' "http://127.0.0.1:$BARE_PORT/v1/tickets")")
  NP+=("$(rps -c 4 -m 16 -n "$N_POST" -d "$BODY" -H "$AUTH" -H 'content-type: application/json' "http://127.0.0.1:$NODE_PORT/v1/tickets")"); POST_CODES=$(cat "$WORK/last-codes")
  NU+=("$(rps -c 4 -m 16 -n "$N_UNMASK" -H "$AUTH" "$UNMASKED")"); UNMASK_CODES=$(cat "$WORK/last-codes")
  echo "  round $r: GET bare ${BG[-1]} node ${NG[-1]}   POST bare ${BP[-1]} node ${NP[-1]}   unmasked GET ${NU[-1]}"
done
BARE_GET=$(median "${BG[@]}"); NODE_GET=$(median "${NG[@]}")
BARE_POST=$(median "${BP[@]}"); NODE_POST=$(median "${NP[@]}")
NODE_UNMASK=$(median "${NU[@]}")

printf "api.get.bare     %9.0f req/s\n" "$BARE_GET"
printf "api.get.node     %9.0f req/s   ratio %.2f   masked ticket, token verified (last run: %s)\n" "$NODE_GET" "$(python3 -c "print($NODE_GET/$BARE_GET)")" "$GET_CODES"
printf "api.get.unmasked %9.0f req/s   ratio %.2f   each with its durable access-log entry (last run: %s)\n" "$NODE_UNMASK" "$(python3 -c "print($NODE_UNMASK/$BARE_GET)")" "$UNMASK_CODES"
curl -fs -H "authorization: Bearer $AUDITOR" "http://127.0.0.1:$NODE_PORT/v1/audit/verify" | python3 -c "import json,sys; v=json.load(sys.stdin); print('access log after run:', v['entries'], 'entries for', $ROUNDS * $N_UNMASK, 'unmasked reads; intact:', v['intact'])"
printf "api.post.bare    %9.0f req/s\n" "$BARE_POST"
printf "api.post.node    %9.0f req/s   ratio %.2f   durable creates (last run: %s)\n" "$NODE_POST" "$(python3 -c "print($NODE_POST/$BARE_POST)")" "$POST_CODES"
curl -fs -H "$AUTH" "http://127.0.0.1:$NODE_PORT/v1/health" | python3 -c 'import json,sys; s=json.load(sys.stdin)["store"]; print("node store after run:", s["tickets"], "tickets, last sequence", s["lastSequence"])'
curl -fs -H "$AUTH" "http://127.0.0.1:$NODE_PORT/metrics" | awk '/^ekc_store_commit_group_size_(sum|count)/ {v[$1]=$2} END {if (v["ekc_store_commit_group_size_count"]) printf "node group commit: %d commits, %.1f edits per commit\n", v["ekc_store_commit_group_size_count"], v["ekc_store_commit_group_size_sum"]/v["ekc_store_commit_group_size_count"]}'
