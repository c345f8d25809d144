#!/usr/bin/env bash
# make demo: the user's path on this machine. Starts the local cluster and its real node (cached binaries),
# builds the tractor image and loads it into the node, installs tractor with Helm in cluster mode (the
# operator a pod on the real node under the chart's ServiceAccount), applies the digits example with
# kubectl as a user would (its model file from a ConfigMap: nothing here reaches the internet), waits for
# Ready, sends a real V2 request through the Service and prints the prediction. The operator publishes
# artifacts to the cluster's S3 artifact store (SeaweedFS on the host address), so the serving pods download
# the optimized artifact by digest instead of re-deriving it. Everything is left running;
# `make cluster-down` stops it all.
#
# Environment: DEMO_NAMESPACE for the model (default tractor-demo), TRACTOR_DEMO_IMAGE (default
# localhost/tractor:dev), DEMO_TIMEOUT seconds to wait for Ready (default 300), TRACTOR_DEMO_BIN a tractor
# binary to use instead of building the release one (CI passes the debug binary it already built).
set -euo pipefail
cd "$(dirname "$0")/.."

NS=${DEMO_NAMESPACE:-tractor-demo}
IMAGE=${TRACTOR_DEMO_IMAGE:-localhost/tractor:dev}
TIMEOUT=${DEMO_TIMEOUT:-300}
RELEASE=tractor
RELEASE_NS=tractor-system
MODEL=digits
DIR=${TRACTOR_CLUSTER_DIR:-$HOME/.cache/tractor/cluster}
# The cluster's host address and Prometheus port (HOST_IP, PROMETHEUS_PORT in tests/cluster/cluster.sh).
HOST_IP=$(sed -n 's/^HOST_IP=\([0-9.]*\).*/\1/p' tests/cluster/cluster.sh)
PROMETHEUS_PORT=$(sed -n 's/^PROMETHEUS_PORT=\([0-9]*\).*/\1/p' tests/cluster/cluster.sh)
# The artifact store cluster.sh store-up starts: its port, bucket and local credentials.
cluster_value() { sed -n "s/^$1=\([^ ]*\).*/\1/p" tests/cluster/cluster.sh; }
STORE_PORT=$(cluster_value STORE_PORT)
STORE_BUCKET=$(cluster_value STORE_BUCKET)
STORE_ACCESS_KEY=$(cluster_value STORE_ACCESS_KEY)
STORE_SECRET_KEY=$(cluster_value STORE_SECRET_KEY)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/tractor/target}
export KUBECONFIG="$DIR/admin.kubeconfig"
t0=$SECONDS
step() { printf '\n[demo %3ds] %s\n' "$((SECONDS - t0))" "$*"; }

step "1/7 cluster: etcd, apiserver, controller-manager, scheduler, KWOK, CoreDNS, Prometheus (cold: builds them, ~10 min)"
TRACTOR_BUILD_NODE=1 tests/cluster/build.sh >/dev/null
tests/cluster/cluster.sh up >/dev/null
BIN=$(tests/cluster/build.sh --bin-dir)
kubectl() { "$BIN/kubectl" "$@"; }
helm() { "$BIN/helm" "$@"; }

step "2/7 real node (containerd, kubelet, kube-proxy) and the artifact store (SeaweedFS; cold: builds it)"
tests/cluster/cluster.sh node-up >/dev/null
tests/cluster/cluster.sh store-up >/dev/null

step "3/7 image $IMAGE: the tractor binary (release build unless TRACTOR_DEMO_BIN), packed without a container engine, imported"
if [[ -n "${TRACTOR_DEMO_BIN:-}" ]]; then
  bin=$TRACTOR_DEMO_BIN
  scripts/image.sh --bin "$bin" --name "$IMAGE" --out "$(dirname "$bin")/image/demo.oci.tar" --import >/dev/null
else
  scripts/image.sh --name "$IMAGE" --import >/dev/null
fi

step "4/7 helm install $RELEASE charts/tractor -n $RELEASE_NS (cluster mode: every namespace)"
# Idempotent: a second make demo upgrades the release in place. The image is the one just imported.
# The store's keys for the operator too (it reads the shared optimize cache with them), in its own namespace.
kubectl create namespace "$RELEASE_NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n "$RELEASE_NS" create secret generic tractor-artifact-store --from-literal=AWS_ACCESS_KEY_ID="$STORE_ACCESS_KEY" \
  --from-literal=AWS_SECRET_ACCESS_KEY="$STORE_SECRET_KEY" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
helm upgrade --install "$RELEASE" charts/tractor -n "$RELEASE_NS" --create-namespace \
  --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" \
  --set prometheusUrl="http://$HOST_IP:$PROMETHEUS_PORT" \
  --set artifactStore.uri="s3://$STORE_BUCKET/artifacts" --set artifactStore.endpoint="http://$HOST_IP:$STORE_PORT" \
  --set artifactStore.region=us-east-1 --set artifactStore.pathStyle=true --wait --timeout 180s >/dev/null
# A new image under the same tag: restart so the pod runs what was just imported.
kubectl -n "$RELEASE_NS" rollout restart deployment/"$RELEASE" >/dev/null
kubectl -n "$RELEASE_NS" rollout status deployment/"$RELEASE" --timeout=180s >/dev/null
kubectl -n "$RELEASE_NS" get pods -o wide

step "5/7 model: kubectl apply -f manifests/examples/minimal.yaml in $NS, its file from a ConfigMap"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
# The namespace enforces Pod Security "restricted": every tractor pod is built to pass it.
kubectl label namespace "$NS" --overwrite pod-security.kubernetes.io/enforce=restricted >/dev/null
# The artifact store's keys, where the chart's artifactStore.secretName says Jobs and pods find them.
kubectl -n "$NS" create secret generic tractor-artifact-store --from-literal=AWS_ACCESS_KEY_ID="$STORE_ACCESS_KEY" \
  --from-literal=AWS_SECRET_ACCESS_KEY="$STORE_SECRET_KEY" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n "$NS" create configmap digits-model --from-file=digits_mlp.onnx=tests/fixtures/digits_mlp.onnx \
  --dry-run=client -o yaml | kubectl apply -f - >/dev/null
sha=$(sha256sum tests/fixtures/digits_mlp.onnx | cut -d' ' -f1)
# The example's remote URL and digest become the ConfigMap's; nothing else in it changes.
sed -E -e "s|^(\s*uri:).*|\1 configmap://digits-model/digits_mlp.onnx|" -e "s|^(\s*sha256:).*|\1 \"$sha\"|" \
  manifests/examples/minimal.yaml | kubectl -n "$NS" apply -f -

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
    echo "mdep/$MODEL not Ready (operator log: kubectl -n $RELEASE_NS logs deployment/$RELEASE)" >&2
    exit 1
  fi
  sleep 2
done

jq -r '"  artifact: \(.status.model.artifactDigest // "-"); delivery: \(.status.model.delivery.mode // "-") (\(.status.model.delivery.message // ""))"' <<<"$md"

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
echo "  kubectl -n $RELEASE_NS logs deployment/$RELEASE   # the operator"
echo "Prometheus: http://$HOST_IP:$PROMETHEUS_PORT (tractor_inference_requests_total{namespace=\"$NS\"})"
echo "Stop everything: make cluster-down"
