#!/usr/bin/env bash
# A local Kubernetes for the tests: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, KWOK fake
# nodes, CoreDNS and Prometheus, run as plain background processes (no container engine needed). etcd and the
# components' health ports stay on loopback; the API server, CoreDNS and Prometheus listen on HOST_IP, an
# address this script puts on a bridge of its own, so pods on the real node reach them too (the `kubernetes`
# and `kube-dns` Services point there) while nothing listens on the machine's external interface.
#
#   tests/cluster/cluster.sh up       build/reuse binaries, start what is not running, wait until ready (idempotent)
#   tests/cluster/cluster.sh down     stop every process by its PID file, drop etcd/Prometheus data (keeps certs)
#   tests/cluster/cluster.sh status   print each component, its PID and whether it answers its health check
#   tests/cluster/cluster.sh env      print the export line for KUBECONFIG
#   tests/cluster/cluster.sh node-up    add the real node (containerd, kubelet, kube-proxy; see node/node.sh) to
#                                       the running control plane, wait until it is Ready (idempotent)
#   tests/cluster/cluster.sh node-down  stop the real node, its containers and mounts; delete its Node object
#   tests/cluster/cluster.sh store-up   start the artifact store (SeaweedFS's S3 gateway on HOST_IP, built from
#                                       Go modules by tests/s3/build.sh) with bucket STORE_BUCKET (idempotent)
#
# The kubeconfig is always ${TRACTOR_CLUSTER_DIR:-$HOME/.cache/tractor/cluster}/admin.kubeconfig
# (client certs of a system:masters user, embedded, so any client library can read it).
#
# Environment:
#   TRACTOR_CLUSTER_DIR      state dir: pki/, logs/, run/ (PID files), etcd/, prometheus/ (default above)
#   KWOK_NODES               number of KWOK fake nodes to create (default 3)
#   TRACTOR_CLUSTER_TIMEOUT  seconds to wait for each component to become healthy (default 180)
#
# Fixed addresses and ports: one cluster per machine. They are listed here and nowhere else; the Rust harness
# (tests/src/cluster.rs) mirrors HOST_IP and the apiserver and Prometheus ports.
HOST_IF=tractor-host        # a bridge with no ports, made by 'up' to hold HOST_IP (this kernel has no dummy driver)
HOST_IP=10.250.0.1          # the cluster's host address: apiserver, CoreDNS, Prometheus; also the real node's IP
DNS_SERVICE_IP=10.96.0.10   # ClusterIP of kube-system/kube-dns (kubelet clusterDNS), endpoints HOST_IP:53
COREDNS_READY_PORT=18181    # http, 127.0.0.1, CoreDNS /ready (200 once its Kubernetes plugin has synced)
KWOK_TAINT=tractor.dev/kwok # taint key (value "true", NoSchedule) of the KWOK nodes; tests/src/cluster.rs mirrors it
ETCD_CLIENT_PORT=12379      # http, etcd client API and /health
ETCD_PEER_PORT=12380        # etcd peer (single member, loopback only)
APISERVER_PORT=16443        # https, kube-apiserver
KCM_PORT=10257              # https, kube-controller-manager /healthz, /metrics
SCHEDULER_PORT=10259        # https, kube-scheduler /healthz, /metrics
KWOK_PORT=10247             # http, kwok /healthz, /metrics
PROMETHEUS_PORT=19090       # http, Prometheus UI and API (lifecycle API enabled: POST /-/reload)
STORE_PORT=18333            # http, the artifact store's S3 gateway (SeaweedFS), on HOST_IP; started by store-up
STORE_MASTER_PORT=19334     # SeaweedFS master, volume and filer: internal to the store, on HOST_IP
STORE_VOLUME_PORT=18334
STORE_FILER_PORT=18889
STORE_BUCKET=tractor        # the bucket store-up creates
# The store's one identity: a local, throwaway cluster's credentials (the demo's Secret carries them).
STORE_ACCESS_KEY=tractor-local
STORE_SECRET_KEY=tractor-local-secret
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
DIR=${TRACTOR_CLUSTER_DIR:-$HOME/.cache/tractor/cluster}
KUBECONFIG_PATH="$DIR/admin.kubeconfig"
NODES=${KWOK_NODES:-3}
TIMEOUT=${TRACTOR_CLUSTER_TIMEOUT:-180}
PKI="$DIR/pki"
RUN="$DIR/run"
LOGS="$DIR/logs"
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok coredns prometheus)

