#!/usr/bin/env bash
# Cluster benchmarks: hubs over one redis-server against a single hub, with
# the same load, and appends one JSON line per run to $OUT ("label" says the
# set-up). A fresh redis-server (in a temporary directory, nothing saved) and
# fresh hubs for every run; each set-up is repeated REPEATS times, the set-ups
# alternating within a repeat so that the machine's drift spreads over all.
#
#   bench/cluster.sh                          # everything, N=18000, 3 repeats
#   REPEATS=1 ONLY="push pushmax" bench/cluster.sh
#   HUB=../old/target/release/pushhub bench/cluster.sh   # another build
#
# Set-ups (labels; with PIN_B=1 the cluster ones end in -b-cpu1):
#   single  one hub, no Redis.
#   local   two hubs (a: 21400/21401, b: 21402/21403) over Redis; clients and
#           backend both on a: pushes that stay on their hub, in cluster mode.
#   cross   the same cluster; clients on b's WebSocket port, the backend on
#           a's text port: every push crosses through Redis.
#   split   two hubs sharing the ports 21400/21401 (--reuse-port): the kernel
#           spreads the clients over both, and the backend lands on either.
#
# Benchmarks:
#   push       N'=min(N,10000) clients, 5,000 pushes/s for 10 s: latency, and
#              CPU per push of each process; single, local, cross.
#   pushmax    N' clients, 300,000 pipelined pushes, 2,000 in flight; single,
#              local, cross.
#   broadcast  N clients, 10 single broadcasts and 20 back to back; single,
#              split.
#   conns      N clients connecting and logging in, step by step (RSS, CPU,
#              rate; Redis's used_memory per uid route); single, local.
#   subs       N' clients each subscribed to 10 of 50,000 channels through
#              the text port (Redis's used_memory per channel route); single,
#              local.
#
# Pinning (2 cores): every hub on CPU 0, redis-server and the generator on
# CPU 1. Two hubs then share the one core a single hub has, so CPU per push or
# per message compares like with like, and the cluster's summed CPU is what
# one core pays for it. PIN_B=1 puts hub b on CPU 1 instead (beside Redis and
# the generator), to see what a second core buys the split broadcast.
#
# Loopback only; every generator run is bounded by its --timeout-secs, every
# wait here by a count. Redis and the hubs are stopped by their pids.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-18000}
OUT=${OUT:-bench/results/cluster.jsonl}
ONLY=${ONLY:-"push pushmax broadcast conns subs"}
REPEATS=${REPEATS:-3}
A_WS=${A_WS:-127.0.0.1:21400}
A_TEXT=${A_TEXT:-127.0.0.1:21401}
B_WS=${B_WS:-127.0.0.1:21402}
B_TEXT=${B_TEXT:-127.0.0.1:21403}
REDIS_PORT=${REDIS_PORT:-21409}
PIN_B=${PIN_B:-0}
HUB=${HUB:-target/release/pushhub}
read -ra hub_flags <<< "${HUB_FLAGS:-}"
GEN=${GEN:-target/release/pushhub-bench}

