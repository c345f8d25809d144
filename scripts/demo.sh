#!/usr/bin/env bash
# make demo: the whole story on this machine. Starts the local cluster and its real node (cached binaries),
# builds the tractor image and loads it into the node, installs the CRD, runs the operator, applies the
# digits example served from a ConfigMap, waits for Ready, sends a real V2 request through the Service and
# prints the prediction. Everything is left running; `make cluster-down` stops it all.
#
# Environment: DEMO_NAMESPACE (default tractor-demo), TRACTOR_DEMO_IMAGE (default localhost/tractor:dev),
# DEMO_TIMEOUT seconds to wait for Ready (default 300), TRACTOR_DEMO_BIN a tractor binary to use instead of
# building the release one.
set -euo pipefail
cd "$(dirname "$0")/.."

NS=${DEMO_NAMESPACE:-tractor-demo}
IMAGE=${TRACTOR_DEMO_IMAGE:-localhost/tractor:dev}
TIMEOUT=${DEMO_TIMEOUT:-300}
OPERATOR_ADMIN=127.0.0.1:18090   # the demo operator's /live, /ready, /metrics
MODEL=digits
DIR=${TRACTOR_CLUSTER_DIR:-$HOME/.cache/tractor/cluster}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tractor/target}
export KUBECONFIG="$DIR/admin.kubeconfig"
t0=$SECONDS
step() { printf '\n[demo %3ds] %s\n' "$((SECONDS - t0))" "$*"; }

step "1/7 cluster: etcd, apiserver, controller-manager, scheduler, KWOK, Prometheus (cold: builds them, ~10 min)"
TRACTOR_BUILD_NODE=1 tests/cluster/build.sh >/dev/null
tests/cluster/cluster.sh up >/dev/null
BIN=$(tests/cluster/build.sh --bin-dir)
kubectl() { "$BIN/kubectl" "$@"; }

step "2/7 real node: containerd, kubelet, kube-proxy"
tests/cluster/cluster.sh node-up >/dev/null

step "3/7 image $IMAGE: the tractor binary (release build unless TRACTOR_DEMO_BIN), packed without a container engine, imported"
if [[ -n "${TRACTOR_DEMO_BIN:-}" ]]; then
  bin=$TRACTOR_DEMO_BIN
  scripts/image.sh --bin "$bin" --name "$IMAGE" --out "$(dirname "$bin")/image/demo.oci.tar" --import >/dev/null
else
  bin="$CARGO_TARGET_DIR/release/tractor"
  scripts/image.sh --name "$IMAGE" --import >/dev/null
fi

step "4/7 CRD and operator"
kubectl apply --server-side --force-conflicts --field-manager=tractor-demo -f crds/modeldeployment.yaml >/dev/null
kubectl wait --for=condition=Established crd/modeldeployments.serving.tractor.dev --timeout=60s >/dev/null
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
# The namespace enforces Pod Security "restricted": every tractor pod is built to pass it.
kubectl label namespace "$NS" --overwrite pod-security.kubernetes.io/enforce=restricted >/dev/null
pidfile="$DIR/run/operator.pid"
if [[ -f "$pidfile" ]] && tr '\0' ' ' <"/proc/$(<"$pidfile")/cmdline" 2>/dev/null | grep -q 'tractor operator'; then
  echo "operator already running (pid $(<"$pidfile"))"
else
  # The operator runs as a process on this machine, with the cluster's admin kubeconfig; cluster.sh down stops it.
  setsid "$bin" operator --namespace "$NS" --image "$IMAGE" \
    --prometheus-url http://127.0.0.1:19090 --admin-addr "$OPERATOR_ADMIN" \
    >>"$DIR/logs/operator.log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  echo "operator started (pid $!, log $DIR/logs/operator.log)"
fi
until curl -fsS "http://$OPERATOR_ADMIN/ready" >/dev/null 2>&1; do
  kill -0 "$(<"$pidfile")" 2>/dev/null || { tail -n 20 "$DIR/logs/operator.log"; echo "operator exited" >&2; exit 1; }
  sleep 0.5
