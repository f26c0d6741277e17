#!/usr/bin/env bash
# Builds the operator and CSI images without any registry and prints their sizes.
#
#   bash images/build.sh            # -> $out/hepbatch-{operator,csi}.{oci,docker}.tar
#
# - operator: the release binary, linked statically (crt-static), copied onto `scratch`.
# - csi: the release binary, the client half of the CVMFS build (tests/cvmfs/build.sh,
#   built from the vendored source or found installed) and a Debian bookworm minbase
#   root file system made with debootstrap (cached under ~/.cache/hepbatch/images).
#
# Each image is written as an OCI archive and as a docker archive (the form
# `ctr images import` names after its tag, used by the real-node tests). Uses buildah
# with the vfs storage driver and chroot isolation, so it runs as root in a container or
# VM without overlay or user namespaces.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=common.sh
source images/common.sh

# Everything below runs in a private mount namespace whose /etc, /var/lib and /var/tmp are
# throw-away overlays (images/common.sh): the host keeps nothing of buildah.
if [ "${1:-}" != --in-namespace ]; then
  [ "$(id -u)" -eq 0 ] || { echo "images/build.sh needs root (buildah on vfs, debootstrap)" >&2; exit 1; }
  overlays=$(mktemp -d -t hepbatch-images.XXXXXX)
  trap 'rm -rf "$overlays"' EXIT
  unshare --mount --propagation private -- bash "$0" --in-namespace "$overlays"
  exit 0
fi
private_overlays "$2"

target_dir=${CARGO_TARGET_DIR:-target}
out=${IMAGES_OUT:-$target_dir/images}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
triple=x86_64-unknown-linux-gnu
mkdir -p "$out"
buildah=(buildah --storage-driver vfs)
export BUILDAH_ISOLATION=chroot

echo "==> release build of hepbatch-operator (static, LTO, stripped)"
RUSTFLAGS="-C target-feature=+crt-static" \
  cargo build -q --release --target "$triple" -p hepbatch-operator --bin hepbatch-operator
binary="$target_dir/$triple/release/hepbatch-operator"
file "$binary" 2>/dev/null || true
printf '    binary: %s bytes\n' "$(stat -c %s "$binary")"

# <name> <Containerfile> <context> <inputs...>: builds localhost/<name>:<version> into
# $out/<name>.oci.tar and $out/<name>.docker.tar, unless the archives of exactly these
# inputs (hashed into $out/<name>.key) exist already. The revision label is that of the
# build that first produced them.
build_image() {
  local name=$1 containerfile=$2 context=$3; shift 3
  local image="localhost/$name:$version" key
  key=$({ sha256sum <"$containerfile"; printf '%s\n' "$@"; } | sha256sum | cut -c1-16)
  if [ "$(cat "$out/$name.key" 2>/dev/null)" = "$key" ] &&
     [ -f "$out/$name.oci.tar" ] && [ -f "$out/$name.docker.tar" ]; then
    echo "    $image up to date ($out/$name.oci.tar)"
    return
  fi
  "${buildah[@]}" build -q -f "$containerfile" \
    --build-arg VERSION="$version" --build-arg REVISION="$revision" \
    -t "$image" "$context" >/dev/null
  rm -f "$out/$name.oci.tar" "$out/$name.docker.tar" "$out/$name.key"
  "${buildah[@]}" push -q "$image" "oci-archive:$out/$name.oci.tar:$name:$version"
  "${buildah[@]}" push -q "$image" "docker-archive:$out/$name.docker.tar:$image"
  echo "$key" >"$out/$name.key"
  printf '    image archive: %s bytes (%s)\n' "$(stat -c %s "$out/$name.oci.tar")" "$out/$name.oci.tar"
}

echo "==> image hepbatch-operator:$version (FROM scratch)"
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
# Where the Containerfile's default BINARY expects it.
mkdir -p "$context/target/$triple/release"
cp "$binary" "$context/target/$triple/release/hepbatch-operator"
build_image hepbatch-operator images/operator.Containerfile "$context" \
  "$(sha256sum "$binary" | cut -d' ' -f1)"

echo "==> release build of hepbatch-csi"
cargo build -q --release -p hepbatch-csi --bin hepbatch-csi
csi_binary="$target_dir/release/hepbatch-csi"
printf '    binary: %s bytes\n' "$(stat -c %s "$csi_binary")"

echo "==> CVMFS client (tests/cvmfs/build.sh)"
# The DESTDIR tree of our build, or "installed" on a machine with the CERN packages (then
# the client's files are taken from / and its libraries from wherever they are).
cvmfs_root=$(bash tests/cvmfs/build.sh)
case "$cvmfs_root" in
  installed) cvmfs_src=/ ;;
  *) [ -d "$cvmfs_root" ] || { echo "    no CVMFS build tree at $cvmfs_root" >&2; exit 1; }
     cvmfs_src=$cvmfs_root ;;
esac

echo "==> base root file system (debootstrap bookworm minbase, cached)"
rootfs=$(bash images/rootfs.sh csi-base fuse3 libfuse2 squashfuse libssl3 libuuid1)
printf '    %s: %s bytes\n' "$rootfs" "$(stat -c %s "$rootfs")"

echo "==> image hepbatch-csi:$version (Debian bookworm minbase + CVMFS client)"
csi_context=$(mktemp -d)
trap 'rm -rf "$context" "$csi_context"' EXIT
cp "$rootfs" "$csi_context/rootfs.tar"
mkdir -p "$csi_context/bin" "$csi_context/cvmfs/usr/lib"
cp "$csi_binary" "$csi_context/bin/hepbatch-csi"
# The client half: no server tools, no debug libraries; the libraries into /usr/lib.
(cd "$cvmfs_src" && tar -cf - \
  etc/cvmfs usr/libexec/cvmfs usr/bin/cvmfs2 usr/bin/cvmfs_talk usr/bin/cvmfs_config \
  usr/bin/cvmfs_fsck) | tar -C "$csi_context/cvmfs" -xf -
find "$cvmfs_src/usr/lib" "$cvmfs_src/usr/lib64" -maxdepth 2 \
  \( -name 'libcvmfs_fuse*.so*' -o -name 'libcvmfs_crypto.so*' -o -name 'libcvmfs_util.so*' \) \
  -not -name '*debug*' -exec cp -a {} "$csi_context/cvmfs/usr/lib/" \; 2>/dev/null || true
ls "$csi_context"/cvmfs/usr/lib/libcvmfs_fuse3*.so* >/dev/null 2>&1 ||
  { echo "    no libcvmfs_fuse3 in $cvmfs_src/usr/lib*" >&2; exit 1; }
# Keyed by content: the same client from another path (or from /) is the same image.
cvmfs_hash=$(cd "$csi_context/cvmfs" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
build_image hepbatch-csi images/csi.Containerfile "$csi_context" \
  "$(sha256sum "$csi_binary" | cut -d' ' -f1)" "$rootfs" "cvmfs $cvmfs_hash"
printf '    unpacked: %s\n' "$(du -sh --apparent-size "$csi_context" | cut -f1) (context)"
