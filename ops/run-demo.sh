#!/usr/bin/env bash
# Starts a standalone development node (data in .ekc/, API on 127.0.0.1:8400),
# fills it with synthetic demo tickets the first time, and shows them.
# Ctrl-C stops the node gracefully. DEMO_EXIT=1 stops it right after the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
EKC=${EKC:-.build/debug/ekc}
PORT=${PORT:-8400}
URL="http://127.0.0.1:$PORT"
DATA=${DATA:-.ekc/irk-dev}

"$EKC" node start --node-id irk-dev --region 38 --utc-offset 480 --data "$DATA" --listen "127.0.0.1:$PORT" --dev-idp .ekc/dev-idp &
NODE=$!
stop() { kill -TERM "$NODE" 2>/dev/null || true; wait "$NODE" 2>/dev/null || true; }
trap stop EXIT
trap 'exit 130' INT TERM

for _ in $(seq 1 100); do
  kill -0 "$NODE" 2>/dev/null || { echo "the node did not start (is port $PORT in use? set PORT=...)" >&2; exit 1; }
  curl -fs "$URL/v1/health" >/dev/null 2>&1 && break
  sleep 0.1
done
sleep 0.2
kill -0 "$NODE" 2>/dev/null || { echo "the node did not start (is port $PORT in use? set PORT=...)" >&2; exit 1; }

# Sign in with the development identity provider (the node trusts its key in .ekc/dev-idp).
export EKC_TOKEN_DIR=${EKC_TOKEN_DIR:-.ekc/tokens}
"$EKC" login --dev-idp .ekc/dev-idp --org 38 --user op-ivanova --role operator
AUTH="Authorization: Bearer $(cat "$EKC_TOKEN_DIR/38.jwt")"
if [ "$(curl -fs -H "$AUTH" "$URL/v1/changes?limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["lastSequence"])')" = 0 ]; then
  # a supervisor seeds: the demo tickets are assigned to operators
  EKC_TOKEN="$("$EKC" login --dev-idp .ekc/dev-idp --org 38 --user sv-orlova --role supervisor --print)" "$EKC" demo seed --node "$URL" --count 12
fi
echo
"$EKC" ticket list --node "$URL" --limit 20
FIRST=$(curl -fs -H "$AUTH" "$URL/v1/tickets?status=IN_WORK&limit=1" | python3 -c 'import json,sys; i=json.load(sys.stdin)["items"]; print(i[0]["number"] if i else "")')
if [ -n "$FIRST" ]; then echo; "$EKC" ticket show --node "$URL" "$FIRST"; fi
cat <<EOT

The node is running at $URL (API over HTTP/1.1 and HTTP/2 on one port).
Try:  $EKC ticket create --topic pension --subject "Перерасчёт пенсии" --statement "Прошу разъяснить порядок"
      curl --http2-prior-knowledge -H "Authorization: Bearer \$(cat $EKC_TOKEN_DIR/38.jwt)" $URL/v1/tickets?status=REGISTERED
      curl $URL/v1/health ; curl $URL/openapi.yaml     (public: liveness, the API document)
      $EKC login --org 38 --user ops-duty --role ops   (then /v1/health details, /metrics, /v1/replication)
      $EKC access table                               (who may do what)
EOT
if [ "${DEMO_EXIT:-0}" = 1 ]; then exit 0; fi
echo "Ctrl-C stops it."
wait "$NODE"
