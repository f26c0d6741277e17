#!/usr/bin/env bash
# `DEMO_NODE=real make demo`: hepbatch on a real kubelet node, the way a site runs it.
#   1. builds what it needs (cached): the testbed, CernVM-FS, the node's images and the
#      operator and CSI images,
#   2. starts the testbed with one real node (kubelet + containerd) and no fake nodes, and
#      a CVMFS stratum 0 with cms.cern.ch (tags v1, v2), sft, atlas and unpacked.cern.ch,
#   3. installs the chart like a cluster admin: the operator Deployment and the CSI
#      DaemonSet run on the node (local images; only the kubelet directory and the CVMFS
#      server are set by values),
#   4. applies examples/cms-software.yaml like a physicist and shows the shards' logs:
#      what they read from /cvmfs/cms.cern.ch,
#   5. keeps the cluster up until Ctrl-C (DEMO_EXIT=1 stops right away).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=demo-common.sh
source hack/demo-common.sh
values="$work/values.json"

[ "$(id -u)" -eq 0 ] || { echo "the real-node demo needs root (containerd, kubelet, mounts)"; exit 1; }

step "Building (cached after the first time): testbed, CernVM-FS, node images, operator and CSI images"
bin=$(bash tests/testbed/build.sh)
bash tests/cvmfs/build.sh >/dev/null
bash images/node-images.sh >/dev/null
bash images/build.sh | sed -n 's/^    image archive/    &/p; s/^==> image/    &/p'
cargo build -q -p hepbatch-tests --bin testbed
kubectl="$bin/kubectl --kubeconfig $kubeconfig"
helm="$bin/helm --kubeconfig $kubeconfig"
took

step "Starting the testbed with a real node, and a CVMFS stratum 0 for it"
"$target_dir/debug/testbed" up --kubeconfig "$kubeconfig" --nodes 0 --real-node \
  --image "$target_dir/images/hepbatch-operator.docker.tar" \
  --image "$target_dir/images/hepbatch-csi.docker.tar" \
  --chart-values "$values" > "$work/testbed.log" 2>&1 &
pids+=($!)
until grep -q '^Ctrl-C stops' "$work/testbed.log" 2>/dev/null; do
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$work/testbed.log"; exit 1; }
  sleep 0.5
done
$kubectl get nodes -o wide
took

namespace=hepbatch-system
step "helm install hepbatch charts/hepbatch (operator Deployment and CSI DaemonSet on the real node)"
echo "    values: $values"
$helm install hepbatch charts/hepbatch --namespace "$namespace" --create-namespace \
  -f "$values" --wait --timeout 300s
$kubectl -n "$namespace" get pods -o wide
printf '\n    The kubelet registered the plugin:\n'
$kubectl get csinode -o jsonpath='{range .items[*]}    {.metadata.name}: {.spec.drivers[*].name}{"\n"}{end}'
took

step "kubectl apply -f examples/cms-software.yaml"
$kubectl apply -f examples/cms-software.yaml
took

step "Waiting for aj/cms-software to succeed"
failed=0
if ! $kubectl wait --for=jsonpath='{.status.phase}'=Succeeded --timeout=300s aj/cms-software; then
  $kubectl get aj/cms-software -o jsonpath='{.status}'; echo
  failed=1
fi
took

step "kubectl get aj"
$kubectl get aj -o wide
step "kubectl logs of the shards: what they read from /cvmfs/cms.cern.ch"
$kubectl logs -l batch.kubernetes.io/job-name=cms-software --prefix --tail=-1
printf '\n==> Events of aj/cms-software\n'
$kubectl get events --field-selector involvedObject.name=cms-software --sort-by=.lastTimestamp

if [ "${DEMO_EXIT:-0}" = 1 ]; then
  exit "$failed"
fi
cat <<MSG

The cluster stays up. In another shell:
  export KUBECONFIG=$kubeconfig PATH=$bin:\$PATH
  kubectl get aj,jobs,pods -A
  kubectl -n $namespace logs daemonset/hepbatch-csi-node
$(grep -A1 '^  inside:' "$work/testbed.log" | head -1 | sed 's/^  inside:/  on the node:/')
Ctrl-C stops the cluster and removes its files.
MSG
wait "${pids[0]}"
