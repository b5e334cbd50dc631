#!/usr/bin/env bash
# Side-by-side benchmarks in one run: pushhub against uWebSockets.js (a
# Node.js script of the original push.php's protocol on uWS's prebuilt
# binary, "the peer"). Each benchmark runs against a fresh pushhub, then a
# fresh peer, on the same ports and the same pinning, for REPEATS rounds:
# pushhub, uWS, pushhub, uWS, ... Every JSON line is appended to $OUT with
# "server" ("pushhub" or "uws") and "round" put first; the run itself opens
# with a "versus-run" line (date, N, rounds, the machine, the versions), from
# which `pushhub-bench versus-table` makes the table (make bench-versus puts
# it into BENCHMARKS.md).
#
#   UWS_DIR=path/to/peer bench/versus.sh                  # everything, N=18000, 2 rounds
#   UWS_DIR=path/to/peer N=2000 REPEATS=1 bench/versus.sh # a quick look
#   UWS_DIR=path/to/peer ONLY="conns pushmax" bench/versus.sh
#   UWS_BROADCAST=publish UWS_DIR=... ONLY=broadcast bench/versus.sh   # uWS's topics
#
# UWS_DIR is a directory holding the peer's push.js, its npm packages
# installed there (`npm ci`, once); NODE (default node) runs it. Paths are
# taken from the repository's root, as in bench/load.sh. UWS_BROADCAST (loop,
# the default: a send per connection, as the original; or publish: a uWS
# topic) is handed to the peer.
#
# Benchmarks: conns conns-wss broadcast broadcast-wss push pushmax, all by
# default. The generator drives both servers with --peer: no `stats` or
# `online` is asked, a client is in once the pong to the ping it sends after
# its uid is back, pushes go in the original form {"uid":..,"data":..}
# (answered ok or fail; both servers deliver the whole line), broadcast data
# is a JSON array (both deliver it as written), and each server's memory and
# CPU come from /proc by its pid (every thread: the peer's Node.js ones too).
# pushhub runs in plain-uid mode with its defaults otherwise (and
# --metrics off --log-level warn, as launch_hub starts every hub). For wss,
# both servers get one throwaway self-signed certificate (EC P-256, made with
# the openssl CLI in a temporary directory that is removed at exit), and
# each wss line says what the server negotiated ("tls_negotiated", from an
# openssl s_client connection once the benchmark is over: the protocol
# version and cipher each server picks with an OpenSSL client, which may
# differ).
#
# A benchmark that fails is recorded (its line has an "error") and the run
# goes on; the script then exits 1. Loopback only; every step is bounded by
# the generator's --timeout-secs; servers are stopped by their pids.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-18000}
REPEATS=${REPEATS:-2}
OUT=${OUT:-bench/results/versus.jsonl}
ONLY=${ONLY:-"conns conns-wss broadcast broadcast-wss push pushmax"}
WS=${WS:-127.0.0.1:21400}
TEXT=${TEXT:-127.0.0.1:21401}
hub_given=${HUB:+yes}
HUB=${HUB:-target/release/pushhub}
read -ra hub_flags <<< "${HUB_FLAGS:-}"
GEN=${GEN:-target/release/pushhub-bench}
NODE=${NODE:-node}
UWS_BROADCAST=${UWS_BROADCAST:-loop}
UWS_PACKAGE=node_modules/@trufflesuite/uws-js-unofficial

fail() {
    echo "$*" >&2
    exit 2
}

[[ $REPEATS =~ ^[1-9][0-9]*$ ]] || fail "REPEATS=$REPEATS: a number of rounds, at least 1"
[ -n "${UWS_DIR:-}" ] || fail "UWS_DIR is not set: the directory holding the peer's push.js \
(uWebSockets.js), with its npm packages installed there by npm ci"
[ -f "$UWS_DIR/push.js" ] || fail "UWS_DIR=$UWS_DIR holds no push.js"
[ -f "$UWS_DIR/$UWS_PACKAGE/package.json" ] ||
    fail "UWS_DIR=$UWS_DIR has no $UWS_PACKAGE: run npm ci there first"
command -v "$NODE" >/dev/null || fail "the peer needs Node.js: no $NODE (set NODE)"
[ -x "$HUB" ] || fail "no $HUB: build it first (make build)"
[ -x "$GEN" ] || fail "no $GEN: build it first (make build)"
case $UWS_BROADCAST in
loop | publish) ;;
*) fail "UWS_BROADCAST=$UWS_BROADCAST: loop or publish" ;;
esac
# push.js listens on 127.0.0.1 only.
[ "${WS%:*}" = 127.0.0.1 ] && [ "${TEXT%:*}" = 127.0.0.1 ] ||
    fail "WS and TEXT must be on 127.0.0.1, where the peer listens"
for bench in $ONLY; do
    case $bench in
    conns | broadcast | push | pushmax) ;;
    conns-wss | broadcast-wss)
        command -v openssl >/dev/null || fail "$bench needs the openssl command for its certificate"
        ;;
    *) fail "unknown benchmark: $bench" ;;
    esac
done

# shellcheck source=bench/lib.sh
. bench/lib.sh
check_open_files

tls_dir=
cleanup() {
    stop_hubs
    if [ -n "$tls_dir" ]; then rm -rf "$tls_dir"; fi
}
trap cleanup EXIT

