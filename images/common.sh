# Shared by the image scripts (sourced, not run).

# debian_mirror: the Debian mirror images are made from: $HEPBATCH_DEBIAN_MIRROR, else the
# first Debian mirror of the apt sources, else deb.debian.org.
debian_mirror() {
  if [ -n "${HEPBATCH_DEBIAN_MIRROR:-}" ]; then echo "$HEPBATCH_DEBIAN_MIRROR"; return; fi
  local found
  found=$(sed -n 's/^URIs: *\(http[^ ]*\/debian\)\/\?$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
  [ -n "$found" ] || found=$(sed -n 's/^deb \(http[^ ]*\/debian\)\/\? .*/\1/p' /etc/apt/sources.list 2>/dev/null | head -1)
  echo "${found:-http://deb.debian.org/debian}"
}

# private_overlays <work dir>: run inside a private mount namespace (unshare --mount
# --propagation private). buildah writes /etc/cni/net.d and /var/lib/containers even with
# a storage root of its own; overlays whose upper layers live in <work> over /etc,
# /var/lib and /var/tmp keep all of that off the host, and the namespace takes it away.
private_overlays() {
  local work=$1 dir layer
  for dir in /etc /var/lib /var/tmp; do
    layer="$work/overlay/${dir//\//_}"
    mkdir -p "$layer/upper" "$layer/work"
    mount -t overlay -o "lowerdir=$dir,upperdir=$layer/upper,workdir=$layer/work" hepbatch-images "$dir"
  done
  export TMPDIR="$work/tmp"
  mkdir -p "$TMPDIR"
}
