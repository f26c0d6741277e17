#!/usr/bin/env bash
# `make demo`: a local hepbatch in one command (`DEMO_NODE=real make demo`: on a real
# kubelet node, hack/demo-real-node.sh).
#   1. builds the testbed components (cached) and our binaries,
#   2. starts the testbed (real control plane, fake CPU/GPU nodes),
#   3. installs the Helm chart (charts/hepbatch) like a cluster admin would, with the
#      workloads that cannot run on fake nodes disabled (the operator Deployment and the
#      CSI DaemonSet): CRD, ServiceAccount, RBAC and configuration are the real ones,
#   4. runs the operator on this machine with a token of the chart's ServiceAccount (so
#      it has exactly the chart's permissions) and the chart's configuration,
#   5. submits every examples/*.yaml, waits for each AnalysisJob to succeed, shows
#      `kubectl get aj` and the AnalysisJobs' events,
#   6. keeps the cluster up for you to explore until Ctrl-C (DEMO_EXIT=1 stops right away).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "${DEMO_NODE:-fake}" = real ]; then
  exec bash hack/demo-real-node.sh
fi

# shellcheck source=demo-common.sh
source hack/demo-common.sh

step "Building the testbed components (cached after the first time) and hepbatch"
bin=$(bash tests/testbed/build.sh)
cargo build -q -p hepbatch-tests --bin testbed -p hepbatch-operator --bin hepbatch-operator \
  -p hepbatch-cli --bin kubectl-hepbatch
kubectl="$bin/kubectl --kubeconfig $kubeconfig"
hepbatch="$target_dir/debug/kubectl-hepbatch --kubeconfig $kubeconfig"
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

namespace=hepbatch-system
release=hepbatch
operator=$release-operator
step "helm install $release charts/hepbatch (operator Deployment and CSI DaemonSet off: fake nodes)"
$bin/helm --kubeconfig "$kubeconfig" install "$release" charts/hepbatch \
  --namespace "$namespace" --create-namespace \
  --set operator.enabled=false --set csi.enabled=false
$kubectl wait --for condition=established --timeout=60s crd/analysisjobs.hepbatch.io
$kubectl -n "$namespace" get serviceaccount,configmap,role,rolebinding -l app.kubernetes.io/instance=$release
took

step "Running hepbatch-operator here as system:serviceaccount:$namespace:$operator (log: $work/operator.log)"
token=$($kubectl -n "$namespace" create token "$operator" --duration 24h)
server=$($kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}')
ca=$($kubectl config view --raw --minify --flatten \
  -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
cat > "$work/operator.kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters: [{name: testbed, cluster: {server: "$server", certificate-authority-data: "$ca"}}]
users: [{name: $operator, user: {token: "$token"}}]
contexts: [{name: $operator, context: {cluster: testbed, user: $operator}}]
current-context: $operator
KUBECONFIG
$kubectl -n "$namespace" get configmap "$operator" -o jsonpath='{.data.config\.yaml}' \
  > "$work/operator-config.yaml"
"$target_dir/debug/hepbatch-operator" --kubeconfig "$work/operator.kubeconfig" \
  --config "$work/operator-config.yaml" --lease-namespace "$namespace" --lease-name "$operator" \
  --metrics-address 127.0.0.1:0 > "$work/operator.log" 2>&1 &
pids+=($!)
took

step "Submitting every example: $(ls examples/*.yaml | xargs -n1 basename | tr '\n' ' ')"
names=()
for example in examples/*.yaml; do
  while read -r ref; do
    echo "    $example: $ref"
    case $ref in analysisjob.hepbatch.io/*) names+=("${ref#*/}") ;; esac
  done < <($kubectl apply -f "$example" -o name)
done
took

failed=0
for name in "${names[@]}"; do
  if [ "$name" = hello ]; then
    # What a physicist runs: a progress bar, exit status 0 once it succeeded.
    step "kubectl hepbatch watch $name"
    if ! timeout 300 $hepbatch watch "$name"; then
      $hepbatch status "$name"
      failed=1
    fi
    took
    continue
  fi
  step "Waiting for aj/$name to succeed"
  if ! $kubectl wait --for=jsonpath='{.status.phase}'=Succeeded --timeout=300s "aj/$name"; then
    echo "    aj/$name did not succeed:"
    $kubectl get "aj/$name" -o jsonpath='{.status}'; echo
    failed=1
  fi
  took
done

step "kubectl get aj"
$kubectl get aj -o wide
printf '\n==> Where the shards ran (pods per AnalysisJob and node; GPU examples on gpu-* nodes)\n'
$kubectl get pods -o jsonpath='{range .items[*]}{.metadata.labels.job-name}{"  "}{.spec.nodeName}{"\n"}{end}' \
  | sort | uniq -c
printf '\n==> Pods that asked for GPUs, and their nodes\n'
$kubectl get pods -o custom-columns='POD:.metadata.name,NODE:.spec.nodeName,GPUS:.spec.containers[0].resources.limits.nvidia\.com/gpu' \
  | awk 'NR == 1 || $3 != "<none>"'
printf '\n==> Events of the AnalysisJobs\n'
$kubectl get events --field-selector involvedObject.kind=AnalysisJob --sort-by=.lastTimestamp
if grep -qi forbidden "$work/operator.log"; then
  printf '\n==> The operator was refused something by the chart RBAC:\n'
  grep -i forbidden "$work/operator.log"
  failed=1
fi

if [ "${DEMO_EXIT:-0}" = 1 ]; then
  exit "$failed"
fi
cat <<MSG

The cluster stays up. In another shell:
  export KUBECONFIG=$kubeconfig PATH=$bin:\$PATH
  kubectl get aj,jobs,pods
  kubectl explain analysisjob.spec
  $target_dir/debug/kubectl-hepbatch status hello
Ctrl-C stops the operator and the cluster.
MSG
wait "${pids[0]}"
