# What bench/load.sh and bench/cluster.sh share: pinning, starting and
# stopping hubs by their pids, running the generator, the kernel's floor.
# Sourced, from the repository's root, once N, OUT, HUB, GEN and hub_flags
# are set.

mkdir -p "$(dirname "$OUT")"

# Every hub started holds up to N sockets; the generator too.
check_open_files() {
    local hard
    hard=$(ulimit -Hn)
    if [ "$hard" != unlimited ] && [ $((N + 64)) -gt "$hard" ]; then
        echo "N=$N: the hub's $N sockets do not fit under the open-files limit $hard (64 kept aside)" >&2
        exit 2
    fi
}

# Hubs on CPU 0, the generator on CPU 1, where taskset exists: "the hub on
# one core" is then literal, and the two do not share a core.
hub_cpu=() gen_cpu=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
    hub_cpu=(taskset -c 0) gen_cpu=(taskset -c 1)
fi

# Every hub started and not yet stopped; `launch_hub` sets last_pid.
hub_pids=()
last_pid=

# launch_hub TEXT_ADDR [CPU_PREFIX...] -- HUB_ARGS...: starts a hub and waits
# (bounded) until TEXT_ADDR answers. The prefix before `--` replaces the
# default pinning (`taskset -c 1` for a hub that must not share CPU 0).
launch_hub() {
    local text=$1
    shift
    local pin=()
    while [ "$1" != -- ]; do
        pin+=("$1")
        shift
    done
    shift
    [ ${#pin[@]} -gt 0 ] || pin=("${hub_cpu[@]}")
    "${pin[@]}" "$HUB" "$@" "${hub_flags[@]}" --metrics off --log-level warn &
    last_pid=$!
    hub_pids+=("$last_pid")
    for _ in $(seq 100); do
        if ! kill -0 "$last_pid" 2>/dev/null; then
            echo "the hub exited at start" >&2
            exit 1
        fi
        if (exec 3<>"/dev/tcp/${text%:*}/${text#*:}") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "the hub did not start" >&2
    exit 1
}

stop_hubs() {
    local pid
    for pid in "${hub_pids[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -INT "$pid"
            wait "$pid" || true
        fi
    done
    hub_pids=()
}

# gen ARGS...: the generator, pinned, its JSON line appended to $OUT.
gen() {
    echo "== $*" >&2
    "${gen_cpu[@]}" "$GEN" "$@" | tee -a "$OUT"
}

# The steps of `conns`: the standard ones below N, then N.
steps() {
    local below
    below=$(printf '%s\n' 1000 2000 5000 10000 18000 | awk -v n="$N" '$1 < n' | paste -sd, -)
    echo "${below:+$below,}$N"
}

# The kernel's floor drifts with what else the machine does, so it is measured
# again right before each benchmark whose CPU figures are compared with it.
floor_us=
measure_floor() {
    echo "== floor" >&2
    local line
    # Unpinned: it pins its sender and its receivers to two CPUs itself, as
    # the hub and its clients are.
    line=$("$GEN" floor --n "$1" --size 34 --rounds 10 | tee -a "$OUT")
    floor_us=$(printf '%s' "$line" | sed -n 's/.*"cpu_us_per_send":\([0-9.]*\).*/\1/p')
}
