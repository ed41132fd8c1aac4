#!/usr/bin/env bash
# Boots a Keel test guest (built by prepare.sh) under QEMU TCG, runs one shell
# script inside it as root, and exits with that script's exit code.
#
# Usage:
#   tests/guest/run-guest.sh --kernel 6.1|6.12 --script FILE
#       [--fwd GUEST_PORT:HOST_PORT]...  guest 10.0.2.100:GUEST_PORT reaches
#                                        127.0.0.1:HOST_PORT on the host
#       [--hostfwd HOST_PORT:GUEST_PORT]... 127.0.0.1:HOST_PORT on the host reaches
#                                        the guest's GUEST_PORT (for a server run in
#                                        the guest, e.g. a reference kernel target)
#       [--timeout SECS]                 hard limit for the whole run (default 300)
#       [--log FILE]                     console log (default: a temporary file)
#       [--quiet]                        do not copy the console to stdout
#       [--hostnqn NQN]                  written to the guest's /etc/nvme/hostnqn
#       [--env NAME=VALUE]...            exported to the script
#       [--mem MB]                       guest memory (default 1024)
#       [--cache DIR]                    image cache (default as prepare.sh)
#       [--netns NAME]                   use the tap device of namespace NAME (made by
#                                        netns.sh) instead of user networking; the
#                                        guest reaches 10.0.2.100:PORT in NAME
#                                        directly, so --fwd is not allowed
#
# Exit status: the script's exit code; 124 when the timeout killed the guest;
# 125 when the guest stopped without reporting an exit code (boot failure,
# kernel panic); 2 for usage errors. Callers that must tell a script's own
# 124/125 apart parse the log line `KEEL-GUEST-EXIT-CODE: N` instead.
#
# Networking is QEMU user-mode (slirp) with restrict=on: the guest cannot reach
# the host or anything else except through the --fwd rules. Each rule is a
# guestfwd with a `cmd:` target, so every TCP connection the guest opens to
# 10.0.2.100:GUEST_PORT gets its own socat process connected to
# 127.0.0.1:HOST_PORT. (A plain `tcp:` guestfwd target connects only once, and
# NVMe/TCP opens one connection for the admin queue plus one per I/O queue.)
#
# With --netns the guest NIC is the tap device keeltap0 in that namespace
# (see netns.sh), which holds 10.0.2.100; the host side listens there.
set -euo pipefail

CACHE_DIR="${KEEL_GUEST_CACHE:-/var/cache/keel-guest}"
KERNEL=""
SCRIPT=""
TIMEOUT_SECS=300
LOG_FILE=""
QUIET=0
HOSTNQN=""
MEM_MB=1024
NETNS=""
FWDS=()
HOSTFWDS=()
ENVS=()

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
    exit 2
}
die_usage() { echo "run-guest.sh: $*" >&2; exit 2; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --kernel) KERNEL="${2:-}"; shift 2 ;;
        --script) SCRIPT="${2:-}"; shift 2 ;;
        --fwd) FWDS+=("${2:-}"); shift 2 ;;
        --hostfwd) HOSTFWDS+=("${2:-}"); shift 2 ;;
        --timeout) TIMEOUT_SECS="${2:-}"; shift 2 ;;
        --log) LOG_FILE="${2:-}"; shift 2 ;;
        --quiet) QUIET=1; shift ;;
        --hostnqn) HOSTNQN="${2:-}"; shift 2 ;;
        --env) ENVS+=("${2:-}"); shift 2 ;;
        --mem) MEM_MB="${2:-}"; shift 2 ;;
        --cache) CACHE_DIR="${2:-}"; shift 2 ;;
        --netns) NETNS="${2:-}"; shift 2 ;;
        -h | --help) usage ;;
        *) die_usage "unknown argument: $1 (see --help)" ;;
    esac
done

[[ "$KERNEL" == "6.1" || "$KERNEL" == "6.12" ]] || die_usage "--kernel must be 6.1 or 6.12"
[[ -n "$SCRIPT" && -f "$SCRIPT" ]] || die_usage "--script FILE is required and must exist"
[[ "$TIMEOUT_SECS" =~ ^[1-9][0-9]*$ ]] || die_usage "--timeout must be a positive integer"
[[ "$MEM_MB" =~ ^[1-9][0-9]*$ ]] || die_usage "--mem must be a positive integer"
for fwd in "${FWDS[@]}"; do
    [[ "$fwd" =~ ^[1-9][0-9]{0,4}:[1-9][0-9]{0,4}$ ]] || die_usage "bad --fwd '$fwd' (GUEST_PORT:HOST_PORT)"
