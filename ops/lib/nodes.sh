# Sourced by the run scripts: node processes of a topology, started in the background
# and stopped (SIGTERM, then waited for) when the script exits. Needs $EKC.
PIDS=()
stop_nodes() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }

# start_nodes TOPOLOGY LOGDIR NODE...: one process per node, its log in LOGDIR/NODE.log.
start_nodes() {
  local topology=$1 logs=$2
  shift 2
  trap stop_nodes EXIT
  trap 'exit 130' INT TERM
  for n in "$@"; do
    "$EKC" node start --config "$topology" --node-id "$n" --log-level warning >"$logs/$n.log" 2>&1 &
    PIDS+=($!)
  done
}

# wait_nodes PORT...: until each API port answers /v1/health (15 s at most each); fails
# when a node has exited.
wait_nodes() {
  for port in "$@"; do
    for _ in $(seq 1 150); do curl -fs "http://127.0.0.1:$port/v1/health" >/dev/null 2>&1 && break; sleep 0.1; done
  done
  for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null || return 1; done
}
