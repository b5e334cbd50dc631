#!/usr/bin/env bash
# What the push services (APNs, FCM, Web Push) cost a release hub, measured
# against `pushhub-bench sink`, a local stand-in for the three services (one
# TLS listener on 127.0.0.1, h2, a throwaway certificate it makes at start).
# One fresh hub per measurement, one fresh sink per hub; one JSON line per
# measurement appended to $OUT.
#
#   bench/push.sh                          # everything, 3 runs of each
#   ONLY=idle REPEATS=1 bench/push.sh
#   ONLY="queued cpu" PROVIDERS=webpush bench/push.sh
#   DEVICES=5000 CPU_DEVICES=1000 CPU_SECS=5 bench/push.sh
#   HUB=../old/target/release/pushhub bench/push.sh   # another build, for A/B
#
# Measurements (pushhub-bench pushsvc --measure ...):
# - idle: VmRSS 3 s after start of a hub with no provider, with APNs
#   (certificate auth: a throwaway client certificate made with the openssl
#   CLI), FCM (the sink's service account), Web Push (a key from
#   `pushhub vapid-keygen`), and all three. APNs and FCM connect at start
#   (FCM fetches its access token from the sink's /token then too).
# - queued: DEVICES devices of one provider registered to uid q, then one
#   push to q while no client is connected, against a sink that answers
#   nothing (--hold); 2 s later, the RSS less the RSS before the push,
#   divided by the messages the hub holds (queued, and sent but not
#   answered): bytes per queued notification. The sender's queue takes
#   10,000 messages, a Web Push service's lane 2,500 of them: DEVICES
#   (default 2000) stays below both.
# - cpu: CPU_DEVICES devices of one provider on uid q, against an answering
#   sink; pushes to q (two in flight) for CPU_SECS seconds; the hub's CPU
#   time (/proc) divided by the messages the sink counted.
#
# Every hub runs with --allow-plain-uid and a --devices-db in a temporary
# directory (removed at the end, with the certificates and keys). Loopback
# only; every step is bounded (the generator's --timeout-secs, the sink's
# --seconds). Where `taskset` exists, the hub runs on CPU 0, the generator
# and the sink on CPU 1.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-bench/results/push.jsonl}
ONLY=${ONLY:-"idle queued cpu"}
PROVIDERS=${PROVIDERS:-"apns fcm webpush"}
IDLE_PROVIDERS=${IDLE_PROVIDERS:-"none apns fcm webpush all"}
REPEATS=${REPEATS:-3}
DEVICES=${DEVICES:-2000}
CPU_DEVICES=${CPU_DEVICES:-1000}
CPU_SECS=${CPU_SECS:-5}
WS=${WS:-127.0.0.1:21410}
TEXT=${TEXT:-127.0.0.1:21411}
SINK=${SINK:-127.0.0.1:21443}
HUB=${HUB:-target/release/pushhub}
read -ra hub_flags <<< "${HUB_FLAGS:-}"
GEN=${GEN:-target/release/pushhub-bench}

# shellcheck source=bench/lib.sh
. bench/lib.sh

command -v openssl >/dev/null || {
    echo "bench/push.sh needs the openssl command (the APNs client certificate)" >&2
    exit 2
}

tmp=$(mktemp -d)
sink_pid=
stop_sink() {
    if [ -n "$sink_pid" ] && kill -0 "$sink_pid" 2>/dev/null; then
        kill -TERM "$sink_pid"
        wait "$sink_pid" || true
    fi
    sink_pid=
}
cleanup() {
    stop_hubs
    stop_sink
    rm -rf "$tmp"
}
trap cleanup EXIT

# The APNs client certificate (the sink does not ask for it, but the hub
# loads it as it would Apple's) and the VAPID key, once.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj /CN=pushhub-bench -keyout "$tmp/ck-key.pem" -out "$tmp/ck-cert.pem" 2>/dev/null
cat "$tmp/ck-cert.pem" "$tmp/ck-key.pem" > "$tmp/ck.pem"
"$HUB" vapid-keygen "$tmp/vapid.pem" >/dev/null

