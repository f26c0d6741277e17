#!/usr/bin/env bash
# Provides the real CernVM-FS client and server tools for the tests.
#
# - If `cvmfs2` >= 2.11 is installed (a machine with the CERN packages), nothing is built:
#   the script prints "installed" and exits.
# - Otherwise the vendored source (../shared/vendor/cvmfs-<version>-src.tar.xz next to the
#   clone, or $HEPBATCH_CVMFS_TARBALL) is built once into a cache outside the clone, keyed
#   by the tarball's SHA-256 and this script:
#
#     ${XDG_CACHE_HOME:-~/.cache}/hepbatch/cvmfs/<key>/root     a `make install DESTDIR` tree
#
#   and that tree is copied onto / (the client binaries hard-code /etc/cvmfs,
#   /usr/libexec/cvmfs and /var/lib/cvmfs). CI machines are root and throw-away; on a
#   workstation this installs what the cvmfs and cvmfs-server packages would: /usr/bin
#   (cvmfs2, cvmfs_config, cvmfs_talk, cvmfs_server, cvmfs_swissknife, ...), /usr/lib
#   (libcvmfs_fuse*.so), /usr/libexec/cvmfs, /usr/share/cvmfs-server, /etc/cvmfs,
#   /etc/auto.cvmfs and /sbin/mount.cvmfs.
#
#   build.sh            build if needed, install, print the DESTDIR tree on stdout
#   build.sh --root     print the cached DESTDIR tree; fail if it is not built yet
#   build.sh --key      print the cache key
#
# Progress goes to stderr. Debian build dependencies: see `.ci/run` (install_packages).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
version=2.11.5
tarball=${HEPBATCH_CVMFS_TARBALL:-$repo/../shared/vendor/cvmfs-$version-src.tar.xz}

log() { printf 'cvmfs-build: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

installed_version() { # prints the version of an installed cvmfs2, if any
  command -v cvmfs2 >/dev/null 2>&1 || return 1
  cvmfs2 --version 2>/dev/null | sed -n 's/.*version \([0-9][0-9.]*\).*/\1/p' | head -1
}

new_enough() { # <version>: 2.11 or later
  local major minor
  IFS=. read -r major minor _ <<<"$1"
  [ "${major:-0}" -gt 2 ] || { [ "${major:-0}" -eq 2 ] && [ "${minor:-0}" -ge 11 ]; }
}

# What decides the build: the source and these options (change them together with
# `recipe`, so that a cached build of other options is never taken for this one).
cmake_options=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX=/usr
  -DBUILD_SERVER=ON -DBUILD_CVMFS=ON -DBUILD_LIBCVMFS=OFF -DBUILD_LIBCVMFS_CACHE=OFF
  -DBUILD_SHRINKWRAP=OFF -DBUILD_PRELOADER=OFF -DBUILD_UNITTESTS=OFF
  -DBUILD_RECEIVER=OFF -DBUILD_GEOAPI=OFF -DBUILTIN_EXTERNALS=ON)
recipe="1 ${cmake_options[*]} strip-debug"

cache_key() {
  { sha256sum "$tarball" | cut -d' ' -f1; echo "$recipe"; } | sha256sum | cut -c1-16
}

cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/hepbatch/cvmfs"

case "${1:-}" in
  --key) [ -f "$tarball" ] || die "no source tarball at $tarball"; cache_key; exit 0 ;;
  --root)
    [ -f "$tarball" ] || die "no source tarball at $tarball"
    out="$cache_root/$(cache_key)"
    [ -f "$out/complete" ] || die "CVMFS not built for key $(cache_key): run $here/build.sh"
    echo "$out/root"; exit 0 ;;
  "") ;;
  *) die "unknown argument: $1" ;;
esac

# The tree of an earlier build of ours is installed as well, so "installed" only counts
# when no tarball is around to build from (a machine with the CERN packages).
if [ ! -f "$tarball" ]; then
  v=$(installed_version) || die "no cvmfs2 installed and no source tarball at $tarball"
  new_enough "$v" || die "cvmfs2 $v is installed; 2.11 or later is needed"
  log "using the installed cvmfs2 $v"
  echo installed
  exit 0
fi

key=$(cache_key)
out="$cache_root/$key"
if [ ! -f "$out/complete" ]; then
  for tool in cmake make g++ pkg-config; do
    command -v "$tool" >/dev/null || die "$tool is missing (see .ci/run for the Debian packages)"
  done
  mkdir -p "$cache_root"
  staging=$(mktemp -d "$cache_root/.build.XXXXXX")
  trap 'rm -rf "$staging"' EXIT
  log "building CernVM-FS $version (key $key) in $staging; about 20 minutes on 2 cores"
  started=$SECONDS
  tar -xJf "$tarball" -C "$staging"
  mkdir -p "$staging/build"
  (
    cd "$staging/build"
    cmake "$staging/cvmfs-$version" "${cmake_options[@]}" >"$staging/cmake.log" 2>&1 ||
      { tail -40 "$staging/cmake.log" >&2; die "cmake failed"; }
    make -j"$(nproc)" >"$staging/make.log" 2>&1 ||
      { tail -60 "$staging/make.log" >&2; die "make failed"; }
    make install DESTDIR="$staging/root" >"$staging/install.log" 2>&1 ||
      { tail -40 "$staging/install.log" >&2; die "make install failed"; }
  )
  # Debug info makes the tree (and the CSI image) several times larger.
  find "$staging/root" -type f \( -name '*.so*' -o -perm -u+x \) -exec sh -c \
    'file -b "$1" | grep -q ELF && strip --strip-debug "$1"' _ {} \; 2>/dev/null || true
  rm -rf "${out:?}"
  mkdir -p "$out"
  mv "$staging/root" "$out/root"
  touch "$out/complete"
  log "built in $((SECONDS - started)) s into $out/root"
fi

# Install (idempotent): copy the tree onto / unless this very build is installed already.
marker=/usr/share/hepbatch-cvmfs-build
if [ "$(cat "$marker" 2>/dev/null)" != "$key" ]; then
  [ "$(id -u)" -eq 0 ] || die "installing CVMFS into /usr needs root"
  # tar keeps the machine's directory symlinks (/sbin -> usr/sbin on merged-/usr systems).
  tar -C "$out/root" -cf - . | tar -C / -xf - --keep-directory-symlink --no-same-owner
  ldconfig 2>/dev/null || true
  # What the cvmfs-server package grants at install time, so cvmfs_server never changes
  # these files when it runs.
  for tool in cvmfs_swissknife cvmfs_swissknife_debug cvmfs_publish cvmfs_publish_debug; do
    [ -f "/usr/bin/$tool" ] && setcap cap_dac_read_search,cap_sys_admin+p "/usr/bin/$tool" 2>/dev/null || true
  done
  echo "$key" >"$marker"
  log "installed CernVM-FS $version into / ($(cvmfs2 --version 2>&1 | head -1))"
fi
echo "$out/root"
