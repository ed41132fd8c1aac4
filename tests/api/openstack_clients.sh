#!/usr/bin/env bash
# Drives keeld's Cinder dialect with OpenStack's own clients: the
# python-cinderclient CLI (noauth: `X-Auth-Token: admin:default`, which
# keeld takes with --cinder-noauth) and openstacksdk (a Keel token sent as
# X-Auth-Token), each through create, list, extend, snapshot, a volume from
# the snapshot, a clone, and delete; the CLI also through a volume type with
# extra specs and a QoS spec.
#
#   tests/api/openstack_clients.sh --url https://127.0.0.1:PORT --token TOKEN
#
# Installation: the clients go into a venv under the cargo target directory
# (pinned versions), made on first use; on a fresh Debian that needs python3
# and python3-venv (scripts/test.sh installs them).
set -euo pipefail

CINDERCLIENT_VERSION=9.10.0
OPENSTACKSDK_VERSION=4.22.0

url=""
token=""
while [ $# -gt 0 ]; do
    case "$1" in
        --url) url="$2"; shift 2 ;;
        --token) token="$2"; shift 2 ;;
        *) echo "openstack_clients.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -n "$url" ] && [ -n "$token" ] || { echo "openstack_clients.sh: --url and --token are required" >&2; exit 2; }

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${CARGO_TARGET_DIR:-$repo/target}/openstack-venv"
if [ ! -x "$venv/bin/cinder" ] || ! "$venv/bin/python" -c 'import openstack' 2>/dev/null; then
    echo "openstack_clients.sh: installing python-cinderclient $CINDERCLIENT_VERSION and openstacksdk $OPENSTACKSDK_VERSION into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet \
        "python-cinderclient==$CINDERCLIENT_VERSION" "openstacksdk==$OPENSTACKSDK_VERSION"
fi
export PYTHONWARNINGS=ignore

cinder() {
    "$venv/bin/cinder" --insecure --os-auth-type noauth --os-user-id admin \
        --os-project-id default --os-endpoint "$url/v3" "$@" 2>/dev/null
}
# The value of `field` in a `cinder show`-style table.
field() { awk -v f="$1" -F'|' '{gsub(/ /, "", $2); gsub(/^ +| +$/, "", $3)} $2 == f {print $3}'; }
fail() { echo "openstack_clients.sh: $*" >&2; exit 1; }

vol="$(cinder create 1 --name cli-vol | field id)"
[ -n "$vol" ] || fail "cinder create printed no id"
[ "$(cinder show "$vol" | field status)" = available ] || fail "new volume not available"
cinder extend "$vol" 2
[ "$(cinder show "$vol" | field size)" = 2 ] || fail "extend did not take"
snap="$(cinder snapshot-create "$vol" --name cli-snap | field id)"
[ "$(cinder snapshot-show "$snap" | field status)" = available ] || fail "snapshot not available"
from_snap="$(cinder create --snapshot-id "$snap" --name cli-fromsnap | field id)"
[ "$(cinder show "$from_snap" | field snapshot_id)" = "$snap" ] || fail "volume from snapshot lost its source"
clone="$(cinder create --source-volid "$vol" --name cli-clone | field id)"
[ "$(cinder show "$clone" | field source_volid)" = "$vol" ] || fail "clone lost its source"
listed="$(cinder list | grep -c 'cli-' || true)"
[ "$listed" = 3 ] || fail "cinder list shows $listed of 3 volumes"
cinder delete "$vol" && fail "a volume with a snapshot was deleted"
cinder delete "$from_snap" "$clone"
cinder snapshot-delete "$snap"
for _ in $(seq 50); do
    [ -z "$(cinder snapshot-list | grep cli-snap || true)" ] && break
    sleep 0.1
done
cinder delete "$vol"
for _ in $(seq 50); do
    [ -z "$(cinder list | grep 'cli-' || true)" ] && break
    sleep 0.1
done
[ -z "$(cinder list | grep 'cli-' || true)" ] || fail "volumes left after delete"
# Whole outputs first: `grep -q` stopping early would break cinder's pipe.
types="$(cinder type-list)"
grep -q __DEFAULT__ <<<"$types" || fail "type-list lacks __DEFAULT__"
# A type with specs Keel acts on and a QoS spec: a volume of the type is made
# with both; a spec Keel cannot act on is refused.
cinder type-create cli-gold >/dev/null
cinder type-key cli-gold set compression='<is> True' lightos:num_replicas=1
type_id="$(cinder type-list | awk '/ cli-gold / {print $2}')"
[ -n "$type_id" ] || fail "type-list lacks cli-gold"
qos="$(cinder qos-create cli-qos total_iops_sec=1000 | field id)"
[ -n "$qos" ] || fail "qos-create printed no id"
cinder qos-associate "$qos" "$type_id"
typed="$(cinder create 1 --name cli-typed --volume-type cli-gold | field id)"
[ "$(cinder show "$typed" | field volume_type)" = cli-gold ] || fail "volume lost its type"
cinder type-key cli-gold set dedup=true >/dev/null && fail "a spec Keel cannot act on was taken"
cinder qos-create cli-fe consumer=front-end total_iops_sec=1 >/dev/null \
    && fail "a front-end QoS spec was taken"
cinder type-delete cli-gold && fail "a type in use was deleted"
cinder delete "$typed"
for _ in $(seq 50); do
    [ -z "$(cinder list | grep 'cli-typed' || true)" ] && break
    sleep 0.1
done
cinder qos-disassociate "$qos" "$type_id"
cinder qos-delete "$qos"
cinder type-delete cli-gold
cinder quota-update --gigabytes 100 default >/dev/null
[ "$(cinder quota-show default | field gigabytes)" = 100 ] || fail "quota-update did not take"
cinder quota-update --gigabytes -1 default >/dev/null
echo "python-cinderclient cycle: ok"

"$venv/bin/python" "$here/openstack_sdk.py" "$url" "$token"