# shellcheck source=node/node.sh
source "$here/node/node.sh"

log() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- processes -------------------------------------------------------------------------------------------
# pid_of NAME: prints the PID if the PID file names a live process that is still that component.
pid_of() {
  local f="$RUN/$1.pid" pid
  [[ -f "$f" ]] || return 1
  pid=$(<"$f")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  # Guard against PID reuse: the command line must still name the component's binary.
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$1" || return 1
  echo "$pid"
}

# start NAME BINARY ARGS...: starts a detached process (own session, no inherited stdio) unless it runs.
start() {
  local name=$1; shift
  if pid=$(pid_of "$name"); then
    log "$name: already running (pid $pid)"
    return 0
  fi
  log "$name: starting"
  # A marker, so a failure shows this start's lines and not an earlier run's (the log is appended to).
  echo "=== tractor cluster.sh: $name starting $(date -u +%FT%TZ)" >>"$LOGS/$name.log"
  # setsid + redirected fds: the process outlives the shell (and a test runner's pipes) that started it;
  # fd 9 (the up/down lock) is closed so a long-running child never holds the lock. The process writes its
  # own PID before exec'ing the component: setsid forks when its caller leads a process group (a runner with
  # job control), and then $! would name a parent that has already exited.
  # shellcheck disable=SC2016
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$RUN/$name.pid" "$@" >>"$LOGS/$name.log" 2>&1 </dev/null 9>&- &
  # Until the exec, the PID file names a shell, and pid_of (which checks the command line against PID reuse)
  # reads that as an exit: a loaded machine once failed node-up with "kube-proxy exited" while kube-proxy was
  # starting. Wait (at most 5 s) for the exec.
  local tries=0
  until pid_of "$name" >/dev/null || ((tries++ >= 100)); do sleep 0.05; done
}

# log_tail NAME: the last lines this start of NAME wrote.
log_tail() {
  tac "$LOGS/$1.log" 2>/dev/null | sed '/^=== tractor cluster.sh: /q' | tac | tail -n 30 >&2 || true
}

# stop NAME...: SIGTERM to every named component at once (each takes a second or two to shut down
# gracefully, so one by one would be slow), then SIGKILL whatever is left after 15 s.
stop() {
  local name pid pids=() deadline=$((SECONDS + 15))
  for name in "$@"; do
    if pid=$(pid_of "$name"); then
      log "$name: stopping pid $pid"
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
    rm -f "$RUN/$name.pid"
  done
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      log "pid $pid did not stop in 15s, killing"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
}

# --- health ----------------------------------------------------------------------------------------------
healthy() {
  case $1 in
    etcd) curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_CLIENT_PORT/health" 2>/dev/null | grep -q '"health":"true"' ;;
    kube-apiserver) [[ $(curl -fsS --max-time 5 --cacert "$PKI/ca.crt" "https://$HOST_IP:$APISERVER_PORT/readyz" 2>/dev/null) == ok ]] ;;
    kube-controller-manager) [[ $(curl -ksS --max-time 2 "https://127.0.0.1:$KCM_PORT/healthz" 2>/dev/null) == ok ]] ;;
    kube-scheduler) [[ $(curl -ksS --max-time 2 "https://127.0.0.1:$SCHEDULER_PORT/healthz" 2>/dev/null) == ok ]] ;;
    kwok) curl -fsS --max-time 2 "http://127.0.0.1:$KWOK_PORT/healthz" >/dev/null 2>&1 ;;
    coredns) curl -fsS --max-time 2 "http://127.0.0.1:$COREDNS_READY_PORT/ready" >/dev/null 2>&1 ;;
    prometheus) curl -fsS --max-time 2 "http://$HOST_IP:$PROMETHEUS_PORT/-/ready" >/dev/null 2>&1 ;;
    # Any HTTP answer (an unsigned request is refused with 403): the gateway is up.
    store) [[ $(curl -sS -o /dev/null -w '%{http_code}' --max-time 2 "http://$HOST_IP:$STORE_PORT/" 2>/dev/null) != 000 ]] ;;
  esac
}

