#!/usr/bin/env bash
# Builds the images a real testbed node runs, without any container registry, into a
# cache outside the clone:
#
#   ${XDG_CACHE_HOME:-~/.cache}/hepbatch/images/<name>-<key>.docker.tar
#
# - localhost/hepbatch-pause:1 — containerd's sandbox image: busybox-static and a shell
#   that sleeps until SIGTERM (PID 1 ignores signals it has no handler for, so it traps
#   TERM and INT and exits 0).
# - localhost/hepbatch-analysis-base:bookworm — a light-weight base OS with bash, standing
#   in for the cc7/el8/el9 analysis images (which live in registries): a Debian bookworm
#   `debootstrap --variant=minbase` root file system without package caches or docs.
#
# Each key hashes this script and the versions of the inputs (busybox-static, or
# debootstrap with the suite and mirror), so an image is rebuilt only when its recipe
# changes. Images are built with buildah on vfs storage with chroot isolation (root in a
# VM or container, no user namespaces needed), in a throw-away storage root, and written
# as docker archives that `ctr images import` reads with their names.
#
# Even with a storage root of its own, buildah creates /etc/cni/net.d and
# /var/lib/containers/cache, and debootstrap mounts /proc into its target: the build runs
# in a private mount namespace where /etc, /var/lib and /var/tmp are overlays with their
# upper layers in the build directory, so the host sees none of it.
#
#   node-images.sh            build what is missing; print "<image> <archive>" per line
#   node-images.sh --check    print the same lines; fail if an image is not built yet
#
# Progress goes to stderr. Environment: HEPBATCH_DEBIAN_MIRROR (default: the first
# Debian mirror in the apt sources, else http://deb.debian.org/debian).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/hepbatch/images"
pause_image=localhost/hepbatch-pause:1
base_image=localhost/hepbatch-analysis-base:bookworm
suite=bookworm

log() { printf 'node-images: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# shellcheck source=common.sh
source "$here/common.sh"

version_of() { dpkg-query -W -f '${Version}' "$1" 2>/dev/null || echo "not-installed"; }

key() { { cat "$here/node-images.sh" "$here/rootfs.sh" "$here/common.sh" | sha256sum; printf '%s\n' "$@"; } | sha256sum | cut -c1-16; }

mirror=$(debian_mirror)
pause_archive="$cache/hepbatch-pause-$(key "$pause_image" "$(version_of busybox-static)").docker.tar"
base_archive="$cache/hepbatch-analysis-base-$(key "$base_image" "$(version_of debootstrap)" "$suite" "$mirror").docker.tar"

report() {
  echo "$pause_image $pause_archive"
  echo "$base_image $base_archive"
}

case "${1:-}" in
  --check)
    for archive in "$pause_archive" "$base_archive"; do
      [ -f "$archive" ] || die "$archive is not built: run $here/node-images.sh"
    done
    report; exit 0 ;;
  --in-namespace) work=$2 ;; # internal: the build itself, see below
  "") ;;
  *) die "unknown argument: $1" ;;
esac

if [ -z "${work:-}" ]; then
  if [ -f "$pause_archive" ] && [ -f "$base_archive" ]; then
    log "up to date"
    report; exit 0
  fi
  [ "$(id -u)" -eq 0 ] || die "building the node images needs root (debootstrap, buildah on vfs)"
  mkdir -p "$cache"
  work=$(mktemp -d "$cache/.build.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  unshare --mount --propagation private -- bash "$here/node-images.sh" --in-namespace "$work"
  report; exit 0
fi

# From here on: inside the private mount namespace.
private_overlays "$work"
export BUILDAH_ISOLATION=chroot
buildah=(buildah --storage-driver vfs --root "$work/storage" --runroot "$work/runroot")

# <image> <archive> <context dir>: builds <context>/Containerfile into a docker archive.
build_image() {
  local image=$1 archive=$2 context=$3
  "${buildah[@]}" build -q --layers=false -f "$context/Containerfile" -t "$image" "$context" >/dev/null
  rm -f "$archive.tmp"
  "${buildah[@]}" push -q "$image" "docker-archive:$archive.tmp:$image"
  mv "$archive.tmp" "$archive"
  # Archives of older recipes of the same image are of no further use.
  local prefix=${archive%-*}
  for old in "$prefix"-*.docker.tar; do [ "$old" = "$archive" ] || rm -f "$old"; done
  "${buildah[@]}" rmi -f "$image" >/dev/null
  log "$image: $(du -h "$archive" | cut -f1) ($archive)"
}

if [ ! -f "$pause_archive" ]; then
  start=$SECONDS
  command -v busybox >/dev/null || die "busybox-static is not installed"
  busybox=$(command -v busybox)
  file -L "$busybox" 2>/dev/null | grep -q 'statically linked' || log "warning: $busybox may not be static"
  context="$work/pause"
  mkdir -p "$context/rootfs/bin"
  cp "$busybox" "$context/rootfs/bin/busybox"
  for applet in sh sleep; do ln -s busybox "$context/rootfs/bin/$applet"; done
  cat >"$context/Containerfile" <<'EOF'
FROM scratch
COPY rootfs/ /
LABEL org.opencontainers.image.title="hepbatch-pause" \
      org.opencontainers.image.description="Pod sandbox of the hepbatch testbed's real nodes"
ENTRYPOINT ["/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"]
EOF
  build_image "$pause_image" "$pause_archive" "$context"
  log "pause image built in $((SECONDS - start)) s"
fi

if [ ! -f "$base_archive" ]; then
  start=$SECONDS
  context="$work/base"
  mkdir -p "$context"
  log "debootstrap --variant=minbase $suite from $mirror (cached by images/rootfs.sh) ..."
  cp "$(bash "$here/rootfs.sh" analysis-base)" "$context/rootfs.tar"
  cat >"$context/Containerfile" <<EOF
FROM scratch
ADD rootfs.tar /
LABEL org.opencontainers.image.title="hepbatch-analysis-base" \\
      org.opencontainers.image.description="Debian $suite minbase with bash, a stand-in for the cc7/el8/el9 analysis images"
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CMD ["/bin/bash"]
EOF
  build_image "$base_image" "$base_archive" "$context"
  log "analysis base image built in $((SECONDS - start)) s"
fi
