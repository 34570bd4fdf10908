#!/usr/bin/env bash
# Benchmarks, printing figures. Usage: ops/bench.sh BIN_DIR   (make bench builds BIN_DIR in release)
#  1. the case store: durable writes (one per transaction, grouped), point reads, index range reads
#  2. the operator API under h2load (-c 4 -m 16) next to a bare NIO HTTP/2 endpoint, same run, as ratios
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-.build-release/release}
WORK=$(mktemp -d /tmp/ekc-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

echo "== store (every commit fsync'd) =="
"$BIN/ekc-bench" store --dir "$WORK/store" ${STORE_ARGS:-}

NODE_PORT=${NODE_PORT:-18470}
BARE_PORT=${BARE_PORT:-18480}
"$BIN/ekc" node start --node-id bench --data "$WORK/node" --listen "127.0.0.1:$NODE_PORT" --log-level warning >"$WORK/node.log" 2>&1 &
PIDS+=($!)
"$BIN/ekc-bench" bare-server --port "$BARE_PORT" >"$WORK/bare.log" 2>&1 &
PIDS+=($!)
for port in $NODE_PORT $BARE_PORT; do
  for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done

BODY="$WORK/ticket.json"
cat >"$BODY" <<'EOT'
{"channel":"phone","topic":"child-benefits","supportMeasure":"unified-allowance","subject":"Единое пособие: срок рассмотрения","statement":"Подала заявление на единое пособие в прошлом месяце, ответа пока нет. Прошу сообщить срок.","legalRegime":"appeal-59fz","citizen":{"ref":"CIT-BENCH-1"}}
EOT
ID=$(curl -fs -XPOST -H 'content-type: application/json' --data-binary @"$BODY" "http://127.0.0.1:$NODE_PORT/v1/tickets" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')

N_GET=${N_GET:-200000}
N_POST=${N_POST:-60000}
rps() { h2load "$@" 2>&1 | tee -a "$WORK/h2load.log" | awk '/^finished in/ {gsub(",","",$4); print $4}'; }
ok2xx() { grep -E "^status codes:" "$WORK/h2load.log" | tail -1; }

echo
echo "== API under h2load -c 4 -m 16 (HTTP/2 prior knowledge, cleartext) =="
h2load -c 4 -m 16 -n 20000 "http://127.0.0.1:$NODE_PORT/v1/tickets/$ID" >/dev/null 2>&1   # warm-up
h2load -c 4 -m 16 -n 20000 "http://127.0.0.1:$BARE_PORT/v1/tickets/$ID" >/dev/null 2>&1
BARE_GET=$(rps -c 4 -m 16 -n "$N_GET" "http://127.0.0.1:$BARE_PORT/v1/tickets/$ID")
NODE_GET=$(rps -c 4 -m 16 -n "$N_GET" "http://127.0.0.1:$NODE_PORT/v1/tickets/$ID"); GET_CODES=$(ok2xx)
BARE_POST=$(rps -c 4 -m 16 -n "$N_POST" -d "$BODY" -H 'content-type: application/json' "http://127.0.0.1:$BARE_PORT/v1/tickets")
NODE_POST=$(rps -c 4 -m 16 -n "$N_POST" -d "$BODY" -H 'content-type: application/json' "http://127.0.0.1:$NODE_PORT/v1/tickets"); POST_CODES=$(ok2xx)

printf "api.get.bare     %9.0f req/s\n" "$BARE_GET"
printf "api.get.node     %9.0f req/s   ratio %.2f   (%s)\n" "$NODE_GET" "$(python3 -c "print($NODE_GET/$BARE_GET)")" "$GET_CODES"
printf "api.post.bare    %9.0f req/s\n" "$BARE_POST"
printf "api.post.node    %9.0f req/s   ratio %.2f   durable creates (%s)\n" "$NODE_POST" "$(python3 -c "print($NODE_POST/$BARE_POST)")" "$POST_CODES"
curl -fs "http://127.0.0.1:$NODE_PORT/v1/health" | python3 -c 'import json,sys; s=json.load(sys.stdin)["store"]; print(f"node store after run: {s[\"tickets\"]} tickets, last sequence {s[\"lastSequence\"]}")'
