#!/usr/bin/env bash
# Builds the QEMU guest images that Keel's system tests boot to drive the Linux
# kernel NVMe/TCP host driver against Keel's target.
#
# Usage: tests/guest/prepare.sh [CACHE_DIR]
#   CACHE_DIR defaults to $KEEL_GUEST_CACHE, else /var/cache/keel-guest.
#
# Output, per kernel generation GEN in {6.1, 6.12}:
#   CACHE_DIR/GEN/vmlinuz             the Debian kernel image (bzImage)
#   CACHE_DIR/GEN/vmlinux             the same kernel decompressed: QEMU boots it through
#                                     its PVH entry point, skipping firmware and the
#                                     in-guest decompression (about 7.5 s -> 4 s under TCG)
#   CACHE_DIR/GEN/initramfs.cpio      busybox + bash + nvme-cli + fio + e2fsprogs +
#                                     util-linux tools + the modules for nvme-tcp, ext4
#                                     and virtio-net. Deliberately uncompressed: gunzip of
#                                     ~100 MB inside a TCG guest costs ~1.5 s per boot.
#   CACHE_DIR/GEN/kernel-release      the `uname -r` of that kernel
#   CACHE_DIR/GEN/stamp               what the images were built from (rebuild key)
#
# Idempotent: it installs only missing host packages and rebuilds a generation
# only when its inputs (this script, the guest init, package versions) change.
# Kernels are never installed on the host: their packages are downloaded and
# unpacked into the cache with dpkg-deb.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE_DIR="${1:-${KEEL_GUEST_CACHE:-/var/cache/keel-guest}}"
GENERATIONS=(6.1 6.12)

# Host packages: qemu + socat run the guest; the rest provide the guest's
# userland, copied from the host together with its shared libraries.
# busybox-static is not among them: it conflicts with the `busybox` package a
# host may have, so its binary is unpacked into the cache instead.
HOST_PACKAGES=(qemu-system-x86 socat nvme-cli fio e2fsprogs util-linux
    coreutils diffutils bash kmod cpio xz-utils zstd gzip iproute2)
# Binaries copied into the guest (with their libraries, resolved by ldd).
# bash runs the test script: Debian's busybox prefers its own applets over
# binaries in PATH, so under busybox sh `sha256sum` or `blkdiscard` would not
# be the real tool even when it is present.
GUEST_BINARIES=(/usr/bin/bash /usr/sbin/nvme /usr/bin/fio /usr/sbin/mke2fs /usr/sbin/e2fsck
    /usr/sbin/blkdiscard /usr/sbin/blockdev /usr/sbin/wipefs /usr/bin/sha256sum /usr/bin/dd
    /usr/bin/cmp /usr/bin/kmod /usr/bin/socat)
# Modules (names or aliases) whose dependency closure goes into the guest.
GUEST_MODULES=(nvme-tcp nvme-fabrics nvme-core crc32c crc32c_generic crc32c-intel
    ext4 virtio_net virtio_pci virtio_blk configfs loop nvmet nvmet-tcp)

log() { printf 'prepare.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (it installs packages with apt-get)"

APT_UPDATED=0
apt_update_once() {
    if [[ $APT_UPDATED -eq 0 ]]; then
        log "apt-get update"
        apt-get update -qq >/dev/null
        APT_UPDATED=1
    fi
}

package_installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

ensure_host_packages() {
    local missing=() p
    for p in "${HOST_PACKAGES[@]}"; do
        package_installed "$p" || missing+=("$p")
    done
    if [[ ${#missing[@]} -gt 0 ]]; then
        apt_update_once
        log "installing: ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
    fi
}

candidate_version() {
    apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}'
}

# The highest version of package $1 whose version starts with prefix $2.
highest_version() {
    local best="" v
    while read -r v; do
        [[ "$v" == "$2"* ]] || continue
        if [[ -z "$best" ]] || dpkg --compare-versions "$v" gt "$best"; then
            best="$v"
        fi
    done < <(apt-cache madison "$1" 2>/dev/null | awk -F'|' '{gsub(/ /, "", $2); print $2}')
    echo "$best"
}

# Sets META and META_VERSION: the metapackage (and version) that pulls in the
# newest kernel of generation $1. Bookworm has 6.1 as linux-image-amd64. The
# 6.12 LTS kernel is linux-image-6.12-amd64 in bookworm-security; on a mirror
# without it, bookworm-backports has it as its linux-image-amd64.
find_meta() {
    local gen="$1"
    META=""
    META_VERSION=""
    case "$gen" in
        6.1)
            META=linux-image-amd64
            META_VERSION="$(highest_version linux-image-amd64 6.1.)"
            ;;
        6.12)
            META=linux-image-6.12-amd64
            META_VERSION="$(highest_version linux-image-6.12-amd64 6.12.)"
            if [[ -z "$META_VERSION" ]]; then
                META=linux-image-amd64
                META_VERSION="$(highest_version linux-image-amd64 6.12.)"
            fi
            ;;
        *) die "unknown kernel generation $gen" ;;
    esac
}

