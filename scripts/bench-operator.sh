#!/usr/bin/env bash
# make bench-operator: BENCH_N ModelDeployments (default 1000) on KWOK against BENCH_N plain Deployments,
# measured in one run. Writes bench/operator.md. Needs enough KWOK nodes for the pods (110 pods a node).
# BENCH_CACHE=1 (the default): the ModelDeployments are tenants of one pinned model whose report is already in
# the shared optimize cache of the cluster's artifact store (cluster.sh store-up), as after the first one's Job;
# BENCH_CACHE=0: no store, one optimize Job per ModelDeployment.
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
store_args=() cache_args=()
if [[ "${BENCH_CACHE:-1}" == 1 ]]; then
  tests/cluster/cluster.sh store-up >/dev/null
  value() { sed -n "s/^$1=\([^ ]*\).*/\1/p" tests/cluster/cluster.sh; }
  host=$(value HOST_IP)
  store="s3://$(value STORE_BUCKET)/bench-$ns"
  export TRACTOR_STORE_ENDPOINT="http://$host:$(value STORE_PORT)" TRACTOR_STORE_REGION=us-east-1 \
    TRACTOR_STORE_PATH_STYLE=true TRACTOR_STORE_ACCESS_KEY_ID=$(value STORE_ACCESS_KEY) \
    TRACTOR_STORE_SECRET_ACCESS_KEY=$(value STORE_SECRET_KEY)
  # The tenants' namespace holds the store's Secret, so their pods would download the artifact.
  kubectl -n "$ns" create secret generic tractor-artifact-store --from-literal=AWS_ACCESS_KEY_ID="$TRACTOR_STORE_ACCESS_KEY_ID" \
    --from-literal=AWS_SECRET_ACCESS_KEY="$TRACTOR_STORE_SECRET_ACCESS_KEY" >/dev/null
  store_args=(--artifact-store "$store" --artifact-store-endpoint "$TRACTOR_STORE_ENDPOINT"
    --artifact-store-region us-east-1 --artifact-store-path-style)
  cache_args=(--cache "$store")
fi
"$target/tractor" operator --namespace "$ns" --admin-addr 127.0.0.1:18090 "${store_args[@]}" >bench/operator.log 2>&1 &
op=$!
trap 'kill $op 2>/dev/null; kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1 || true' EXIT
until curl -fsS http://127.0.0.1:18090/ready >/dev/null 2>&1; do sleep 0.5; done
"$target/examples/bench_operator" --namespace "$ns" --count "$N" --operator-pid "$op" \
  --admin 127.0.0.1:18090 --report bench/operator.md "${cache_args[@]}"