done

step "5/7 model: manifests/examples/minimal.yaml, its file from a ConfigMap, on the real node"
kubectl -n "$NS" create configmap digits-model --from-file=digits_mlp.onnx=tests/fixtures/digits_mlp.onnx \
  --dry-run=client -o yaml | kubectl apply -f - >/dev/null
sha=$(sha256sum tests/fixtures/digits_mlp.onnx | cut -d' ' -f1)
# The example's remote URL and digest become the ConfigMap's; the pods ask for the real node (it is tainted
# so that the KWOK nodes keep the fake pods).
{
  sed -E -e "s|^(\s*uri:).*|\1 configmap://digits-model/digits_mlp.onnx|" -e "s|^(\s*sha256:).*|\1 \"$sha\"|" \
    manifests/examples/minimal.yaml
  cat <<'EOF'
  serving:
    pod:
      nodeSelector: {tractor.dev/real-node: "true"}
      tolerations: [{key: tractor.dev/real-node, operator: Exists, effect: NoSchedule}]
EOF
} | kubectl -n "$NS" apply -f -

step "6/7 waiting for mdep/$MODEL Ready (optimize Job, then serving pod)"
deadline=$((SECONDS + TIMEOUT)) last=""
while :; do
  md=$(kubectl -n "$NS" get mdep "$MODEL" -o json)
  phase=$(jq -r '.status.phase // "Pending"' <<<"$md")
  ready=$(jq -r '[.status.conditions[]? | select(.type=="Ready")][0].status // "Unknown"' <<<"$md")
  pods=$(kubectl -n "$NS" get pods --no-headers 2>/dev/null | awk '{printf "%s %s; ", $1, $3}')
  now="phase $phase, Ready=$ready; pods: ${pods:-none}"
  [[ "$now" != "$last" ]] && printf '  %s\n' "$now" && last=$now
  [[ "$ready" == True ]] && break
  if [[ "$phase" == Failed ]] || ((SECONDS >= deadline)); then
    jq '.status' <<<"$md" >&2
    echo "mdep/$MODEL not Ready (operator log: $DIR/logs/operator.log)" >&2
    exit 1
  fi
  sleep 2
done

step "7/7 a V2 inference request through the Service"
ip=$(kubectl -n "$NS" get service "$MODEL" -o jsonpath='{.spec.clusterIP}')
url="http://$ip:8080/v2/models/$MODEL/infer"
# The first image of the digits test split (8x8 pixels scaled to 0..1) and its true label.
row=$(jq -c '.x[0:.features]' tests/fixtures/digits_mlp_test.json)
label=$(jq -r '.y[0]' tests/fixtures/digits_mlp_test.json)
body="{\"inputs\":[{\"name\":\"X\",\"shape\":[1,64],\"datatype\":\"FP32\",\"data\":$row}]}"
echo "POST $url"
resp=""
for _ in $(seq 1 30); do   # kube-proxy may need a moment to program a new Service
  resp=$(curl -fsS --max-time 5 -H 'Content-Type: application/json' -d "$body" "$url" 2>/dev/null) && break
  sleep 1
done
[[ -n "$resp" ]] || { echo "no answer from $url" >&2; exit 1; }
pred=$(jq -r '.outputs[] | select(.name=="label") | .data[0]' <<<"$resp")
probs=$(jq -c '.outputs[] | select(.name=="probabilities") | [.data[] * 1000 | round / 1000]' <<<"$resp")
echo "prediction: $pred (true label $label); probabilities $probs"

echo
kubectl -n "$NS" get mdep
echo
echo "Done in $((SECONDS - t0))s. The cluster keeps running; go on by hand with:"
echo "  export KUBECONFIG=$KUBECONFIG"
echo "  kubectl -n $NS get mdep,pods,svc        # kubectl: $BIN/kubectl"
echo "Prometheus: http://127.0.0.1:19090 (tractor_inference_requests_total{namespace=\"$NS\"})"
echo "Stop everything: make cluster-down"
