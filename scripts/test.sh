#!/usr/bin/env bash
# Runs every test. The end-to-end tests need the local cluster: reuse one that is up, else start one here and
# stop it when the tests end, so a CI run leaves no processes behind.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --locked --workspace --exclude tractor-e2e

# tritonclient and onnxruntime for the serve/optimize process tests.
scripts/python-env.sh

started=0
if ! tests/cluster/cluster.sh status >/dev/null 2>&1; then
  tests/cluster/cluster.sh up
  started=1
fi
node_started=0
cleanup() {
  if [ "$started" = 1 ]; then tests/cluster/cluster.sh down || true
  elif [ "$node_started" = 1 ]; then tests/cluster/cluster.sh node-down || true; fi
}
trap cleanup EXIT

# make demo's operator watches every namespace: it would reconcile the tests' objects beside each test's own
# operator. Its release goes (the demo's model stays; `make demo` reinstalls it).
bin_dir=$(tests/cluster/build.sh --bin-dir)
if KUBECONFIG="${TRACTOR_CLUSTER_DIR:-$HOME/.cache/tractor/cluster}/admin.kubeconfig" \
  "$bin_dir/helm" status tractor -n tractor-system >/dev/null 2>&1; then
  echo "uninstalling make demo's release tractor (tractor-system): its operator would reconcile the tests' objects"
  KUBECONFIG="${TRACTOR_CLUSTER_DIR:-$HOME/.cache/tractor/cluster}/admin.kubeconfig" \
    "$bin_dir/helm" uninstall tractor -n tractor-system --wait >/dev/null
fi

# The e2e tests run the real binary (serve, optimize, operator), found next to the test binaries.
cargo build --locked -p tractor

# The node_* tests run pods on the cluster's real node, from an image packed from that binary.
node_status=$(tests/cluster/cluster.sh status 2>/dev/null || true)
grep -qE '^kubelet +[0-9]+ +healthy' <<<"$node_status" || node_started=1
tests/cluster/cluster.sh node-up
target=${CARGO_TARGET_DIR:-target}
scripts/image.sh --bin "$target/debug/tractor" --name localhost/tractor:e2e --out "$target/image/tractor-e2e.oci.tar" --import
# Flux kstatus and Argo CD health for the install tests (cached by go.sum; cold: a few minutes).
tests/gitops-health/build.sh >/dev/null
# Each test's operator logs to a file of its own there; a failing test's output names it.
rm -rf "$target/debug/e2e-logs"
cargo test --locked -p tractor-e2e -- --test-threads=2