wait_healthy() {
  local name=$1 deadline=$((SECONDS + TIMEOUT))
  until healthy "$name"; do
    if ! pid_of "$name" >/dev/null; then
      log_tail "$name"
      # Every component but etcd needs etcd (directly or through the API server): say when it is gone too.
      [[ $name == etcd ]] || pid_of etcd >/dev/null || log "etcd is not running either; log: $LOGS/etcd.log"
      die "$name exited; log: $LOGS/$name.log"
    fi
    if ((SECONDS >= deadline)); then
      log_tail "$name"
      die "$name not healthy after ${TIMEOUT}s; log: $LOGS/$name.log"
    fi
    sleep 0.5
  done
  log "$name: healthy"
}

# --- host address ---------------------------------------------------------------------------------------
# HOST_IP on a port-less bridge: local to this machine, so host processes reach it like loopback, and routed
# from the pods' bridge through the host, so pods reach the API server, DNS and Prometheus (kube-proxy DNATs
# the `kubernetes` and `kube-dns` ClusterIPs there).
host_address() {
  ip link show "$HOST_IF" >/dev/null 2>&1 || ip link add "$HOST_IF" type bridge
  ip -4 addr show dev "$HOST_IF" | grep -q "inet $HOST_IP/" || ip addr add "$HOST_IP/32" dev "$HOST_IF"
  ip link set "$HOST_IF" up
}

