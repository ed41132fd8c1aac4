#!/usr/bin/env bash
# Creates or deletes the network namespace for run-guest.sh --netns: the
# alternative to QEMU user networking, where the guest's virtio-net is a tap
# device inside a namespace of its own and the host side (Keel's target) runs
# in that namespace as well, without a forwarder in between.
#
# Usage:
#   tests/guest/netns.sh create NAME   namespace NAME with lo up and tap device
#                                      keeltap0 holding 10.0.2.100/24 (idempotent)
#   tests/guest/netns.sh delete NAME   removes the namespace and its tap device
#
# Inside NAME, start the target bound to 10.0.2.100 (or 127.0.0.1 for the REST
# API, which the guest does not need), e.g.
#   ip netns exec NAME target/debug/keeld --listen 10.0.2.100:4420 ...
# then run the guest with `run-guest.sh --netns NAME`; the guest (10.0.2.15)
# connects to 10.0.2.100:4420 directly. Nothing in the namespace is routed to
# the outside: it has no other interface and no default route.
set -euo pipefail

TAP=keeltap0
HOST_CIDR=10.0.2.100/24

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2; exit 2; }

[[ $# -eq 2 ]] || usage
ACTION="$1"
NAME="$2"
[[ "$NAME" =~ ^[A-Za-z0-9_.-]{1,32}$ ]] || { echo "netns.sh: bad namespace name '$NAME'" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "netns.sh: must run as root" >&2; exit 1; }

netns_exists() { ip netns list | awk '{print $1}' | grep -qx "$NAME"; }

case "$ACTION" in
    create)
        netns_exists || ip netns add "$NAME"
        ip -n "$NAME" link set lo up
        if ! ip -n "$NAME" link show "$TAP" >/dev/null 2>&1; then
            ip -n "$NAME" tuntap add dev "$TAP" mode tap
        fi
        if ! ip -n "$NAME" -4 addr show dev "$TAP" | grep -q "inet ${HOST_CIDR%/*}/"; then
            ip -n "$NAME" addr add "$HOST_CIDR" dev "$TAP"
        fi
        ip -n "$NAME" link set "$TAP" up
        ;;
    delete)
        if netns_exists; then
            ip -n "$NAME" link del "$TAP" 2>/dev/null || true
            ip netns del "$NAME"
        fi
        ;;
    *) usage ;;
esac
