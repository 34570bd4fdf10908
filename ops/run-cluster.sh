#!/usr/bin/env bash
# A local federation of one region: three real node processes (cluster/dev-region-38.json)
# replicating over HTTP/2 with mutual TLS. Makes the development CA and node certificates
# in .ekc/certs, seeds demo tickets on irk-main, and shows them arriving on the offices.
# Ctrl-C stops all three. DEMO_EXIT=1 stops them right after the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
EKC=${EKC:-.build/debug/ekc}
TOPOLOGY=cluster/dev-region-38.json
NODES=(irk-main irk-office-1 irk-office-2)
mkdir -p .ekc
ops/dev-ca.sh .ekc/certs "${NODES[@]}" >/dev/null

. ops/lib/nodes.sh
start_nodes "$TOPOLOGY" .ekc "${NODES[@]}"
wait_nodes 8401 8402 8403 || { echo "a node did not start; see .ekc/*.log" >&2; exit 1; }

# Sign in (development identity provider): an operator, and ops for cluster health.
export EKC_TOKEN_DIR=.ekc/tokens
"$EKC" login --config "$TOPOLOGY" --org 38 --user op-ivanova --role operator --role ops >/dev/null
if [ "$(curl -fs -H "Authorization: Bearer $(cat .ekc/tokens/38.jwt)" "http://127.0.0.1:8401/v1/changes?limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["lastSequence"])')" = 0 ]; then
  # a supervisor seeds: the demo tickets are assigned to operators
  EKC_TOKEN="$("$EKC" login --config "$TOPOLOGY" --org 38 --user sv-orlova --role supervisor --print)" "$EKC" demo seed --node http://127.0.0.1:8401 --count 9
  "$EKC" ticket create --node http://127.0.0.1:8403 --channel walk-in --topic victory-card \
      --subject "Карта Победы (офис 2)" --statement "Обращение принято в удалённом офисе" >/dev/null
fi
sleep 1
echo; echo "irk-office-2 (http://127.0.0.1:8403) sees:"
"$EKC" ticket list --node http://127.0.0.1:8403 --limit 20
echo
"$EKC" cluster health --config "$TOPOLOGY"
cat <<EOT

Three nodes of region 38 are running: APIs on 8401-8403, replication (mutual TLS) on 9401-9403.
Try:  $EKC ticket status --node http://127.0.0.1:8402 38-2026-000001 IN_WORK
      $EKC cluster health --config $TOPOLOGY
      curl -H "Authorization: Bearer \$(cat .ekc/tokens/38.jwt)" http://127.0.0.1:8401/v1/replication
EOT
if [ "${DEMO_EXIT:-0}" = 1 ]; then exit 0; fi
echo "Ctrl-C stops them."
wait