# --- certificates and kubeconfig -------------------------------------------------------------------------
certs() {
  mkdir -p "$PKI"
  (
    cd "$PKI"
    export OPENSSL_CONF=/dev/null   # ignore any system config; everything needed is on the command line
    q() { "$@" 2>/dev/null >/dev/null || "$@"; }
    if [[ ! -f ca.crt || ! -f admin.crt || ! -f sa.key ]]; then
      log "generating certificates in $PKI"
      rm -f apiserver.crt
      q openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj /CN=tractor-test-ca \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
      # Admin: a client cert in group system:masters (RBAC superuser), used by every component and by the tests.
      q openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr -subj "/O=system:masters/CN=admin"
      printf '%s\n' 'extendedKeyUsage=clientAuth' 'keyUsage=critical,digitalSignature,keyEncipherment' >cli.ext
      q openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -extfile cli.ext -out admin.crt
      # One RSA key both signs and verifies service-account tokens, as hack/local-up-cluster.sh does.
      q openssl genrsa -out sa.key 2048
    fi
    # Serving cert: the SANs cover HOST_IP (host clients, the `kubernetes` Endpoints), the Service's ClusterIP
    # and in-cluster names (pods). Reissued when a cert from before HOST_IP lacks it; the CA stays.
    if ! openssl x509 -in apiserver.crt -noout -ext subjectAltName 2>/dev/null | grep -q "IP Address:$HOST_IP\b"; then
      q openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj /CN=kube-apiserver
      printf '%s\n' \
        "subjectAltName=IP:$HOST_IP,IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local" \
        'extendedKeyUsage=serverAuth' 'keyUsage=critical,digitalSignature,keyEncipherment' >srv.ext
      q openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -extfile srv.ext -out apiserver.crt
    fi
    rm -f ./*.csr ./*.ext
    chmod 600 ./*.key
  )
}

kubeconfig() {
  local tmp="$KUBECONFIG_PATH.tmp"
  b64() { base64 -w0 <"$1"; }
  cat >"$tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: tractor-test
  cluster:
    server: https://$HOST_IP:$APISERVER_PORT
    certificate-authority-data: $(b64 "$PKI/ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $(b64 "$PKI/admin.crt")
    client-key-data: $(b64 "$PKI/admin.key")
contexts:
- name: tractor-test
  context: {cluster: tractor-test, user: admin}
current-context: tractor-test
EOF
  chmod 600 "$tmp"
  mv -f "$tmp" "$KUBECONFIG_PATH"
}

prometheus_config() {
  mkdir -p "$DIR/prometheus/targets"
  cat >"$DIR/prometheus/prometheus.yml" <<EOF
# Written by tests/cluster/cluster.sh; rewritten on every 'up'.
global: {scrape_interval: 5s, evaluation_interval: 5s}
scrape_configs:
- job_name: apiserver
  scheme: https
  static_configs: [{targets: ["$HOST_IP:$APISERVER_PORT"]}]
  tls_config: {ca_file: "$PKI/ca.crt", cert_file: "$PKI/admin.crt", key_file: "$PKI/admin.key"}
# Tests and later issues add scrape targets without a reload by dropping Prometheus file_sd JSON files here
# ([{"targets": ["127.0.0.1:8080"], "labels": {"job": "operator"}}]).
- job_name: local
  file_sd_configs: [{files: ["$DIR/prometheus/targets/*.json"], refresh_interval: 5s}]
# Pods that ask for it with the prometheus.io/{scrape,port,path,scheme} annotations (tractor's serving pods
# do), found through the apiserver, labelled with namespace, pod, node and their own labels.
- job_name: kubernetes-pods
  kubernetes_sd_configs:
  - role: pod
    api_server: https://$HOST_IP:$APISERVER_PORT
    tls_config: {ca_file: "$PKI/ca.crt", cert_file: "$PKI/admin.crt", key_file: "$PKI/admin.key"}
    attach_metadata: {node: true}
  relabel_configs:
  - {source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape], regex: "true", action: keep}
  # KWOK's fake pods have IPs nothing routes to; only pods on real nodes can be scraped.
  - {source_labels: [__meta_kubernetes_node_label_type], regex: kwok, action: drop}
  - {source_labels: [__meta_kubernetes_pod_phase], regex: 'Pending|Succeeded|Failed', action: drop}
  - {source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scheme], regex: '(https?)', target_label: __scheme__}
  - {source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_path], regex: '(.+)', target_label: __metrics_path__}
  # One target per pod (SD yields one per container port; identical targets are merged).
  - {source_labels: [__meta_kubernetes_pod_ip, __meta_kubernetes_pod_annotation_prometheus_io_port],
     regex: '(.+);(\d+)', replacement: '\$1:\$2', target_label: __address__}
  - {regex: '__meta_kubernetes_pod_label_(.+)', action: labelmap}
  - {source_labels: [__meta_kubernetes_namespace], target_label: namespace}
  - {source_labels: [__meta_kubernetes_pod_name], target_label: pod}
  - {source_labels: [__meta_kubernetes_pod_node_name], target_label: node}
EOF
}

# --- KWOK nodes ------------------------------------------------------------------------------------------
kwok_nodes() {
  local kubectl=$BIN/kubectl i manifest=""
  for ((i = 0; i < NODES; i++)); do
    # Tainted: a user's pod (the chart's operator included) lands on the real node, where it really runs;
    # the KWOK tests and bench-operator ask for these nodes (toleration and nodeSelector type=kwok).
    manifest+="---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations: {node.alpha.kubernetes.io/ttl: \"0\", kwok.x-k8s.io/node: fake}
  labels: {kubernetes.io/arch: amd64, kubernetes.io/os: linux, kubernetes.io/hostname: kwok-node-$i,
           kubernetes.io/role: agent, node-role.kubernetes.io/agent: \"\", type: kwok}
spec:
  providerID: \"kwok://kwok-node-$i\"
  taints: [{key: $KWOK_TAINT, value: \"true\", effect: NoSchedule}]
status:
  allocatable: {cpu: \"32\", memory: 256Gi, pods: \"110\"}
  capacity: {cpu: \"32\", memory: 256Gi, pods: \"110\"}
  nodeInfo: {architecture: amd64, operatingSystem: linux, kubeletVersion: fake, kubeProxyVersion: fake}
  phase: Running
"
  done
  # A smaller KWOK_NODES than last time: drop the surplus nodes so the count is what was asked for.
  local n
  for n in $("$kubectl" --kubeconfig "$KUBECONFIG_PATH" get nodes -l type=kwok -o name); do
    i=${n##*/kwok-node-}
    if [[ "$i" =~ ^[0-9]+$ ]] && ((i >= NODES)); then
      "$kubectl" --kubeconfig "$KUBECONFIG_PATH" delete "$n" --wait=false >/dev/null
    fi
  done
  if ((NODES > 0)); then
    echo "$manifest" | "$kubectl" --kubeconfig "$KUBECONFIG_PATH" apply -f - >/dev/null
    "$kubectl" --kubeconfig "$KUBECONFIG_PATH" wait --for=condition=Ready node -l type=kwok --timeout="${TIMEOUT}s" >/dev/null
    log "kwok: $NODES node(s) Ready"
  fi
}

