#!/usr/bin/env bash
# make bench-operator: BENCH_N ModelDeployments (default 1000) on KWOK against BENCH_N plain Deployments,
# measured in one run. Writes bench/operator.md. Needs enough KWOK nodes for the pods (110 pods a node).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${BENCH_N:-1000}
NODES=$(( N / 50 + 3 ))
export KWOK_NODES=$NODES
tests/cluster/cluster.sh up
eval "$(tests/cluster/cluster.sh env)"
cargo build --locked --release -p tractor
cargo build --locked --release -p tractor-operator --example bench_operator
target="${CARGO_TARGET_DIR:-$HOME/.cache/tractor/target}/release"
KUBECTL="$(tests/cluster/build.sh --bin-dir)/kubectl"
kubectl() { "$KUBECTL" "$@"; }
ns=bench-$(date +%s)
"$target/tractor" crd | kubectl apply --server-side --force-conflicts -f - >/dev/null
kubectl wait --for=condition=Established crd/modeldeployments.serving.tractor.dev --timeout=60s >/dev/null
kubectl create namespace "$ns" >/dev/null
until kubectl -n "$ns" get serviceaccount default >/dev/null 2>&1; do sleep 0.5; done
mkdir -p bench
"$target/tractor" operator --namespace "$ns" --admin-addr 127.0.0.1:18090 >bench/operator.log 2>&1 &
op=$!
trap 'kill $op 2>/dev/null; kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1 || true' EXIT
until curl -fsS http://127.0.0.1:18090/ready >/dev/null 2>&1; do sleep 0.5; done
"$target/examples/bench_operator" --namespace "$ns" --count "$N" --operator-pid "$op" \
  --admin 127.0.0.1:18090 --report bench/operator.md
