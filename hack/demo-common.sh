# Shared by hack/demo.sh and hack/demo-real-node.sh (sourced): the work directory, the
# background processes stopped on exit, and the step/took progress lines.
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
