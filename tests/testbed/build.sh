#!/usr/bin/env bash
# Builds the testbed's real components (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, kubelet, kwok, csi-sanity, helm) from Go modules into a cache outside
# the clone, keyed by everything that decides what gets built:
#
#   ${XDG_CACHE_HOME:-~/.cache}/hepbatch/testbed/<key>/bin
#
# When that directory is complete the script does nothing but print its path.
#
#   build.sh            build if needed; print the bin directory on stdout
#   build.sh --bin-dir  print the bin directory; fail if it is not built yet
#   build.sh --key      print the cache key
#
# Progress goes to stderr, so `bin=$(build.sh)` works.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=pins.env
source "$here/pins.env"

export GOTOOLCHAIN=local   # never download a toolchain
export GOFLAGS=-mod=readonly # go.sum is committed: verify against it, never rewrite it
export CGO_ENABLED=0         # static binaries, no C toolchain dependency

log() { printf 'testbed-build: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The go.mod files are generated from pins.env by bump.sh; refuse to build a mix.
check_pins() {
  grep -q "k8s.io/kubernetes $KUBERNETES_VERSION\\( // indirect\)\?$" "$here/kubernetes/go.mod" ||
    die "kubernetes/go.mod does not require k8s.io/kubernetes $KUBERNETES_VERSION (run bump.sh)"
  grep -q "go.etcd.io/etcd/server/v3 $ETCD_VERSION\\( // indirect\)\?$" "$here/etcd/go.mod" ||
    die "etcd/go.mod does not require etcd $ETCD_VERSION (run bump.sh)"
  grep -q "sigs.k8s.io/kwok $KWOK_VERSION\\( // indirect\)\?$" "$here/kwok/go.mod" ||
    die "kwok/go.mod does not require kwok $KWOK_VERSION (run bump.sh)"
  grep -q "github.com/kubernetes-csi/csi-test/v5 $CSI_TEST_VERSION\\( // indirect\)\?$" "$here/csi-sanity/go.mod" ||
    die "csi-sanity/go.mod does not require csi-test $CSI_TEST_VERSION (run bump.sh)"
  grep -q "helm.sh/helm/v4 $HELM_VERSION\\( // indirect\)\?$" "$here/helm/go.mod" ||
    die "helm/go.mod does not require helm $HELM_VERSION (run bump.sh)"
}

cache_key() {
  {
    go version
    cd "$here"
    find . -type f \( -name '*.go' -o -name 'go.mod' -o -name 'go.sum' -o -name 'pins.env' -o -name 'build.sh' \) \
      -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
  } | sha256sum | cut -c1-16
}

cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/hepbatch/testbed"
key=$(cache_key)
out="$cache_root/$key"
bin="$out/bin"
components=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kwok csi-sanity helm)

case "${1:-}" in
  --key) echo "$key"; exit 0 ;;
  --bin-dir)
    [ -f "$out/complete" ] || die "testbed not built for key $key: run $here/build.sh"
    echo "$bin"; exit 0 ;;
  "") ;;
  *) die "unknown argument: $1" ;;
esac

if [ -f "$out/complete" ]; then
  log "up to date ($bin)"
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || die "go is not installed"
check_pins
mkdir -p "$cache_root"
staging=$(mktemp -d "$cache_root/.build.XXXXXX")
trap 'rm -rf "$staging"' EXIT

build() { # <module dir> <output dir> <ldflags> <packages...>
  local dir=$1 dest=$2 ldflags=$3; shift 3
  local start=$SECONDS
  (cd "$here/$dir" && go build -trimpath -ldflags "$ldflags" -o "$dest/" "$@")
  log "built $dir in $((SECONDS - start)) s"
}

k8s_minor=${KUBERNETES_VERSION#v1.}; k8s_minor=${k8s_minor%%.*}
kver="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kver+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
  kver+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

log "building key $key with $(go version)"
total=$SECONDS
build kubernetes "$staging" "$kver" ./cmd/...
build etcd "$staging/etcd.d" "-s -w" .
mv "$staging/etcd.d/etcd" "$staging/etcd"
build kwok "$staging" "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}" sigs.k8s.io/kwok/cmd/kwok
build csi-sanity "$staging" "-s -w" github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity
build helm "$staging" "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" helm.sh/helm/v4/cmd/helm

mkdir -p "$bin"
for c in "${components[@]}"; do
  [ -x "$staging/$c" ] || die "$c was not built"
  mv -f "$staging/$c" "$bin/$c"
done
cp "$here/pins.env" "$out/pins.env"
touch "$out/complete"
log "all components built in $((SECONDS - total)) s into $bin"
echo "$bin"