resolve_meta() {
    local gen="$1"
    find_meta "$gen"
    if [[ -z "$META_VERSION" ]]; then
        apt_update_once
        find_meta "$gen"
    fi
    if [[ -z "$META_VERSION" && "$gen" == 6.12 ]]; then
        local list=/etc/apt/sources.list.d/keel-guest-backports.sources
        log "no 6.12 kernel in the configured suites; enabling bookworm-backports in $list"
        printf '%s\n' 'Types: deb' 'URIs: http://deb.debian.org/debian' \
            'Suites: bookworm-backports' 'Components: main' \
            'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' >"$list"
        apt-get update -qq >/dev/null
        APT_UPDATED=1
        find_meta "$gen"
    fi
    [[ -n "$META_VERSION" ]] || die "no Debian package provides a $gen kernel"
}

# Sets IMAGE_PKG and IMAGE_VERSION from the metapackage's exact dependency
# (the versioned image package, ABI in its name).
resolve_image() {
    local dep
    dep="$(apt-cache show "$META=$META_VERSION" 2>/dev/null |
        sed -n 's/^Depends: .*\(linux-image-[0-9][^ ,]*\) (= \([^)]*\)).*/\1 \2/p' | head -n1)"
    [[ "$dep" == *" "* ]] || die "cannot resolve the image package behind $META=$META_VERSION"
    IMAGE_PKG="${dep%% *}"
    IMAGE_VERSION="${dep#* }"
}

# Copies a file to the same path inside the staging root, replacing any
# busybox applet link of that name instead of writing through it.
stage_file() {
    local src="$1" root="$2" dest="$2$1"
    mkdir -p "$(dirname "$dest")"
    rm -f "$dest"
    cp -L "$src" "$dest"
}

stage_binary_with_libs() {
    local bin="$1" root="$2" lib
    [[ -x "$bin" ]] || die "missing host binary $bin"
    stage_file "$bin" "$root"
    while read -r lib; do
        [[ -e "$root$lib" ]] || stage_file "$lib" "$root"
    done < <(ldd "$bin" | awk '/=> \// {print $3} /^\t\/[^ ]+ \(/ {print $1}')
}

# Builds the architecture-independent userland once per run of this script.
build_userland() {
    local root="$1"
    rm -rf "$root"
    mkdir -p "$root"/usr/{bin,sbin,lib,lib64} "$root"/{dev,proc,sys,run,tmp,mnt,etc/nvme,root}
    ln -s usr/bin "$root/bin"
    ln -s usr/sbin "$root/sbin"
    ln -s usr/lib "$root/lib"
    ln -s usr/lib64 "$root/lib64"

    local busybox="$CACHE_DIR/work/busybox-static/bin/busybox"
    [[ -x "$busybox" ]] || die "busybox-static was not unpacked"
    cp "$busybox" "$root/usr/bin/busybox"
    local applet
    while read -r applet; do
        [[ -e "$root/$applet" || -L "$root/$applet" ]] && continue
        mkdir -p "$(dirname "$root/$applet")"
        ln -s /usr/bin/busybox "$root/$applet"
    done < <("$busybox" --list-full)

    local bin
    for bin in "${GUEST_BINARIES[@]}"; do
        stage_binary_with_libs "$bin" "$root"
    done
    local link
    for link in modprobe insmod rmmod lsmod modinfo depmod; do
        rm -f "$root/usr/sbin/$link"
        ln -s /usr/bin/kmod "$root/usr/sbin/$link"
    done
    for link in mkfs.ext4 mkfs.ext2 mke2fs; do
        [[ "$link" == mke2fs ]] && continue
        rm -f "$root/usr/sbin/$link"
        ln -s mke2fs "$root/usr/sbin/$link"
    done
    rm -f "$root/usr/sbin/fsck.ext4"
    ln -s e2fsck "$root/usr/sbin/fsck.ext4"
    # mke2fs reads its defaults from here; without it ext4 features differ.
    stage_file /etc/mke2fs.conf "$root"

    printf '%s\n' /lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu \
        /usr/lib/x86_64-linux-gnu/ceph >"$root/etc/ld.so.conf"
    ldconfig -r "$root"
    printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
    printf 'root:x:0:\n' >"$root/etc/group"

    install -m 0755 "$HERE/init" "$root/init"
}