# --- cluster DNS ---------------------------------------------------------------------------------------
# CoreDNS (tests/cluster/coredns, the plugins below only) answers cluster.local from the API server on
# HOST_IP:53, behind the kube-dns Service the kubelet hands pods as their nameserver. Names outside
# cluster.local get no answer: nothing here can reach the internet anyway.
coredns_config() {
  mkdir -p "$DIR/coredns"
  cat >"$DIR/coredns/Corefile" <<EOF
# Written by tests/cluster/cluster.sh; rewritten on every 'up'.
.:53 {
    bind $HOST_IP
    errors
    ready 127.0.0.1:$COREDNS_READY_PORT
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $KUBECONFIG_PATH tractor-test
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 5
}
EOF
}

# kube-system/kube-dns: a Service without a selector whose one endpoint is CoreDNS on HOST_IP (an
# EndpointSlice written here, as for a DNS server that runs outside the cluster's pods).
dns_service() {
  "$BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" apply --server-side --field-manager=tractor-test-cluster -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  clusterIP: $DNS_SERVICE_IP
  ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kube-dns-host
  namespace: kube-system
  labels: {kubernetes.io/service-name: kube-dns, endpointslice.kubernetes.io/managed-by: tractor-test-cluster}
addressType: IPv4
endpoints: [{addresses: ["$HOST_IP"], conditions: {ready: true}}]
ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53, protocol: TCP}]
EOF
}

