#!/usr/bin/env bash
# Side-by-side benchmark of keeld against SPDK's NVMe/TCP target, in one run on
# this machine: each target pinned to CPU 0, one initiator pinned to CPU 1,
# the same workloads on each, only one target up at a time.
#
#   keeld-file   keeld, pool on a file in --dir          vs  spdk-aio     (AIO bdev on a file in --dir)
#   keeld-ram    keeld, pool in memory (--device ram:)   vs  spdk-malloc  (malloc bdev)
#
# With --spdk DIR (SPDK v25.09 binaries: bin/nvmf_tgt, bin/spdk_nvme_perf,
# scripts/rpc.py; e.g. ../shared/tools/spdk-v25.09) both targets are measured
# and SPDK's spdk_nvme_perf is the initiator for both. Without it only keeld is
# measured, with the project's own host (`cargo bench --bench nvme_perf`) as
# the initiator. The project never needs SPDK to build or test; CI does not
# run this script. Needs root (hugepages for SPDK), fio (to fill SPDK's file),
# curl, python3 and a release build (made here).
#
# Every namespace is preconditioned with one sequential 128 KiB pass before
# the measured runs. For keeld the script also reports, per workload, the CPU
# time the target process used per I/O and the device bytes written per host
# byte (from the volume's write counters).
#
# Scaling: --target-cpus 0,1 gives each target two cores (keeld two reactors,
# nvmf_tgt two poll groups) and --queues 2 has spdk_nvme_perf open two I/O
# queues, so the load spreads over both; the initiator stays on
# --initiator-cpus (default 1, so on two cores it shares one with the target).
#
# Usage: scripts/bench-vs-spdk.sh [--spdk DIR] [--seconds N] [--dir DIR]
#                                 [--targets keeld-file,keeld-ram,spdk-aio,spdk-malloc]
#                                 [--workloads randread:4096:1,randwrite:4096:32,...]
#                                 [--target-cpus 0] [--initiator-cpus 1] [--queues 1]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD

SPDK=""
SECONDS_PER_RUN=10
DIR=/var/tmp/keel-bench
TARGETS=""
WORKLOADS="randread:4096:1,randread:4096:32,randwrite:4096:1,randwrite:4096:32,write:131072:32"
NAMESPACE_BYTES=$((2 << 30))
KEELD_PORT=4520
SPDK_PORT=4430
API_PORT=18090
HOST_NQN="nqn.2014-08.org.nvmexpress:uuid:6b65656c-7065-7266-8000-000000000001"
SPDK_NQN="nqn.2016-06.io.spdk:cnode1"
TARGET_CPUS=0
INITIATOR_CPUS=1
QUEUES=1

while [ $# -gt 0 ]; do
    case "$1" in
        --spdk) SPDK=$(realpath "$2"); shift 2 ;;
        --seconds) SECONDS_PER_RUN=$2; shift 2 ;;
        --dir) DIR=$2; shift 2 ;;
        --targets) TARGETS=$2; shift 2 ;;
        --workloads) WORKLOADS=$2; shift 2 ;;
        --target-cpus) TARGET_CPUS=$2; shift 2 ;;
        --initiator-cpus) INITIATOR_CPUS=$2; shift 2 ;;
        --queues) QUEUES=$2; shift 2 ;;
        *) echo "unknown argument $1 (see the comment at the top of $0)" >&2; exit 2 ;;
    esac
done
if [ -z "$TARGETS" ]; then
    if [ -n "$SPDK" ]; then TARGETS="keeld-file,spdk-aio,keeld-ram,spdk-malloc"; else TARGETS="keeld-file,keeld-ram"; fi
fi

