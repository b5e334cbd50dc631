#!/usr/bin/env bash
# Runs the Autobahn WebSocket TestSuite's cases, through kosoku, against a
# real hub with the echo backend (examples/echo.rs) behind it, then checks
# the verdicts (conformance/summary.py).
#
#   conformance/run.sh                    # full: 1-7, 9, 10, 12, 13 (release build)
#   conformance/run.sh quick              # the CI subset (debug build, about 30 s)
#   conformance/run.sh '5.*' 6.4.1        # any cases: kosoku's ids or globs
#   conformance/run.sh --markdown CONFORMANCE.md full   # also writes the page
#   conformance/run.sh --debug ...        # debug builds (what `cargo test` built)
#   conformance/run.sh --release ...      # release builds
#
# Environment: KOSOKU (the kosoku command; `make conformance-deps` installs the
# pinned one and the Makefile passes it), HUB (another hub binary, for A/B;
# default: the one built here), HUB_FLAGS (more hub flags), OUT (the working
# directory: logs and reports, default target/conformance).
#
# The hub and the echo backend listen on ports the kernel picks (port 0 on
# loopback), read back from the hub's log. Both are stopped by pid. Exit
# status: 0 if every case passed, 1 if one did not, 2 if the run itself
# failed (a build, a process that did not start or died, kosoku).
set -euo pipefail
cd "$(dirname "$0")/.."

KOSOKU=${KOSOKU:-kosoku}
OUT=${OUT:-target/conformance}
read -ra extra_flags <<< "${HUB_FLAGS:-}"

FULL=('1.*' '2.*' '3.*' '4.*' '5.*' '6.*' '7.*' '9.*' '10.*' '12.*' '13.*')
# All but the slowest of 9 on a debug build: its 4 MiB to 16 MiB messages
# (9.1.4-6, 9.2.4-6), its 4 MiB ones in fragments (9.3, 9.4) and its 1000
# round trips of 1 KiB and more (9.7.5-6, 9.8.5-6). The decoder's paths they
# take are covered by the smaller cases, and 9.5 and 9.6 (1 MiB in chops)
# stay, for the check of text frames still arriving.
QUICK=('1.*' '2.*' '3.*' '4.*' '5.*' '6.*' '7.*' '10.*' '12.*' '13.*'
    9.1.1 9.1.2 9.1.3 9.2.1 9.2.2 9.2.3 '9.5.*' '9.6.*'
    9.7.1 9.7.2 9.7.3 9.7.4 9.8.1 9.8.2 9.8.3 9.8.4)

markdown= profile=
selection=()
while [ $# -gt 0 ]; do
    case $1 in
        --markdown) markdown=${2:?--markdown needs a file}; shift 2 ;;
        --debug) profile=debug; shift ;;
        --release) profile=release; shift ;;
        -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "conformance: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) selection+=("$1"); shift ;;
    esac
done
default_profile=release
case "${selection[*]:-full}" in
    full) selection=("${FULL[@]}") ;;
    quick) selection=("${QUICK[@]}"); default_profile=debug ;;
esac
profile=${profile:-$default_profile}

if ! command -v "$KOSOKU" >/dev/null; then
    echo "conformance: no kosoku ($KOSOKU): run 'make conformance-deps', or set KOSOKU" >&2
    exit 2
fi

cargo_flags=(--locked --bin pushhub --example echo)
dir=target/debug
if [ "$profile" = release ]; then cargo_flags+=(--release); dir=target/release; fi
cargo build "${cargo_flags[@]}" || exit 2
hub_bin=${HUB:-$dir/pushhub} echo_bin=$dir/examples/echo

# 16 MiB messages (case 9's largest) both ways; an event or push line carries
# one as JSON text (as long) or base64 (4/3 as long).
hub_flags=(--allow-anonymous --upstream --metrics off
    --max-message-size 16MiB --max-line-length 32MiB --max-listener-buffer 32MiB
    "${extra_flags[@]}" --ws 127.0.0.1:0 --text 127.0.0.1:0)

mkdir -p "$OUT"
rm -rf "$OUT/reports"
hub_log=$OUT/hub.log echo_log=$OUT/echo.log kosoku_log=$OUT/kosoku.log

