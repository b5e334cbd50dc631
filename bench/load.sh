#!/usr/bin/env bash
# Runs the load benchmarks against release builds of the hub, one fresh hub
# per benchmark, and appends one JSON line per benchmark to $OUT.
#
#   bench/load.sh                      # everything, N=18000
#   N=5000 ONLY="conns broadcast" bench/load.sh
#   HUB=../old/target/release/pushhub ONLY=pushmax bench/load.sh   # another build, for A/B
#   GEN=../old/target/release/pushhub-bench bench/load.sh   # another generator
#   HUB_FLAGS=--login-reply bench/load.sh   # extra flags for every hub started
#
# Benchmarks: conns conns-token conns-wss subs broadcast publish push pushmax
# slow history replay floor. All but floor run by default (floor runs anyway
# before the benchmarks that compare with it). conns-wss is `conns` over wss:
# a hub with a throwaway self-signed certificate (EC P-256, made with the
# openssl CLI in a temporary directory that is removed), clients doing a TLS
# handshake first; about 15 s at N=18000, hence in the default list. subs
# subscribes every client to 10 of 1000 channels (memory and CPU per
# subscription); publish is broadcast's measurements with publications to a
# channel every client is in.
# history fills the history with offline pushes (RSS per kept message), then
# measures pushmax's CPU per push, on a hub with the default flags and then on
# one with --history-size 0 (two JSON lines, "history":"on" and "off").
# replay is four reconnect storms of v1 clients (--allow-plain-uid, and
# --public-channel c0 for the channel ones): 20 pushes missed per uid; 100
# publications missed (the default window); 400 and 600 missed with
# --history-size 1000, within and past --replay-max-messages (500), the
# clients leaving their replays unread for a second; about 90 s in all.
#
# Loopback only. Every step is bounded by the generator's own --timeout-secs.
# Where `taskset` exists, the hub runs on CPU 0 and the generator on CPU 1, so
# that "the hub on one core" is literal and the two do not share a core.
#
# Open files: the hub holds N sockets in one process (it raises its soft limit
# to the hard one, and keeps 64 aside); so does the generator, except in the
# conns benchmarks past 16,000, where worker processes hold them (16,000 at
# most each). So N may go up to the hard limit less 64 (19,936 with this
# machine's 20,000). wss adds no descriptor on either side (checked: 18,018 in
# the hub at 18,000 connections).
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-18000}
OUT=${OUT:-bench/results/load.jsonl}
ONLY=${ONLY:-"conns conns-token conns-wss subs broadcast publish push pushmax slow history replay"}
WS=${WS:-127.0.0.1:21400}
TEXT=${TEXT:-127.0.0.1:21401}
HUB=${HUB:-target/release/pushhub}
read -ra hub_flags <<< "${HUB_FLAGS:-}"
GEN=${GEN:-target/release/pushhub-bench}

# shellcheck source=bench/lib.sh
. bench/lib.sh
check_open_files

hub_pid=
tls_dir=
cleanup() {
    stop_hubs
    if [ -n "$tls_dir" ]; then rm -rf "$tls_dir"; fi
}
trap cleanup EXIT

start_hub() {
    stop_hubs
    local auth=(--allow-plain-uid)
    [ $# -gt 0 ] && auth=("$@")
    launch_hub "$TEXT" -- "${auth[@]}" --ws "$WS" --text "$TEXT"
    hub_pid=$last_pid
}

run() {
    gen "$@" --ws "$WS" --text "$TEXT" --hub-pid "$hub_pid"
}

for bench in $ONLY; do
    case $bench in
    floor)
        measure_floor "$N"
        ;;
    conns)
        start_hub
        run conns --n "$N" --steps "$(steps)"
        ;;
    conns-token)
        # Token mode: every client authenticates with an HS256 token.
        secret=$(mktemp)
        head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$secret"
        start_hub --secret-file "$secret"
        run conns --n "$N" --steps "$(steps)" --mode token --secret-file "$secret"
        rm -f "$secret"
        ;;
    conns-wss)
        # wss, plain-uid mode. The clients accept the self-signed certificate
        # without checking it (--tls).
        command -v openssl >/dev/null || {
            echo "conns-wss needs the openssl command for its certificate" >&2
            exit 2
        }
        tls_dir=$(mktemp -d)
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -days 1 -subj /CN=localhost -keyout "$tls_dir/key.pem" \
            -out "$tls_dir/cert.pem" 2>/dev/null
        start_hub --allow-plain-uid --tls-cert "$tls_dir/cert.pem" --tls-key "$tls_dir/key.pem"
        run conns --n "$N" --steps "$(steps)" --tls
        stop_hubs
        rm -rf "$tls_dir"
        tls_dir=
        ;;
    subs)
        # Each client in 10 channels of 1000 (channels shared by N/100
        # clients), subscribed through the text port in batches of 500 uids.
        start_hub
        run subs --n "$N" --per-client 10 --channels 1000 --batch 500
        ;;
    broadcast | publish)
        # publish: the same, every client subscribed to one channel first.
        measure_floor "$N"
        start_hub
        run "$bench" --n "$N" --repeats 10 --size 32 --burst 20 --floor-us "$floor_us"
        ;;
    push)
        pn=$(( N < 10000 ? N : 10000 ))
        measure_floor "$pn"
        start_hub
        run push --n "$pn" --rate 5000 --duration-secs 10 --floor-us "$floor_us"
        ;;
    pushmax)
        pn=$(( N < 10000 ? N : 10000 ))
        measure_floor "$pn"
        start_hub
        # Pushes to random uids among 10,000, a window of 2,000 in flight: few
        # land on a connection that still has one queued, so few coalesce.
        run pushmax --n "$pn" --pushes 300000 --window 2000 --floor-us "$floor_us"
        ;;
    slow)
        start_hub
        run slow --readers 1000 --slow 100 --size 65536 --broadcasts 200
        ;;
    history)
        pn=$(( N < 10000 ? N : 10000 ))
        # History on (the defaults: 100 per stream, 16 MiB), then off, each
        # on a fresh hub: its memory filled by 32-byte pushes to 10,000
        # offline uids, then pipelined pushes to pn online raw clients.
        for history_flags in "" "--history-size 0"; do
            read -ra extra <<< "$history_flags"
            measure_floor "$pn"
            start_hub --allow-plain-uid "${extra[@]}"
            run history --uids 10000 --size 32 --n "$pn" --pushes 300000 --window 2000 \
                --floor-us "$floor_us"
        done
        ;;
    replay)
        # Every client of a storm starts at once, 2,000 of them connecting at
        # a time: with all 10,000 in their handshake together, thousands
        # outlasted the hub's --handshake-timeout (5 s) on a busy 2-core machine.
        rn=$(( N < 10000 ? N : 10000 ))
        # A stream per client: rn/2 uids x 20 pushes stay within 16 MiB.
        start_hub --allow-plain-uid
        run replay --n $(( rn / 2 )) --k 20 --via push --concurrency 2000
        # One channel, its frames shared by every replay.
        start_hub --allow-plain-uid --public-channel c0
        run replay --n "$rn" --k 100 --via publish --concurrency 2000
        for k_expect in "400 recovered" "600 gap"; do
            read -r k expect <<< "$k_expect"
            start_hub --allow-plain-uid --public-channel c0 --history-size 1000
            run replay --n "$rn" --k "$k" --via publish --expect "$expect" --stall \
                --rcvbuf 4096 --concurrency 2000
        done
        ;;
    *)
        echo "unknown benchmark: $bench" >&2
        exit 2
        ;;
    esac
done
