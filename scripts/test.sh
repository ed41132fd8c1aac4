#!/usr/bin/env bash
# Runs Keel's whole test suite on a fresh Debian machine: installs what the
# system tests need (QEMU and the guest's userland, fio, etcd, the guest kernels),
# checks formatting and lints, builds everything, then runs every test tier —
# unit, property, crash, fuzz twins, loop device, the Linux kernel NVMe/TCP host
# in QEMU, real HTTP — and, where nightly is present, cargo-fuzz.
# Must run as root (apt-get, losetup, QEMU guests).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '\n=== %s\n' "$*" >&2; }

if ! command -v cargo >/dev/null; then
    echo "cargo is required (rustup installs it)" >&2
    exit 1
fi

log "guest images for the NVMe/TCP system tests (installs QEMU, nvme-cli, fio, kernels)"
tests/guest/prepare.sh

# fio is the benchmarks' baseline; curl drives the REST API in the system tests;
# losetup (util-linux) backs the loop-device test; python3 with venv lets
# tests/api/schemathesis.sh and tests/api/openstack_clients.sh install their
# Python clients; etcd
# (etcd-server) holds the cluster metadata in tests/cluster_membership.rs;
# ip (iproute2) makes the network namespaces tests/cluster_partition.rs cuts.
missing=()
command -v fio >/dev/null || missing+=(fio)
command -v curl >/dev/null || missing+=(curl)
command -v losetup >/dev/null || missing+=(util-linux)
command -v python3 >/dev/null || missing+=(python3)
command -v etcd >/dev/null || missing+=(etcd-server)
command -v ip >/dev/null || missing+=(iproute2)
# tests/api/openstack_clients.sh always makes a venv (python-cinderclient,
# openstacksdk), so venv is needed whether or not schemathesis is installed.
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    missing+=(python3-venv)
fi
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

log "formatting (rustfmt)"
if cargo fmt --version >/dev/null 2>&1; then
    cargo fmt --all --check
else
    echo "rustfmt is not installed: skipping the formatting check" >&2
fi

log "lints (clippy, warnings are errors)"
if cargo clippy --version >/dev/null 2>&1; then
    cargo clippy --workspace --all-targets --locked -- -D warnings
else
    echo "clippy is not installed: skipping the lint check" >&2
fi

log "build (all targets, including the crash-test writer example)"
cargo build --workspace --all-targets --locked

log "tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast --failure-output final
else
    cargo test --workspace --locked --no-fail-fast
fi
log "doc tests"
cargo test --workspace --doc --locked

# cargo-fuzz needs a nightly toolchain; the stable suite above already runs the
# decoders' proptest twins, so a machine without nightly skips this tier loudly.
# Where nightly is present, cargo-fuzz itself is installed from crates.io.
log "fuzzing (cargo fuzz, ${KEEL_FUZZ_SECONDS:-60} s per target)"
if cargo +nightly --version >/dev/null 2>&1 && ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked || echo "cannot install cargo-fuzz" >&2
fi
if cargo +nightly --version >/dev/null 2>&1 && cargo +nightly fuzz --version >/dev/null 2>&1; then
    (
        cd fuzz
        for target in $(cargo +nightly fuzz list); do
            # New finds go to corpus/<target>; seeds/<target> (in git) seeds it.
            mkdir -p "corpus/$target"
            seeds=()
            [ -d "seeds/$target" ] && seeds=("seeds/$target")
            cargo +nightly fuzz run "$target" "corpus/$target" "${seeds[@]}" -- \
                -max_total_time="${KEEL_FUZZ_SECONDS:-60}" -rss_limit_mb=2048 -max_len=65536
        done
    )
else
    echo "SKIPPED: no nightly toolchain with cargo-fuzz on this machine; the proptest twins of the fuzz targets ran above" >&2
fi