# --- commands --------------------------------------------------------------------------------------------
up() {
  local t0=$SECONDS
  BIN=$("$here/build.sh" | tail -n1)
  [[ -x "$BIN/kube-apiserver" ]] || die "build.sh did not produce binaries in $BIN"
  mkdir -p "$DIR" "$RUN" "$LOGS" "$DIR/kcm" "$DIR/scheduler"
  host_address
  certs
  kubeconfig
  prometheus_config
  coredns_config

  start etcd "$BIN/etcd" --name=node0 --data-dir="$DIR/etcd" \
    --listen-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="node0=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync=true --auto-compaction-retention=1 --quota-backend-bytes=2147483648 --log-level=warn
  wait_healthy etcd

  # --advertise-address: the `kubernetes` Service's endpoint, so in-cluster clients reach this API server (a
  # loopback address is never published there). --kubelet-preferred-address-types: reach the real node's
  # kubelet (logs, exec) by IP.
  start kube-apiserver "$BIN/kube-apiserver" --etcd-servers="http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --bind-address="$HOST_IP" --advertise-address="$HOST_IP" --secure-port="$APISERVER_PORT" --cert-dir="$PKI" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" --authorization-mode=Node,RBAC --allow-privileged=true \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.key" --service-account-signing-key-file="$PKI/sa.key" \
    --service-cluster-ip-range=10.96.0.0/16 --kubelet-preferred-address-types=InternalIP,Hostname \
    --profiling=false --v=1
  wait_healthy kube-apiserver

  # Client rate limits and sync workers above the defaults (20 QPS per controller, 5 workers): at the defaults
  # the Job and ReplicaSet controllers, not the API server or the operator, set the pace of anything with
  # hundreds of objects (make bench-operator: 1000 Jobs need ~5000 controller writes, 250 s at 20 QPS).
  start kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig="$KUBECONFIG_PATH" \
    --authentication-kubeconfig="$KUBECONFIG_PATH" --authorization-kubeconfig="$KUBECONFIG_PATH" \
    --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --cert-dir="$DIR/kcm" \
    --authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics \
    --leader-elect=false --controllers='*' --use-service-account-credentials=true \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --service-cluster-ip-range=10.96.0.0/16 --allocate-node-cidrs=true --cluster-cidr=10.244.0.0/16 \
    --node-cidr-mask-size=24 --profiling=false --v=1 \
    --kube-api-qps=200 --kube-api-burst=400 --concurrent-job-syncs=20 --concurrent-deployment-syncs=20 \
    --concurrent-replicaset-syncs=20
  start kube-scheduler "$BIN/kube-scheduler" --kubeconfig="$KUBECONFIG_PATH" \
    --authentication-kubeconfig="$KUBECONFIG_PATH" --authorization-kubeconfig="$KUBECONFIG_PATH" \
    --bind-address=127.0.0.1 --secure-port="$SCHEDULER_PORT" --cert-dir="$DIR/scheduler" \
    --authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics --leader-elect=false --profiling=false --v=1 \
    --kube-api-qps=200 --kube-api-burst=400
  # Pod IPs come from each node's podCIDR (allocated by the KCM above), else from --cidr; keep both away
  # from the service range 10.96.0.0/16.
  start kwok "$BIN/kwok" --kubeconfig="$KUBECONFIG_PATH" --config="$here/kwok/stages.yaml" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --cidr=10.244.0.0/16 --node-ip=10.240.0.1 --node-lease-duration-seconds=40 \
    --server-address="127.0.0.1:$KWOK_PORT"
  start prometheus "$BIN/prometheus" --config.file="$DIR/prometheus/prometheus.yml" --storage.tsdb.path="$DIR/prometheus/data" \
    --web.listen-address="$HOST_IP:$PROMETHEUS_PORT" --web.enable-lifecycle --storage.tsdb.retention.time=1d \
    --log.level=warn
  start coredns "$BIN/coredns" -conf "$DIR/coredns/Corefile"
  wait_healthy kube-controller-manager
  wait_healthy kube-scheduler
  wait_healthy kwok
  wait_healthy coredns
  wait_healthy prometheus
  # The config is rewritten on every up; reload so a running Prometheus picks up changes.
  curl -fsS -X POST "http://$HOST_IP:$PROMETHEUS_PORT/-/reload" >/dev/null || log "prometheus: reload failed"

  kwok_nodes
  dns_service
  log "cluster ready in $((SECONDS - t0))s"
  echo "export KUBECONFIG=$KUBECONFIG_PATH"
}