done
for fwd in "${HOSTFWDS[@]}"; do
    [[ "$fwd" =~ ^[1-9][0-9]{0,4}:[1-9][0-9]{0,4}$ ]] || die_usage "bad --hostfwd '$fwd' (HOST_PORT:GUEST_PORT)"
done
for env in "${ENVS[@]}"; do
    [[ "$env" =~ ^[A-Za-z_][A-Za-z0-9_]*=.*$ ]] || die_usage "bad --env '$env' (NAME=VALUE)"
done
[[ "$HOSTNQN" != *$'\n'* ]] || die_usage "--hostnqn must be one line"
if [[ -n "$NETNS" ]]; then
    [[ ${#FWDS[@]} -eq 0 && ${#HOSTFWDS[@]} -eq 0 ]] ||
        die_usage "--fwd and --hostfwd cannot be combined with --netns"
    ip -n "$NETNS" link show keeltap0 >/dev/null 2>&1 ||
        die_usage "namespace '$NETNS' with tap keeltap0 not found; run tests/guest/netns.sh create $NETNS"
fi

IMAGES="$CACHE_DIR/$KERNEL"
if [[ ! -f "$IMAGES/vmlinux" || ! -f "$IMAGES/initramfs.cpio" ]]; then
    echo "run-guest.sh: no guest images in $IMAGES; run tests/guest/prepare.sh first" >&2
    exit 125
fi
command -v qemu-system-x86_64 >/dev/null || { echo "run-guest.sh: qemu-system-x86_64 not installed" >&2; exit 125; }
command -v socat >/dev/null || { echo "run-guest.sh: socat not installed" >&2; exit 125; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/keel-guest.XXXXXX")"
QEMU_PID=""
TAIL_PID=""
# shellcheck disable=SC2317  # invoked through the EXIT trap
cleanup() {
    if [[ -n "$QEMU_PID" ]] && kill -0 "$QEMU_PID" 2>/dev/null; then
        kill -KILL "$QEMU_PID" 2>/dev/null || true
        wait "$QEMU_PID" 2>/dev/null || true
    fi
    if [[ -n "$TAIL_PID" ]]; then
        kill "$TAIL_PID" 2>/dev/null || true
        wait "$TAIL_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

[[ -n "$LOG_FILE" ]] || LOG_FILE="$WORK/console.log"
mkdir -p "$(dirname "$LOG_FILE")"
: >"$LOG_FILE"

# The per-run cpio: the script, its environment and the host NQN. The kernel
# unpacks concatenated cpio archives in order, so these land on top of the
# prepared initramfs.
RUN_ROOT="$WORK/run"
mkdir -p "$RUN_ROOT/etc/nvme"
cp "$SCRIPT" "$RUN_ROOT/script.sh"
{
    for fwd in "${HOSTFWDS[@]}"; do
    [[ "$fwd" =~ ^[1-9][0-9]{0,4}:[1-9][0-9]{0,4}$ ]] || die_usage "bad --hostfwd '$fwd' (HOST_PORT:GUEST_PORT)"
done
for env in "${ENVS[@]}"; do
        printf 'export %s=%q\n' "${env%%=*}" "${env#*=}"
    done
} >"$RUN_ROOT/keel-env"
[[ -z "$HOSTNQN" ]] || printf '%s\n' "$HOSTNQN" >"$RUN_ROOT/etc/nvme/hostnqn"
(cd "$RUN_ROOT" && find . -mindepth 1 | LC_ALL=C sort |
    cpio --quiet -o -H newc -R 0:0 >"$WORK/run.cpio")
cat "$IMAGES/initramfs.cpio" "$WORK/run.cpio" >"$WORK/initrd"

QEMU_PREFIX=()
if [[ -n "$NETNS" ]]; then
    NETDEV="tap,id=net0,ifname=keeltap0,script=no,downscript=no"
    QEMU_PREFIX=(ip netns exec "$NETNS")
else
    NETDEV="user,id=net0,restrict=on"
    for fwd in "${FWDS[@]}"; do
        NETDEV+=",guestfwd=tcp:10.0.2.100:${fwd%%:*}-cmd:socat - TCP:127.0.0.1:${fwd##*:}"
    done
    for fwd in "${HOSTFWDS[@]}"; do
        NETDEV+=",hostfwd=tcp:127.0.0.1:${fwd%%:*}-10.0.2.15:${fwd##*:}"
    done
fi

# quiet: only warnings on the console. panic=-1 with -no-reboot turns a kernel
# panic into an immediate QEMU exit. mitigations=off and tsc=reliable cut TCG
# overhead and clocksource watchdog noise; neither matters to the NVMe/TCP host.
# The kernel is the uncompressed vmlinux, which QEMU starts at its PVH entry
# point (no firmware, no in-guest decompression). QEMU's default CPU model is
# used on purpose: `-cpu max` measured ~15% slower to boot under TCG.
# nvme_core.multipath=Y pins what both Debian kernels default to, so
# /dev/nvmeXnY is the multipath head that queues I/O across a target restart
# (bounded by the connect's --ctrl-loss-tmo), the behaviour kill -9 tests need.
CMDLINE="console=ttyS0 quiet panic=-1 mitigations=off tsc=reliable nvme_core.multipath=Y"

if [[ $QUIET -eq 0 ]]; then
    tail -n +1 -f "$LOG_FILE" &
    TAIL_PID=$!
fi

# `ip netns exec` execs QEMU in place, so QEMU_PID is QEMU's pid either way.
"${QEMU_PREFIX[@]}" qemu-system-x86_64 \
    -accel tcg,thread=single -smp 1 -m "$MEM_MB" \
    -display none -monitor none -serial "file:$LOG_FILE" \
    -no-reboot \
    -kernel "$IMAGES/vmlinux" -initrd "$WORK/initrd" -append "$CMDLINE" \
    -netdev "$NETDEV" -device virtio-net-pci,netdev=net0 \
    </dev/null >"$WORK/qemu.out" 2>&1 &
QEMU_PID=$!

DEADLINE=$((SECONDS + TIMEOUT_SECS))
TIMED_OUT=0
while kill -0 "$QEMU_PID" 2>/dev/null; do
    if [[ $SECONDS -ge $DEADLINE ]]; then
        TIMED_OUT=1
        kill -TERM "$QEMU_PID" 2>/dev/null || true
        # QEMU exits promptly on SIGTERM; escalate if it does not within 5 s.
        for _ in $(seq 50); do
            kill -0 "$QEMU_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$QEMU_PID" 2>/dev/null || true
        break
    fi
    sleep 0.2
done
QEMU_RC=0
wait "$QEMU_PID" || QEMU_RC=$?
QEMU_PID=""

if [[ -n "$TAIL_PID" ]]; then
    # Let tail drain what QEMU wrote last, then stop it.
    sleep 0.3
    kill "$TAIL_PID" 2>/dev/null || true
    wait "$TAIL_PID" 2>/dev/null || true
    TAIL_PID=""
fi

# In quiet mode the console was not shown; on failure show its end at least.
show_console_tail() {
    if [[ $QUIET -eq 1 ]]; then
        echo "run-guest.sh: last console lines:" >&2
        tr -d '\r' <"$LOG_FILE" | tail -n 30 >&2
    fi
}

if [[ $TIMED_OUT -eq 1 ]]; then
    echo "run-guest.sh: timeout after ${TIMEOUT_SECS}s; guest killed (console log: $LOG_FILE)" >&2
    show_console_tail
    exit 124
fi
CODE="$(tr -d '\r' <"$LOG_FILE" | sed -n 's/.*KEEL-GUEST-EXIT-CODE: \([0-9][0-9]*\)$/\1/p' | tail -n1)"
if [[ -z "$CODE" ]]; then
    echo "run-guest.sh: guest stopped without an exit code (qemu status $QEMU_RC; console log: $LOG_FILE)" >&2
    sed -n '1,20p' "$WORK/qemu.out" >&2
    show_console_tail
    exit 125
fi
exit "$CODE"