# start_sink [--hold]: a fresh sink (its certificate, service account and
# counts in $tmp), pinned beside the generator, its summary on stderr.
start_sink() {
    # The hub of the last measurement first: it would connect to the new
    # sink, whose certificate it does not trust.
    stop_hubs
    stop_sink
    rm -f "$tmp/sink-stats.json"
    "${gen_cpu[@]}" "$GEN" sink --listen "$SINK" --cert-out "$tmp/sink.pem" \
        --write-service-account "$tmp/sa.json" --stats-file "$tmp/sink-stats.json" \
        --seconds 600 "$@" >&2 &
    sink_pid=$!
    # The counts are first written once it listens, its files written.
    for _ in $(seq 100); do
        if ! kill -0 "$sink_pid" 2>/dev/null; then
            echo "the sink exited at start" >&2
            exit 1
        fi
        [ -s "$tmp/sink-stats.json" ] && return 0
        sleep 0.05
    done
    echo "the sink did not start" >&2
    exit 1
}

# The hub's flags for one provider (or none, or all three), pointed at the sink.
provider_flags() {
    local sink_url="https://localhost:${SINK##*:}"
    case $1 in
    none) ;;
    apns)
        echo --apns-topic com.example.bench --apns-cert-file "$tmp/ck.pem" \
            --apns-endpoint "$sink_url" --apns-ca-file "$tmp/sink.pem"
        ;;
    fcm)
        echo --fcm-credentials-file "$tmp/sa.json" --fcm-endpoint "$sink_url" \
            --fcm-ca-file "$tmp/sink.pem"
        ;;
    webpush)
        echo --vapid-key-file "$tmp/vapid.pem" --vapid-subject mailto:bench@localhost \
            --webpush-ca-file "$tmp/sink.pem"
        ;;
    all)
        echo "$(provider_flags apns) $(provider_flags fcm) $(provider_flags webpush)"
        ;;
    *)
        echo "unknown provider: $1" >&2
        exit 2
        ;;
    esac
}

hub_pid=
# start_hub PROVIDER: a fresh hub with an empty registry.
start_hub() {
    stop_hubs
    rm -f "$tmp"/devices.db*
    local flags=()
    read -ra flags <<< "$(provider_flags "$1")"
    launch_hub "$TEXT" -- --allow-plain-uid --ws "$WS" --text "$TEXT" \
        --devices-db "$tmp/devices.db" "${flags[@]}"
    hub_pid=$last_pid
}

run() {
    gen pushsvc "$@" --sink "$SINK" --ws "$WS" --text "$TEXT" --hub-pid "$hub_pid" \
        --timeout-secs 120
}

for r in $(seq "$REPEATS"); do
    for what in $ONLY; do
        case $what in
        idle)
            for p in $IDLE_PROVIDERS; do
                start_sink
                start_hub "$p"
                run --measure idle --provider "$p" --settle-ms 3000 --label "run$r"
            done
            ;;
        queued)
            for p in $PROVIDERS; do
                start_sink --hold
                start_hub "$p"
                run --measure queued --provider "$p" --devices "$DEVICES" --settle-ms 2000 \
                    --label "run$r"
            done
            ;;
        cpu)
            for p in $PROVIDERS; do
                start_sink
                start_hub "$p"
                run --measure cpu --provider "$p" --devices "$CPU_DEVICES" \
                    --duration-secs "$CPU_SECS" --window 2 \
                    --sink-stats "$tmp/sink-stats.json" --label "run$r"
            done
            ;;
        *)
            echo "unknown measurement: $what (idle, queued, cpu)" >&2
            exit 2
            ;;
        esac
    done
done
stop_hubs
stop_sink