# store_up: the artifact store, on HOST_IP so pods on the real node reach it; then its bucket.
store_up() {
  healthy kube-apiserver || die "the cluster is not up: run '$0 up' first"
  local weed data="$DIR/store"
  weed=$("$here/../s3/build.sh")
  mkdir -p "$data/data"
  printf '{"identities": [{"name": "tractor", "credentials": [{"accessKey": "%s", "secretKey": "%s"}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}\n' \
    "$STORE_ACCESS_KEY" "$STORE_SECRET_KEY" >"$data/s3.json"
  # As many 256 MB volumes as the disk has room for (volume.max 0): 8 of 64 MB, SeaweedFS's small default here,
  # were full after a few 100 MB models and refused every upload with a 500.
  start store "$weed" server -dir="$data/data" -ip="$HOST_IP" -ip.bind="$HOST_IP" -s3 -filer \
    -master.port="$STORE_MASTER_PORT" -volume.port="$STORE_VOLUME_PORT" -filer.port="$STORE_FILER_PORT" \
    -s3.port="$STORE_PORT" -s3.config="$data/s3.json" -master.volumeSizeLimitMB=256 -volume.max=0
  wait_healthy store
  # The gateway answers before the filer behind it is ready: retry the bucket until it exists (409: it did).
  local code deadline=$((SECONDS + TIMEOUT))
  until code=$(curl -sS -o /dev/null -w '%{http_code}' -X PUT --aws-sigv4 aws:amz:us-east-1:s3 \
    -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' --user "$STORE_ACCESS_KEY:$STORE_SECRET_KEY" \
    "http://$HOST_IP:$STORE_PORT/$STORE_BUCKET") && [[ $code == 2* || $code == 409 ]]; do
    ((SECONDS < deadline)) || { log_tail store; die "store: bucket $STORE_BUCKET not created (HTTP $code)"; }
    sleep 0.5
  done
  log "store ready: s3://$STORE_BUCKET at http://$HOST_IP:$STORE_PORT"
}

down() {
  if [[ -d "$NODE/kubelet" ]]; then node_down; fi
  stop store
  # The operator make demo leaves running, if any.
  stop operator
  # Clients first, etcd last, so the apiserver can still reach it while it drains.
  stop kwok coredns prometheus kube-scheduler kube-controller-manager
  stop kube-apiserver
  stop etcd
  # Fresh state next time: a stale etcd would bring back objects of earlier runs. Certs are kept (cheap reuse).
  rm -rf "$DIR/etcd" "$DIR/prometheus/data" "$DIR/store"
  ip link delete "$HOST_IF" 2>/dev/null || true
  log "stopped"
}

status() {
  local c pid state rc=0
  printf '%-24s %-8s %s\n' COMPONENT PID STATE
  for c in "${COMPONENTS[@]}"; do
    if pid=$(pid_of "$c"); then
      if healthy "$c"; then state=healthy; else state="running, not healthy"; rc=1; fi
    else
      pid=-; state=stopped; rc=1
    fi
    printf '%-24s %-8s %s\n' "$c" "$pid" "$state"
  done
  # The real node is optional: listed (and counted) only once node-up has run.
  if [[ -d "$NODE/kubelet" ]]; then node_status || rc=1; fi
  echo "kubeconfig: $KUBECONFIG_PATH"
  echo "logs:       $LOGS"
  return $rc
}

# up and down take a lock, so concurrent callers (parallel test binaries, two terminals) serialize instead of
# racing to start the same processes.
locked() {
  mkdir -p "$DIR"
  exec 9>"$DIR/.lock"
  flock 9
  "$@"
}

case "${1:-}" in
  up) locked up ;;
  down) locked down ;;
  status) status ;;
  env) echo "export KUBECONFIG=$KUBECONFIG_PATH" ;;
  node-up) locked node_up ;;
  node-down) locked node_down ;;
  store-up) locked store_up ;;
  *) echo "usage: $0 up|down|status|env|node-up|node-down|store-up" >&2; exit 2 ;;
esac
