#!/usr/bin/env bash
# `make demo`: a local hepbatch in one command.
#   1. builds the testbed components (cached) and our binaries,
#   2. starts the testbed (real control plane, fake CPU/GPU nodes),
#   3. installs the AnalysisJob CRD and runs the operator on this machine,
#   4. submits examples/hello.yaml, waits for it to succeed, shows `kubectl get aj` and
#      its events,
#   5. keeps the cluster up for you to explore until Ctrl-C (DEMO_EXIT=1 stops right away).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

target_dir=${CARGO_TARGET_DIR:-target}
work=$(mktemp -d -t hepbatch-demo.XXXXXX)
kubeconfig="$work/kubeconfig"
pids=()

cleanup() {
  for pid in "${pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step_started=$SECONDS
step() { step_started=$SECONDS; printf '\n==> %s\n' "$*"; }
took() { printf '    done in %d s\n' $((SECONDS - step_started)); }

step "Building the testbed components (cached after the first time) and hepbatch"
bin=$(bash tests/testbed/build.sh)
cargo build -q -p hepbatch-tests --bin testbed -p hepbatch-operator --bin hepbatch-operator
kubectl="$bin/kubectl --kubeconfig $kubeconfig"
took

step "Starting the testbed: etcd, kube-apiserver, controller-manager, scheduler, kwok nodes"
"$target_dir/debug/testbed" up --kubeconfig "$kubeconfig" > "$work/testbed.log" 2>&1 &
pids+=($!)
until grep -q '^Ctrl-C stops' "$work/testbed.log" 2>/dev/null; do
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$work/testbed.log"; exit 1; }
  sleep 0.2
done
$kubectl get nodes
took

step "Installing the AnalysisJob CRD (crds/analysisjob.yaml)"
$kubectl apply --server-side -f crds/analysisjob.yaml
$kubectl wait --for condition=established --timeout=60s crd/analysisjobs.hepbatch.io
took

step "Running hepbatch-operator on this machine (log: $work/operator.log)"
"$target_dir/debug/hepbatch-operator" --kubeconfig "$kubeconfig" \
  --metrics-address 127.0.0.1:0 > "$work/operator.log" 2>&1 &
pids+=($!)
took

step "Submitting examples/hello.yaml: 10 shards, 4 at a time"
$kubectl apply -f examples/hello.yaml
$kubectl wait --for=jsonpath='{.status.phase}'=Succeeded --timeout=180s aj/hello
took

step "kubectl get aj"
$kubectl get aj -o wide
printf '\n==> Events of aj/hello\n'
$kubectl get events --field-selector involvedObject.kind=AnalysisJob,involvedObject.name=hello \
  --sort-by=.lastTimestamp

if [ "${DEMO_EXIT:-0}" = 1 ]; then
  exit 0
fi
cat <<MSG

The cluster stays up. In another shell:
  export KUBECONFIG=$kubeconfig PATH=$bin:\$PATH
  kubectl get aj,jobs,pods
  kubectl explain analysisjob.spec
Ctrl-C stops the operator and the cluster.
MSG
wait "${pids[0]}"