case " $ONLY " in
*-wss\ *)
    tls_dir=$(mktemp -d)
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -days 1 -subj /CN=localhost -keyout "$tls_dir/key.pem" \
        -out "$tls_dir/cert.pem" 2>/dev/null
    ;;
esac

# The server being measured: its name in the JSON, its pid.
server= server_pid=

# start SERVER [tls]: a fresh pushhub or peer, over wss with `tls`.
start() {
    stop_hubs
    server=$1
    case $server in
    pushhub)
        local tls=()
        if [ "${2:-}" = tls ]; then
            tls=(--tls-cert "$tls_dir/cert.pem" --tls-key "$tls_dir/key.pem")
        fi
        launch_hub "$TEXT" -- --allow-plain-uid --ws "$WS" --text "$TEXT" "${tls[@]}"
        ;;
    uws)
        local env=(WS_PORT="${WS##*:}" TEXT_PORT="${TEXT##*:}" UWS_BROADCAST="$UWS_BROADCAST")
        if [ "${2:-}" = tls ]; then
            env+=(TLS_CERT="$tls_dir/cert.pem" TLS_KEY="$tls_dir/key.pem")
        fi
        # Node.js does not raise its open-files limit to the hard one, as
        # pushhub does: the shell does it for it. Its line goes to stderr.
        (
            ulimit -n "$(ulimit -Hn)"
            exec env "${env[@]}" "${hub_cpu[@]}" "$NODE" "$UWS_DIR/push.js"
        ) >&2 &
        last_pid=$!
        hub_pids+=("$last_pid")
        # As launch_hub: bounded, until the text port answers (push.js opens
        # it once the WebSocket port listens).
        local up=
        for _ in $(seq 100); do
            kill -0 "$last_pid" 2>/dev/null || fail "the peer exited at start"
            if (exec 3<>"/dev/tcp/${TEXT%:*}/${TEXT#*:}") 2>/dev/null; then
                up=yes
                break
            fi
            sleep 0.05
        done
        [ -n "$up" ] || fail "the peer did not start"
        ;;
    esac
    server_pid=$last_pid
}

# What the server negotiates with an OpenSSL client such as the generator's
# (one connection of its own, after the benchmark): "TLSv1.3 TLS_AES_...".
tls_probe() {
    { timeout 5 openssl s_client -connect "$WS" -brief </dev/null 2>&1 || true; } |
        sed -n 's/^Protocol version: //p; s/^Ciphersuite: //p' | paste -sd' ' -
}

failures=0

# run BENCH ARGS...: the generator against the server started last, pinned,
# its JSON line tagged with the server and the round (and, over wss, what
# the server negotiated), appended to $OUT.
run() {
    echo "== $server, round $round: $*" >&2
    local line tags="\"server\":\"$server\",\"round\":$round,"
    if ! line=$("${gen_cpu[@]}" "$GEN" "$@" --peer --ws "$WS" --text "$TEXT" --hub-pid "$server_pid"); then
        failures=$((failures + 1))
    fi
    case " $* " in
    *" --tls "*) tags+="\"tls_negotiated\":\"$(tls_probe)\"," ;;
    esac
    if [ -n "$line" ]; then
        printf '%s\n' "$line" | sed "s/^{/{$tags/" | tee -a "$OUT"
    fi
}

pinned=false
[ ${#hub_cpu[@]} -gt 0 ] && pinned=true
if [ -n "$hub_given" ]; then
    pushhub="the build given as HUB, sha256 $(sha256sum "$HUB" | cut -c1-12)"
else
    pushhub="commit $(git describe --always --dirty 2>/dev/null || echo unknown)"
fi
uws_version=$("$NODE" -p 'require(process.argv[1]).version' "$(cd "$UWS_DIR" && pwd)/$UWS_PACKAGE/package.json")
printf '{"bench":"versus-run","date":"%s","n":%d,"repeats":%d,"only":"%s","nproc":%d,"kernel":"%s","pinned":%s,"node":"%s","uws":"%s","uws_broadcast":"%s","pushhub":"%s"}\n' \
    "$(date -u +%F)" "$N" "$REPEATS" "$ONLY" "$(nproc)" "$(uname -r)" "$pinned" \
    "$("$NODE" --version)" "$uws_version" "$UWS_BROADCAST" "$pushhub" | tee -a "$OUT"

# push and pushmax: 10,000 clients at most, as in bench/load.sh.
pn=$((N < 10000 ? N : 10000))
for round in $(seq "$REPEATS"); do
    for bench in $ONLY; do
        for side in pushhub uws; do
            case $bench in
            conns)
                start "$side"
                run conns --n "$N" --steps "$(steps)"
                ;;
            conns-wss)
                start "$side" tls
                run conns --n "$N" --steps "$(steps)" --tls
                ;;
            broadcast)
                start "$side"
                run broadcast --n "$N" --repeats 10 --size 32 --burst 20
                ;;
            broadcast-wss)
                start "$side" tls
                run broadcast --n "$N" --repeats 10 --size 32 --burst 20 --tls
                ;;
            push)
                start "$side"
                run push --n "$pn" --rate 5000 --duration-secs 10
                ;;
            pushmax)
                start "$side"
                run pushmax --n "$pn" --pushes 300000 --window 2000
                ;;
            esac
        done
    done
done
stop_hubs

if [ "$failures" -gt 0 ]; then
    echo "$failures benchmarks failed: their lines in $OUT say why" >&2
    exit 1
fi
