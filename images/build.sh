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

echo "==> image hepbatch-operator:$version (FROM scratch)"
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
mkdir -p "$context/bin"
cp "$binary" "$context/bin/hepbatch-operator"
"${buildah[@]}" build -q -f images/operator.Containerfile \
  --build-arg VERSION="$version" --build-arg REVISION="$revision" \
  --build-arg BINARY=bin/hepbatch-operator \
  -t "localhost/hepbatch-operator:$version" "$context" >/dev/null
rm -f "$out/hepbatch-operator.oci.tar"
"${buildah[@]}" push -q "localhost/hepbatch-operator:$version" \
  "oci-archive:$out/hepbatch-operator.oci.tar:hepbatch-operator:$version"
"${buildah[@]}" inspect --format '{{.OCIv1.Config.Labels}}' \
  "localhost/hepbatch-operator:$version"
echo
printf '    image archive: %s bytes (%s)\n' "$(stat -c %s "$out/hepbatch-operator.oci.tar")" \
  "$out/hepbatch-operator.oci.tar"

rm -f "$out/hepbatch-operator.docker.tar"
"${buildah[@]}" push -q "localhost/hepbatch-operator:$version" \
  "docker-archive:$out/hepbatch-operator.docker.tar:localhost/hepbatch-operator:$version"

echo "==> release build of hepbatch-csi"
cargo build -q --release -p hepbatch-csi --bin hepbatch-csi
csi_binary="$target_dir/release/hepbatch-csi"
printf '    binary: %s bytes\n' "$(stat -c %s "$csi_binary")"

echo "==> CVMFS client (tests/cvmfs/build.sh)"
cvmfs_root=$(bash tests/cvmfs/build.sh)
[ -d "$cvmfs_root" ] || { echo "    needs the CVMFS build tree, got: $cvmfs_root" >&2; exit 1; }

echo "==> base root file system (debootstrap bookworm minbase, cached)"
rootfs=$(bash images/rootfs.sh csi-base fuse3 libfuse2 squashfuse libssl3 libuuid1)
printf '    %s: %s bytes\n' "$rootfs" "$(stat -c %s "$rootfs")"

echo "==> image hepbatch-csi:$version (Debian bookworm minbase + CVMFS client)"
csi_context=$(mktemp -d)
trap 'rm -rf "$context" "$csi_context"' EXIT
cp "$rootfs" "$csi_context/rootfs.tar"
mkdir -p "$csi_context/bin" "$csi_context/cvmfs"
cp "$csi_binary" "$csi_context/bin/hepbatch-csi"
# The client half: no server tools, no debug libraries.
(cd "$cvmfs_root" && tar -cf - \
  etc/cvmfs usr/libexec/cvmfs usr/bin/cvmfs2 usr/bin/cvmfs_talk usr/bin/cvmfs_config \
  usr/bin/cvmfs_fsck $(ls usr/lib/libcvmfs_{fuse,fuse3,fuse_stub,fuse3_stub,crypto,util}.so* 2>/dev/null)) \
  | tar -C "$csi_context/cvmfs" -xf -
"${buildah[@]}" build -q -f images/csi.Containerfile \
  --build-arg VERSION="$version" --build-arg REVISION="$revision" \
  -t "localhost/hepbatch-csi:$version" "$csi_context" >/dev/null
rm -f "$out/hepbatch-csi.oci.tar" "$out/hepbatch-csi.docker.tar"
"${buildah[@]}" push -q "localhost/hepbatch-csi:$version" \
  "oci-archive:$out/hepbatch-csi.oci.tar:hepbatch-csi:$version"
"${buildah[@]}" push -q "localhost/hepbatch-csi:$version" \
  "docker-archive:$out/hepbatch-csi.docker.tar:localhost/hepbatch-csi:$version"
printf '    image archive: %s bytes (%s)\n' "$(stat -c %s "$out/hepbatch-csi.oci.tar")" \
  "$out/hepbatch-csi.oci.tar"
printf '    unpacked: %s\n' "$(du -sh --apparent-size "$csi_context" | cut -f1) (context)"