hub_pid= echo_pid=
stop() {
    local pid=$1
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        # Bounded: the hub's shutdown takes its close grace at most.
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
}
cleanup() { stop "$echo_pid"; stop "$hub_pid"; }
trap cleanup EXIT

# Waits (bounded, 10 s) until FILE has a line matching PATTERN while PID lives.
await_line() {
    local file=$1 pattern=$2 pid=$3 what=$4
    for _ in $(seq 200); do
        if grep -q -- "$pattern" "$file" 2>/dev/null; then return 0; fi
        if ! kill -0 "$pid" 2>/dev/null; then break; fi
        sleep 0.05
    done
    echo "conformance: $what did not start; its log ($file):" >&2
    cat "$file" >&2
    exit 2
}

"$hub_bin" "${hub_flags[@]}" 2> "$hub_log" &
hub_pid=$!
await_line "$hub_log" "WebSocket on ws://" "$hub_pid" "the hub"
bound=$(grep -m1 "WebSocket on ws://" "$hub_log")
ws=$(sed 's|.*WebSocket on ws://\([^,]*\),.*|\1|' <<< "$bound")
text=$(sed 's|.*text port on \([^ ,]*\).*|\1|' <<< "$bound")

"$echo_bin" --text "$text" 2> "$echo_log" &
echo_pid=$!
await_line "$echo_log" "echo: listening" "$echo_pid" "the echo backend"

includes=()
for case_id in "${selection[@]}"; do includes+=(-i "$case_id"); done
echo "conformance: kosoku on ws://$ws/ ($profile build): ${selection[*]}"
started=$(date +%s)
# Bounded: the full selection takes minutes; an hour means something hangs.
kosoku_status=0
timeout 3600 "$KOSOKU" "ws://$ws/" "${includes[@]}" -o "$OUT/reports" > "$kosoku_log" 2>&1 ||
    kosoku_status=$?
seconds=$(( $(date +%s) - started ))
echo "conformance: kosoku took ${seconds}s"

# kosoku exits 1 when a case did not pass, UNIMPLEMENTED ones included; the
# verdicts are judged from its reports. Anything else is a broken run.
broken=
if [ "$kosoku_status" -gt 1 ]; then
    echo "conformance: kosoku failed (status $kosoku_status); its output ($kosoku_log):" >&2
    tail -n 20 "$kosoku_log" >&2
    broken=1
fi
for proc in "hub:$hub_pid:$hub_log" "echo backend:$echo_pid:$echo_log"; do
    IFS=: read -r name pid log <<< "$proc"
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "conformance: the $name died during the run; its log ($log):" >&2
        tail -n 20 "$log" >&2
        broken=1
    fi
done
# The hub first: the echo backend must then see its connection close and end
# by itself (bounded; stopped by pid otherwise).
stop "$hub_pid"
hub_pid=
for _ in $(seq 100); do kill -0 "$echo_pid" 2>/dev/null || break; sleep 0.05; done
if kill -0 "$echo_pid" 2>/dev/null; then
    echo "conformance: the echo backend did not end when the hub closed; stopping it" >&2
    broken=1
    stop "$echo_pid"
elif ! wait "$echo_pid"; then
    echo "conformance: the echo backend failed; its log ($echo_log):" >&2
    tail -n 20 "$echo_log" >&2
    broken=1
fi
echo_pid=
[ -z "$broken" ] || exit 2

python=python3
kosoku_path=$(command -v "$KOSOKU")
# The interpreter kosoku runs under knows its version.
if [ -x "$(dirname "$kosoku_path")/python" ]; then python=$(dirname "$kosoku_path")/python; fi
version=$("$python" -c 'import importlib.metadata as m; print(m.version("kosoku"))' 2>/dev/null ||
    echo unknown)

summary=(conformance/summary.py "$OUT/reports"
    --selection="${selection[*]}" --hub-flags="${hub_flags[*]}" --profile "$profile"
    --seconds "$seconds" --cores "$(nproc)" --kosoku-version "$version")
if [ -n "$markdown" ]; then summary+=(--markdown "$markdown"); fi
"$python" "${summary[@]}"