# A bzImage carries the kernel ELF compressed after a small decompressor stub.
# Like the kernel's scripts/extract-vmlinux: try each compression magic at each
# place it occurs until one decompresses to an ELF image.
extract_vmlinux() {
    local bzimage="$1" out="$2" magic tool offset
    local -a candidates=(
        '\xfd7zXZ\x00|xz -dcq'
        '\x28\xb5\x2f\xfd|zstd -dcq'
        '\x1f\x8b\x08|gzip -dcq'
    )
    for entry in "${candidates[@]}"; do
        magic="${entry%%|*}"
        tool="${entry#*|}"
        while read -r offset; do
            # Trailing bytes after the stream make the tools exit non-zero; the
            # ELF check below is what decides.
            tail -c +$((offset + 1)) "$bzimage" | $tool >"$out" 2>/dev/null || true
            if [[ "$(head -c 4 "$out" | od -An -tx1 | tr -d ' ')" == "7f454c46" ]]; then
                return 0
            fi
        done < <(LC_ALL=C grep -obUaP "$magic" "$bzimage" | cut -d: -f1 | head -n 8)
    done
    rm -f "$out"
    die "cannot extract an ELF vmlinux from $bzimage"
}

build_generation() {
    local gen="$1"
    local out="$CACHE_DIR/$gen" pkg version
    resolve_meta "$gen"
    resolve_image
    pkg="$IMAGE_PKG"
    version="$IMAGE_VERSION"

    local stamp
    stamp="$(printf '%s\n' "$pkg=$version" "$USERLAND_KEY" | sha256sum | cut -d' ' -f1)"
    if [[ -f "$out/stamp" && "$(cat "$out/stamp")" == "$stamp" &&
        -f "$out/vmlinuz" && -f "$out/vmlinux" && -f "$out/initramfs.cpio" ]]; then
        log "$gen: up to date ($pkg $version)"
        return
    fi
    log "$gen: building from $pkg $version"

    local work="$CACHE_DIR/work/$gen"
    rm -rf "$work"
    mkdir -p "$work/deb" "$work/pkgroot" "$work/modroot" "$out"
    (cd "$work/deb" && apt-get download -qq "$pkg=$version" 2>/dev/null) ||
        (apt_update_once && cd "$work/deb" && apt-get download -qq "$pkg=$version")
    dpkg-deb -x "$work"/deb/*.deb "$work/pkgroot"

    local kdir release
    kdir="$(find "$work/pkgroot/lib/modules" -mindepth 1 -maxdepth 1 -type d | head -n1)"
    [[ -n "$kdir" ]] || die "$pkg ships no modules directory"
    release="$(basename "$kdir")"
    depmod -b "$work/pkgroot" "$release"

    # The dependency closure, as kmod resolves it (aliases, softdeps included).
    local mod path rel
    local -A wanted=()
    for mod in "${GUEST_MODULES[@]}"; do
        while read -r path; do
            wanted["$path"]=1
        done < <(modprobe -d "$work/pkgroot" -S "$release" --show-depends "$mod" 2>/dev/null |
            awk '$1 == "insmod" {print $2}')
    done
    [[ -n "${wanted[*]:-}" ]] || die "$gen: no modules resolved"
    for path in "${!wanted[@]}"; do
        rel="${path#"$work/pkgroot"}"
        mkdir -p "$work/modroot$(dirname "$rel")"
        case "$path" in
            *.ko.xz) xz -dc "$path" >"$work/modroot${rel%.xz}" ;;
            *.ko.zst) zstd -qdc "$path" >"$work/modroot${rel%.zst}" ;;
            *.ko.gz) gzip -dc "$path" >"$work/modroot${rel%.gz}" ;;
            *.ko) cp "$path" "$work/modroot$rel" ;;
            *) die "unexpected module file $path" ;;
        esac
    done
    cp "$kdir"/modules.{order,builtin} "$work/modroot/lib/modules/$release/" 2>/dev/null || true
    [[ -f "$kdir/modules.builtin.modinfo" ]] &&
        cp "$kdir/modules.builtin.modinfo" "$work/modroot/lib/modules/$release/"
    # modules.order lists compressed names; depmod only needs it for ordering.
    sed -i -e 's/\.ko\.\(xz\|zst\|gz\)$/.ko/' "$work/modroot/lib/modules/$release/modules.order" 2>/dev/null || true
    depmod -b "$work/modroot" "$release"
    # The merged-/usr guest resolves /lib through a link; keep modules under usr/.
    mkdir -p "$work/modroot/usr"
    mv "$work/modroot/lib" "$work/modroot/usr/lib"

    local modcpio="$work/modules.cpio"
    (cd "$work/modroot" && find . -mindepth 1 | LC_ALL=C sort |
        cpio --quiet -o -H newc -R 0:0 >"$modcpio")

    cp "$work/pkgroot/boot/vmlinuz-$release" "$out/vmlinuz.new"
    extract_vmlinux "$out/vmlinuz.new" "$out/vmlinux.new"
    cat "$USERLAND_CPIO" "$modcpio" >"$out/initramfs.cpio.new"
    mv "$out/vmlinuz.new" "$out/vmlinuz"
    mv "$out/vmlinux.new" "$out/vmlinux"
    mv "$out/initramfs.cpio.new" "$out/initramfs.cpio"
    rm -f "$out/initramfs.cpio.gz"
    echo "$release" >"$out/kernel-release"
    echo "$stamp" >"$out/stamp"
    rm -rf "$work"
    log "$gen: done ($release, initramfs $(du -h "$out/initramfs.cpio" | cut -f1))"
}

# Unpacks the statically linked busybox into the cache; prints its version.
unpack_busybox() {
    local dir="$CACHE_DIR/work/busybox-static" version
    version="$(candidate_version busybox-static)"
    if [[ -z "$version" || "$version" == "(none)" ]]; then
        apt_update_once
        version="$(candidate_version busybox-static)"
    fi
    [[ -n "$version" && "$version" != "(none)" ]] || die "no candidate for busybox-static"
    if [[ "$(cat "$dir/version" 2>/dev/null)" != "$version" || ! -x "$dir/bin/busybox" ]]; then
        rm -rf "$dir" "$CACHE_DIR/work/busybox-deb"
        mkdir -p "$dir" "$CACHE_DIR/work/busybox-deb"
        (cd "$CACHE_DIR/work/busybox-deb" && apt-get download -qq "busybox-static=$version" 2>/dev/null) ||
            (apt_update_once && cd "$CACHE_DIR/work/busybox-deb" &&
                apt-get download -qq "busybox-static=$version" 2>/dev/null)
        dpkg-deb -x "$CACHE_DIR"/work/busybox-deb/*.deb "$dir"
        rm -rf "$CACHE_DIR/work/busybox-deb"
        echo "$version" >"$dir/version"
    fi
    echo "$version"
}

main() {
    mkdir -p "$CACHE_DIR"
    # Test processes may call this concurrently; one builds, the others wait.
    exec 9>"$CACHE_DIR/.lock"
    flock 9
    ensure_host_packages
    mkdir -p "$CACHE_DIR/work"
    local busybox_version
    busybox_version="$(unpack_busybox)"

    # Everything the shared userland is built from; a change rebuilds all.
    USERLAND_KEY="$(
        {
            # Contents only: the key must not depend on the checkout's path.
            cat "$HERE/prepare.sh" "$HERE/init" | sha256sum
            dpkg-query -W -f='${Package}=${Version}\n' "${HOST_PACKAGES[@]}"
            echo "busybox-static=$busybox_version"
        } | sha256sum | cut -d' ' -f1
    )"
    USERLAND_CPIO="$CACHE_DIR/work/userland.cpio"
    rm -f "$CACHE_DIR/work/userland.cpio.gz"
    local need_userland=0 gen
    for gen in "${GENERATIONS[@]}"; do
        [[ -f "$CACHE_DIR/$gen/stamp" ]] || need_userland=1
    done
    # Building the userland is cheap relative to a guest boot; a stale stamp
    # is detected per generation, so build it whenever any generation may need it.
    if [[ $need_userland -eq 1 || ! -f "$USERLAND_CPIO" ]] ||
        [[ "$(cat "$CACHE_DIR/work/userland.key" 2>/dev/null)" != "$USERLAND_KEY" ]]; then
        log "building guest userland"
        local uroot="$CACHE_DIR/work/userland"
        build_userland "$uroot"
        (cd "$uroot" && find . -mindepth 1 | LC_ALL=C sort |
            cpio --quiet -o -H newc -R 0:0 >"$USERLAND_CPIO.new")
        mv "$USERLAND_CPIO.new" "$USERLAND_CPIO"
        echo "$USERLAND_KEY" >"$CACHE_DIR/work/userland.key"
        rm -rf "$uroot"
    fi
    for gen in "${GENERATIONS[@]}"; do
        build_generation "$gen"
    done
    log "images ready in $CACHE_DIR"
}

main "$@"
