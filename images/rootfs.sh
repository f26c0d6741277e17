#!/usr/bin/env bash
# A Debian root file system for an image, made with debootstrap and cached outside the
# clone (no registry is needed to build images on top of it):
#
#   rootfs.sh <name> [package...]    print the path of <cache>/<name>-<key>.rootfs.tar
#
# The tarball is `debootstrap --variant=minbase` of bookworm with the packages added,
# without documentation, man pages, locales and package caches. The key hashes this
# script, the suite, the mirror, the packages and the debootstrap version, so a tarball
# is made once per recipe. Needs root. HEPBATCH_DEBIAN_MIRROR overrides the mirror (the
# first Debian mirror of the apt sources by default).
set -euo pipefail

[ $# -ge 1 ] || { echo "usage: rootfs.sh <name> [package...]" >&2; exit 2; }
name=$1; shift
suite=bookworm
cache="${XDG_CACHE_HOME:-$HOME/.cache}/hepbatch/images"

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
mirror=$(debian_mirror)
key=$({ sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1; echo "$suite $mirror $*";
  dpkg-query -W -f '${Version}' debootstrap 2>/dev/null; } | sha256sum | cut -c1-16)
tarball="$cache/$name-$key.rootfs.tar"
if [ -f "$tarball" ]; then
  echo "$tarball"; exit 0
fi

[ "$(id -u)" -eq 0 ] || { echo "rootfs.sh: debootstrap needs root" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "rootfs.sh: debootstrap is not installed" >&2; exit 1; }
mkdir -p "$cache"
work=$(mktemp -d "$cache/.rootfs.XXXXXX")
trap 'rm -rf "$work"' EXIT
include=()
[ $# -eq 0 ] || include=(--include="$(IFS=,; echo "$*")")
started=$SECONDS
debootstrap --variant=minbase "${include[@]}" "$suite" "$work/root" "$mirror" \
  >"$work/debootstrap.log" 2>&1 || { tail -30 "$work/debootstrap.log" >&2; exit 1; }
rm -rf "$work/root"/usr/share/{doc,man,info,locale} "$work/root"/var/cache/apt/* \
  "$work/root"/var/lib/apt/lists/* "$work/root"/var/log/*
tar -C "$work/root" --numeric-owner -cf "$work/rootfs.tar" .
mv "$work/rootfs.tar" "$tarball"
echo "rootfs.sh: $name in $((SECONDS - started)) s: $(du -h "$tarball" | cut -f1)" >&2
echo "$tarball"
