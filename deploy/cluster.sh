#!/usr/bin/env bash
# `make cluster`: a local cluster to try, in the foreground. One redis-server
# (in a scratch directory, nothing saved) and two hubs that share the
# WebSocket and text ports with --reuse-port, so that the kernel spreads
# clients and backends over them and a push often enters the hub that does
# not hold its uid. Ctrl-C stops all three.
#
#   BIN (release binary), WS, TEXT (the shared ports), REDIS_PORT,
#   METRICS_A, METRICS_B (each hub's own /metrics)
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-target/release/pushhub}
WS=${WS:-127.0.0.1:1234}
TEXT=${TEXT:-127.0.0.1:5678}
REDIS_PORT=${REDIS_PORT:-6390}
METRICS_A=${METRICS_A:-127.0.0.1:5679}
METRICS_B=${METRICS_B:-127.0.0.1:5680}

command -v redis-server >/dev/null || {
    echo "redis-server is missing (Debian/Ubuntu: sudo apt install redis-server)" >&2
    exit 1
}
dir=$(mktemp -d)
pids=()
stop() {
    trap - INT TERM EXIT
    [ ${#pids[@]} -eq 0 ] || kill "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap stop INT TERM EXIT

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$dir" --logfile "$dir/redis.log" &
pids+=($!)
for _ in $(seq 50); do
    redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
    sleep 0.1
done
redis-cli -p "$REDIS_PORT" ping >/dev/null || { echo "redis-server did not start:" >&2; cat "$dir/redis.log" >&2; exit 1; }

text_flag=$([ "$TEXT" = 127.0.0.1:5678 ] || echo " --text $TEXT")
for node in a b; do
    metrics=$METRICS_A
    [ $node = a ] || metrics=$METRICS_B
    "$BIN" --allow-plain-uid --ws "$WS" --text "$TEXT" --metrics "$metrics" \
        --reuse-port --redis "redis://127.0.0.1:$REDIS_PORT" --node-id "$node" \
        2>&1 | sed -u "s/^/[hub $node] /" &
    pids+=($!)
done

cat <<INFO

pushhub cluster: two hubs (a, b) sharing ws://$WS and the text port $TEXT,
over redis-server on 127.0.0.1:$REDIS_PORT. Plain-uid mode. Ctrl-C stops all.
  1. open examples/web.html in a browser (or two) and connect as uid1
  2. from another shell (each command's connection lands on either hub):
     $BIN push$text_flag uid1 hello
     $BIN online$text_flag uid1
     echo '{"cmd":"stats","cluster":true}' | nc -q1 ${TEXT%:*} ${TEXT##*:}
  3. which hub holds uid1, and how many pushes crossed over:
     curl -s http://$METRICS_A/metrics | grep -E 'pushhub_(connections|cluster_messages_in_total)'
     curl -s http://$METRICS_B/metrics | grep -E 'pushhub_(connections|cluster_messages_in_total)'

INFO
wait -n