log() { printf '== %s\n' "$*" >&2; }
# cpu_mask LIST: the hexadecimal mask of a comma-separated CPU list.
cpu_mask() {
    local mask=0 cpu
    for cpu in ${1//,/ }; do mask=$((mask | (1 << cpu))); done
    printf '0x%x' "$mask"
}
TARGET_CORES=$(tr ',' '\n' <<< "$TARGET_CPUS" | wc -l)
if [ -z "$SPDK" ] && [ "$QUEUES" -ne 1 ]; then
    echo "--queues needs --spdk (the project's initiator drives one queue)" >&2
    exit 2
fi
mkdir -p "$DIR"
RESULTS="$DIR/results.tsv"
: > "$RESULTS"

log "building keeld and the project's initiator (release)"
cargo build --release --quiet --bin keeld --bin keelctl
cargo bench --quiet --bench nvme_perf --no-run 2>/dev/null
PERF_BIN=$(find target/release/deps -maxdepth 1 -type f -executable -name 'nvme_perf-*' -printf '%T@ %p\n' | sort -n | tail -1 | cut -d' ' -f2)

TARGET_PID=""
stop_target() {
    if [ -n "$TARGET_PID" ] && kill -0 "$TARGET_PID" 2>/dev/null; then
        kill "$TARGET_PID"
        wait "$TARGET_PID" 2>/dev/null || true
    fi
    TARGET_PID=""
}
# The huge-page settings this script changed, put back when it ends.
HUGEPAGES_BEFORE=""
HUGETLBFS_MOUNTED=""
finish() {
    stop_target
    if [ -n "$HUGETLBFS_MOUNTED" ]; then umount /dev/hugepages || true; fi
    if [ -n "$HUGEPAGES_BEFORE" ]; then echo "$HUGEPAGES_BEFORE" > /proc/sys/vm/nr_hugepages; fi
}
trap finish EXIT

wait_port() {
    for _ in $(seq 1200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on port $1" >&2
    return 1
}

# cpu_ticks PID: user + system clock ticks the process has used.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# volume_counter FIELD: a write counter of keeld's volume "bench", in bytes
# (hostWrittenStorage, deviceWrittenStorage).
volume_counter() {
    target/release/keelctl --endpoint "http://127.0.0.1:$API_PORT" -o json volume get bench \
        | python3 -c "import json,sys; print(int(json.load(sys.stdin)['statistics']['$1']))"
}

start_keeld() { # $1: file | ram
    local data="$DIR/keeld-$1"
    rm -rf "$data" && mkdir -p "$data"
    printf '[nvme]\nreactors = %s\n' "$TARGET_CORES" > "$data/keel.toml"
    local device=()
    if [ "$1" = ram ]; then device=(--device ram:4GiB); else device=(--pool-size 4GiB); fi
    taskset -c "$TARGET_CPUS" target/release/keeld --config "$data/keel.toml" --data-dir "$data/data" "${device[@]}" \
        --nvme-listen "127.0.0.1:$KEELD_PORT" --api-listen "127.0.0.1:$API_PORT" \
        --insecure-http --no-auth > "$data/keeld.log" 2>&1 &
    TARGET_PID=$!
    wait_port "$API_PORT"
    wait_port "$KEELD_PORT"
    target/release/keelctl --endpoint "http://127.0.0.1:$API_PORT" volume create bench \
        --size "$((NAMESPACE_BYTES >> 20))MiB" --acl "$HOST_NQN" > /dev/null
    NQN=$(grep -o 'nqn=[^ ]*' "$data/keeld.log" | head -1 | cut -d= -f2)
    PORT=$KEELD_PORT
}

start_spdk() { # $1: aio | malloc
    local rpc=(python3 "$SPDK/scripts/rpc.py" -s "$DIR/spdk.sock")
    rm -f "$DIR/spdk.sock"
    taskset -c "$TARGET_CPUS" "$SPDK/bin/nvmf_tgt" -m "$(cpu_mask "$TARGET_CPUS")" -r "$DIR/spdk.sock" > "$DIR/nvmf_tgt-$1.log" 2>&1 &
    TARGET_PID=$!
    for _ in $(seq 100); do [ -S "$DIR/spdk.sock" ] && break; sleep 0.1; done
    "${rpc[@]}" nvmf_create_transport -t TCP -q 256 > /dev/null
    if [ "$1" = aio ]; then
        "${rpc[@]}" bdev_aio_create "$DIR/spdk.img" bdev0 4096 > /dev/null
    else
        "${rpc[@]}" bdev_malloc_create -b bdev0 "$((NAMESPACE_BYTES >> 20))" 4096 > /dev/null
    fi
    "${rpc[@]}" nvmf_create_subsystem "$SPDK_NQN" -a > /dev/null
    "${rpc[@]}" nvmf_subsystem_add_ns "$SPDK_NQN" bdev0 > /dev/null
    "${rpc[@]}" nvmf_subsystem_add_listener "$SPDK_NQN" -t tcp -a 127.0.0.1 -s "$SPDK_PORT" > /dev/null
    wait_port "$SPDK_PORT"
    NQN=$SPDK_NQN
    PORT=$SPDK_PORT
}

# initiator WORKLOAD IO_BYTES DEPTH SECONDS: runs one workload; prints
# "iops mean_us p99_us p999_us".
initiator() {
    if [ -n "$SPDK" ]; then
        local out
        out=$(timeout $(($4 + 60)) taskset -c "$INITIATOR_CPUS" "$SPDK/bin/spdk_nvme_perf" \
            -c "$(cpu_mask "$INITIATOR_CPUS")" -P "$QUEUES" -q "$3" -o "$2" -w "$1" -t "$4" -L \
            -r "trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:$PORT subnqn:$NQN hostnqn:$HOST_NQN" 2>&1)
        printf '%s\n' "$out" | python3 -c '
import re, sys
text = sys.stdin.read()
total = re.search(r"^Total\s*:\s*([\d.]+)\s+([\d.]+)\s+([\d.]+)", text, re.M)
def pct(p):
    m = re.search(r"^\s*" + re.escape(p) + r"%\s*:\s*([\d.]+)us", text, re.M)
    return m.group(1) if m else "nan"
if not total:
    sys.exit("spdk_nvme_perf printed no total:\n" + text)
print(total.group(1), total.group(3), pct("99.00000"), pct("99.90000"))'
    else
        timeout $(($4 + 60)) taskset -c "$INITIATOR_CPUS" "$PERF_BIN" -a "127.0.0.1:$PORT" -n "$NQN" -H "$HOST_NQN" \
            -w "$1" -o "$2" -q "$3" -t "$4" -s "$NAMESPACE_BYTES" \
            | sed -n 's/^RESULT iops=\([^ ]*\) mib_s=[^ ]* mean_us=\([^ ]*\) p99_us=\([^ ]*\) p999_us=\([^ ]*\)$/\1 \2 \3 \4/p'
    fi
}

precondition() { # $1: target kind
    local seconds=20
    case "$1" in *ram|*malloc) seconds=6 ;; esac
    log "$1: preconditioning with sequential 128 KiB writes for ${seconds}s"
    initiator write 131072 16 "$seconds" > /dev/null
}

if [ -n "$SPDK" ]; then
    # Both nvmf_tgt and spdk_nvme_perf (the initiator for keeld too) run on
    # huge pages.
    if [ "$(cat /proc/sys/vm/nr_hugepages)" -lt 1024 ]; then
        HUGEPAGES_BEFORE=$(cat /proc/sys/vm/nr_hugepages)
        echo 2048 > /proc/sys/vm/nr_hugepages
    fi
    mkdir -p /dev/hugepages
    if ! mountpoint -q /dev/hugepages; then
        mount -t hugetlbfs none /dev/hugepages
        HUGETLBFS_MOUNTED=1
    fi
fi

if [[ ",$TARGETS," == *,spdk-aio,* ]]; then
    log "filling SPDK's file $DIR/spdk.img"
    rm -f "$DIR/spdk.img"
    fio --name=fill --filename="$DIR/spdk.img" --rw=write --bs=1M --direct=1 --size="$NAMESPACE_BYTES" > /dev/null
fi

for target in ${TARGETS//,/ }; do
    case "$target" in
        keeld-file) start_keeld file ;;
        keeld-ram) start_keeld ram ;;
        spdk-aio) start_spdk aio ;;
        spdk-malloc) start_spdk malloc ;;
        *) echo "unknown target $target" >&2; exit 2 ;;
    esac
    precondition "$target"
    for workload in ${WORKLOADS//,/ }; do
        IFS=: read -r kind bytes depth <<< "$workload"
        host_before="" device_before=""
        if [[ $target == keeld-* ]]; then
            host_before=$(volume_counter hostWrittenStorage)
            device_before=$(volume_counter deviceWrittenStorage)
        fi
        ticks_before=$(cpu_ticks "$TARGET_PID")
        read -r iops mean p99 p999 < <(initiator "$kind" "$bytes" "$depth" "$SECONDS_PER_RUN")
        ticks=$(( $(cpu_ticks "$TARGET_PID") - ticks_before ))
        cpu_us=$(python3 -c "print(f'{$ticks * 1e6 / $(getconf CLK_TCK) / max($iops * $SECONDS_PER_RUN, 1):.2f}')")
        amplification="-"
        if [ -n "$host_before" ]; then
            amplification=$(python3 -c "
h = $(volume_counter hostWrittenStorage) - $host_before
d = $(volume_counter deviceWrittenStorage) - $device_before
print(f'{d / h:.3f}' if h else '-')")
        fi
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$kind" "$bytes" "$depth" \
            "$iops" "$mean" "$p99" "$p999" "$cpu_us	$amplification" | tee -a "$RESULTS" >&2
    done
    stop_target
done

log "summary (also in $RESULTS)"
python3 - "$RESULTS" <<'EOF'
import sys
rows = {}
for line in open(sys.argv[1]):
    target, kind, size, depth, iops, mean, p99, p999, cpu, amp = line.rstrip("\n").split("\t")
    rows[(target, kind, size, depth)] = dict(iops=float(iops), mean=mean, p99=p99, p999=p999, cpu=cpu, amp=amp)
workloads = sorted({k[1:] for k in rows}, key=lambda w: (w[1] != "4096", w[0], int(w[2])))
pairs = [("keeld-file", "spdk-aio"), ("keeld-ram", "spdk-malloc")]
print("| workload | " + " | ".join(f"{a} IOPS | {b} IOPS | ratio | {a} p99/p99.9 µs | {b} p99/p99.9 µs | {a} CPU µs/IO | {b} CPU µs/IO | {a} device/host bytes" for a, b in pairs) + " |")
print("|---" * (1 + 8 * len(pairs)) + "|")
for kind, size, depth in workloads:
    cells = [f"{kind} {int(size) // 1024} KiB QD{depth}"]
    for a, b in pairs:
        ra, rb = rows.get((a, kind, size, depth)), rows.get((b, kind, size, depth))
        cells += [f"{ra['iops']:.0f}" if ra else "-", f"{rb['iops']:.0f}" if rb else "-",
                  f"{ra['iops'] / rb['iops']:.2f}x" if ra and rb and rb["iops"] else "-",
                  f"{ra['p99']}/{ra['p999']}" if ra else "-", f"{rb['p99']}/{rb['p999']}" if rb else "-",
                  ra["cpu"] if ra else "-", rb["cpu"] if rb else "-", ra["amp"] if ra else "-"]
    print("| " + " | ".join(cells) + " |")
EOF