# shellcheck source=bench/lib.sh
. bench/lib.sh
check_open_files
command -v redis-server >/dev/null || {
    echo "redis-server is missing (Debian/Ubuntu: apt install redis-server)" >&2
    exit 2
}
REDIS=127.0.0.1:$REDIS_PORT
PN=$((N < 10000 ? N : 10000))
b_cpu=("${hub_cpu[@]}")
if [ "$PIN_B" = 1 ] && [ ${#gen_cpu[@]} -gt 0 ]; then b_cpu=("${gen_cpu[@]}"); fi

redis_pid= redis_dir=
stop_redis() {
    if [ -n "$redis_pid" ] && kill -0 "$redis_pid" 2>/dev/null; then
        kill -TERM "$redis_pid"
        wait "$redis_pid" || true
    fi
    redis_pid=
    if [ -n "$redis_dir" ]; then rm -rf "$redis_dir"; fi
    redis_dir=
}
stop_all() {
    stop_hubs
    stop_redis
}
trap stop_all EXIT

# A fresh redis-server on CPU 1, beside the generator.
start_redis() {
    redis_dir=$(mktemp -d)
    "${gen_cpu[@]}" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' \
        --appendonly no --dir "$redis_dir" --logfile "$redis_dir/redis.log" &
    redis_pid=$!
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "redis-server did not start:" >&2
    cat "$redis_dir/redis.log" >&2
    exit 1
}

# cluster_hub NODE WS TEXT [FLAGS...]: a hub of the cluster, ready once its
# text port answers and Redis has its inbox subscribed (with --reuse-port
# the port answers as soon as the other hub listens).
cluster_hub() {
    local node=$1 ws=$2 text=$3
    shift 3
    local pin=("${hub_cpu[@]}")
    [ "$node" = a ] || pin=("${b_cpu[@]}")
    launch_hub "$text" "${pin[@]}" -- --allow-plain-uid --ws "$ws" --text "$text" \
        --redis "redis://$REDIS" --node-id "$node" "$@"
    for _ in $(seq 100); do
        if [ "$(redis-cli -p "$REDIS_PORT" pubsub numsub "pushhub:n:$node" | tail -1)" = 1 ]; then
            return 0
        fi
        sleep 0.05
    done
    echo "hub $node did not join the cluster" >&2
    exit 1
}

# setup LABEL: fresh processes for one run; sets gen_flags (where the
# generator connects, and which pids it measures).
a_pid= b_pid=
gen_flags=()
setup() {
    stop_all
    case $1 in
    single)
        launch_hub "$A_TEXT" -- --allow-plain-uid --ws "$A_WS" --text "$A_TEXT"
        gen_flags=(--ws "$A_WS" --text "$A_TEXT" --hub-pid "$last_pid")
        ;;
    local | cross)
        start_redis
        cluster_hub a "$A_WS" "$A_TEXT"
        a_pid=$last_pid
        cluster_hub b "$B_WS" "$B_TEXT"
        b_pid=$last_pid
        # --hub-pid is the hub holding the clients; the others are extras.
        if [ "$1" = local ]; then
            gen_flags=(--ws "$A_WS" --text "$A_TEXT" --hub-pid "$a_pid" --extra-pid "b=$b_pid")
        else
            gen_flags=(--ws "$B_WS" --text "$A_TEXT" --hub-pid "$b_pid" --extra-pid "a=$a_pid")
        fi
        gen_flags+=(--extra-pid "redis=$redis_pid" --cluster --redis "$REDIS")
        ;;
    split)
        start_redis
        cluster_hub a "$A_WS" "$A_TEXT" --reuse-port
        a_pid=$last_pid
        cluster_hub b "$A_WS" "$A_TEXT" --reuse-port
        b_pid=$last_pid
        gen_flags=(--ws "$A_WS" --text "$A_TEXT" --hub-pid "$a_pid" --extra-pid "b=$b_pid"
            --extra-pid "redis=$redis_pid" --cluster --redis "$REDIS")
        ;;
    esac
    local label=$1
    [ "$PIN_B" != 1 ] || [ "$1" = single ] || label+=-b-cpu1
    gen_flags+=(--label "$label")
}

for bench in $ONLY; do
    for run in $(seq "$REPEATS"); do
        case $bench in
        push)
            for label in single local cross; do
                measure_floor "$PN"
                setup "$label"
                gen push --n "$PN" --rate 5000 --duration-secs 10 --floor-us "$floor_us" "${gen_flags[@]}"
            done
            ;;
        pushmax)
            for label in single local cross; do
                measure_floor "$PN"
                setup "$label"
                gen pushmax --n "$PN" --pushes 300000 --window 2000 --floor-us "$floor_us" "${gen_flags[@]}"
            done
            ;;
        broadcast)
            for label in single split; do
                measure_floor "$N"
                setup "$label"
                gen broadcast --n "$N" --repeats 10 --size 32 --burst 20 --floor-us "$floor_us" \
                    "${gen_flags[@]}"
            done
            ;;
        conns)
            for label in single local; do
                setup "$label"
                gen conns --n "$N" --steps "$(steps)" "${gen_flags[@]}"
            done
            ;;
        subs)
            # 50,000 channels, 2 members each: a channel route per 2
            # subscriptions, so Redis's share is measurable.
            for label in single local; do
                setup "$label"
                gen subs --n "$PN" --per-client 10 --channels 50000 --batch 500 "${gen_flags[@]}"
            done
            ;;
        *)
            echo "unknown benchmark: $bench" >&2
            exit 2
            ;;
        esac
        echo "-- $bench: run $run of $REPEATS done" >&2
    done
done
stop_all
