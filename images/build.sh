#!/usr/bin/env bash
# Builds the container images this machine can build and prints their sizes.
#
#   bash images/build.sh            # operator image -> $out/hepbatch-operator.oci.tar
#
# - operator: the release binary, linked statically (crt-static), copied onto `scratch`
#   with buildah (no registry access needed). Written as an OCI archive.
# - csi: needs the AlmaLinux base image and the CERN CVMFS package repository; where
#   neither registry is reachable this script says so and skips it.
#
# Uses buildah with the vfs storage driver and chroot isolation, so it runs as root in
# a container or VM without overlay or user namespaces.
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

echo "==> image hepbatch-csi"
if timeout 5 bash -c 'exec 3<>/dev/tcp/cvmrepo.s3.cern.ch/443' 2>/dev/null; then
  cargo build -q --release -p hepbatch-csi --bin hepbatch-csi
  "${buildah[@]}" build -q -f images/csi.Containerfile \
    --build-arg VERSION="$version" --build-arg REVISION="$revision" \
    -t "localhost/hepbatch-csi:$version" .
else
  echo "    skipped: the CERN package repository (cvmrepo.s3.cern.ch) is not reachable from"
  echo "    here, and the CVMFS client is not packaged in Debian"
fi
