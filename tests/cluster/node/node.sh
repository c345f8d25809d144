# The real node of the test cluster: containerd (Debian) + runc + CNI bridge + kubelet + kube-proxy (built
# from the same k8s.io/kubernetes wrapper module), joined to the running control plane as plain processes.
# Sourced by tests/cluster/cluster.sh (node-up, node-down); uses its start/stop/pid_of/log/die and settings.
#
# The node is labelled (REAL_NODE_LABEL=true) and not tainted: the KWOK nodes are (KWOK_TAINT in cluster.sh),
# so an ordinary pod — a user's, the chart's operator — lands here and really runs, with no test-cluster
# settings in its spec. Its IP is HOST_IP (cluster.sh), never the machine's external interface.
#
# TRACTOR_NODE_RUNC=/path/to/wrapper makes containerd call another runc binary (e.g. one adding --debug), for
# when a container fails to start with only "can't get final child's PID from pipe".

REAL_NODE_NAME=real-node-0
REAL_NODE_LABEL=tractor.dev/real-node     # label (value "true")
KUBELET_PORT=10250             # https, kubelet API (on the node IP, HOST_IP: the apiserver reaches it there)
KUBELET_HEALTHZ_PORT=10248     # http, 127.0.0.1, kubelet /healthz
KUBE_PROXY_HEALTHZ_PORT=10256  # http, 127.0.0.1, kube-proxy /healthz
KUBE_PROXY_METRICS_PORT=10249  # http, 127.0.0.1, kube-proxy /metrics
CNI_BRIDGE=tractor0            # the pods' bridge on the host; its gateway address routes host -> pod IPs
PAUSE_IMAGE=localhost/tractor-pause:1
# An in-cluster client for tests: kubectl (static, from the build cache) and Debian's static busybox (wget,
# nslookup, sh), so a pod can call the API through kubernetes.default.svc and a model by its status.url.
CLIENT_IMAGE=localhost/tractor-client:1
NODE_COMPONENTS=(containerd kubelet kube-proxy)

NODE="$DIR/node"
CONTAINERD_SOCK="$NODE/containerd/containerd.sock"

# write_if_changed FILE: stdin -> FILE, only when the content differs. kube-proxy exits ("content of the proxy
# server's configuration file was updated") whenever its config is rewritten, even with the same bytes, and an
# idempotent node-up must not stop a running node.
write_if_changed() {
  local tmp
  tmp=$(mktemp "$1.XXXXXX")
  cat >"$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv -f "$tmp" "$1"; fi
}

ctr_() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }
kc() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" "$@"; }

node_healthy() {
  case $1 in
    containerd) ctr --address "$CONTAINERD_SOCK" version >/dev/null 2>&1 ;;
    kubelet) [[ $(curl -fsS --max-time 2 "http://127.0.0.1:$KUBELET_HEALTHZ_PORT/healthz" 2>/dev/null) == ok ]] ;;
    kube-proxy) curl -fsS --max-time 2 "http://127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT/healthz" >/dev/null 2>&1 ;;
  esac
}

node_wait_healthy() {
  local name=$1 deadline=$((SECONDS + TIMEOUT))
  until node_healthy "$name"; do
    if ! pid_of "$name" >/dev/null; then
      tail -n 30 "$LOGS/$name.log" >&2 || true
      die "$name exited; log: $LOGS/$name.log"
    fi
    ((SECONDS < deadline)) || { tail -n 30 "$LOGS/$name.log" >&2 || true; die "$name not healthy after ${TIMEOUT}s; log: $LOGS/$name.log"; }
    sleep 0.5
  done
  log "$name: healthy"
}

# client_cert NAME CN ORG: a client certificate for a node component, signed by the cluster CA.
client_cert() {
  local name=$1 cn=$2 org=$3
  [[ -f "$PKI/$name.crt" ]] && return 0
  (
    cd "$PKI"
    export OPENSSL_CONF=/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" -subj "/O=$org/CN=$cn" 2>/dev/null
    printf '%s\n' 'extendedKeyUsage=clientAuth' 'keyUsage=critical,digitalSignature,keyEncipherment' >"$name.ext"
    openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -extfile "$name.ext" \
      -out "$name.crt" 2>/dev/null
    rm -f "$name.csr" "$name.ext"
    chmod 600 "$name.key"
  )
}

# component_kubeconfig PATH CERTNAME: a kubeconfig for a node component's own identity.
component_kubeconfig() {
  b64() { base64 -w0 <"$1"; }
  write_if_changed "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: tractor-test
  cluster: {server: "https://$HOST_IP:$APISERVER_PORT", certificate-authority-data: $(b64 "$PKI/ca.crt")}
users:
- name: $2
  user: {client-certificate-data: $(b64 "$PKI/$2.crt"), client-key-data: $(b64 "$PKI/$2.key")}
contexts:
- name: tractor-test
  context: {cluster: tractor-test, user: $2}
current-context: tractor-test
EOF
  chmod 600 "$1"
}

# The sandbox image: a static pause process, built here because no registry can be reached.
pause_image() {
  local out="$NODE/images/pause.tar" rootfs="$NODE/images/pause-rootfs"
  if [[ ! -f "$out" ]]; then
    command -v cc >/dev/null || die "cc not found: it builds the pod sandbox (pause) binary"
    rm -rf "$rootfs" && mkdir -p "$rootfs"
    cc -static -Os -s -o "$rootfs/pause" "$here/node/pause.c" || die "building pause (needs a static libc: libc6-dev)"
    "$here/oci-pack.sh" "$rootfs" "$PAUSE_IMAGE" "$out" '["/pause"]' 65535:65535 >/dev/null
    rm -rf "$rootfs"
  fi
  ctr_ images import --no-unpack=false "$out" >/dev/null
}

# The client image (CLIENT_IMAGE), rebuilt when kubectl or busybox change (the archive's digests follow).
client_image() {
  local out="$NODE/images/client.tar" rootfs="$NODE/images/client-rootfs"
  [[ -x /bin/busybox ]] || die "/bin/busybox not found (Debian package busybox-static; build.sh installs it)"
  rm -rf "$rootfs" && mkdir -p "$rootfs/bin" "$rootfs/tmp"
  cp /bin/busybox "$BIN/kubectl" "$rootfs/bin/"
  local t
  for t in sh wget nslookup cat; do ln -s busybox "$rootfs/bin/$t"; done
  "$here/oci-pack.sh" "$rootfs" "$CLIENT_IMAGE" "$out" '["/bin/sh"]' 65532:65532 >/dev/null
  rm -rf "$rootfs"
  ctr_ images import --no-unpack=false "$out" >/dev/null
}

containerd_config() {
  write_if_changed "$NODE/containerd/config.toml" <<EOF
# Written by tests/cluster/cluster.sh node-up.
version = 2
root = "$NODE/containerd/root"
state = "$NODE/containerd/state"
[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$NODE/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # Test VMs may withhold CAP_SYS_RESOURCE even from root: runc then cannot lower a container's
  # oom_score_adj below ours (the sandbox asks for -998) and fails with "can't get final child's PID".
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        ${TRACTOR_NODE_RUNC:+BinaryName = \"$TRACTOR_NODE_RUNC\"}
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NODE/cni/net.d"
EOF
}

# The bridge network, on the podCIDR the controller-manager gave the node (containerd reloads it on change).
cni_config() {
  local cidr=$1
  cat >"$NODE/cni/net.d/10-tractor.conflist.tmp" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "tractor",
  "plugins": [
    {"type": "bridge", "bridge": "$CNI_BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$cidr"}]], "routes": [{"dst": "0.0.0.0/0"}],
              "dataDir": "$NODE/cni/ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
EOF
  mv -f "$NODE/cni/net.d/10-tractor.conflist.tmp" "$NODE/cni/net.d/10-tractor.conflist"
}

kubelet_config() {
  local ip=$1
  write_if_changed "$NODE/kubelet/config.yaml" <<EOF
# Written by tests/cluster/cluster.sh node-up.
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# These VMs run cgroup v1 (hybrid); from v1.35 the kubelet refuses v1 unless told (KEP-5573).
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
address: $ip
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
# A test node: the apiserver (logs, exec) and the tests may call it without credentials.
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}, x509: {clientCAFile: "$PKI/ca.crt"}}
authorization: {mode: AlwaysAllow}
podLogsDir: $NODE/pod-logs
failSwapOn: false
clusterDomain: cluster.local
# CoreDNS behind kube-system/kube-dns (cluster.sh): pods resolve NAME.NS.svc, the operator's status.url.
clusterDNS: [$DNS_SERVICE_IP]
serializeImagePulls: false
# Shared CI disks are often more than 85% full: never evict for disk and never garbage-collect the
# imported (unpullable) images.
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
EOF
  write_if_changed "$NODE/kube-proxy/config.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: "$NODE/kube-proxy/kubeconfig"}
mode: iptables
clusterCIDR: 10.244.0.0/16
hostnameOverride: $REAL_NODE_NAME
healthzBindAddress: 127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$KUBE_PROXY_METRICS_PORT
# Leave the host's conntrack table size alone.
conntrack: {maxPerCore: 0}
EOF
}

node_up() {
  local t0=$SECONDS ip cidr
  BIN=$(TRACTOR_BUILD_NODE=1 "$here/build.sh" | tail -n1)
  [[ -x "$BIN/kubelet" && -x "$BIN/kube-proxy" ]] || die "build.sh did not produce kubelet/kube-proxy in $BIN"
  healthy kube-apiserver || die "the control plane is not up: run '$0 up' first"
  for c in containerd runc iptables conntrack; do command -v "$c" >/dev/null || die "$c not found (build.sh installs it)"; done
  [[ -x /usr/lib/cni/bridge ]] || die "/usr/lib/cni/bridge not found (Debian package containernetworking-plugins)"
  # The node's address is the cluster's own HOST_IP: the kubelet (logs, exec) and pods' hostIP live there.
  ip=$HOST_IP
  mkdir -p "$NODE"/{containerd,cni/net.d,cni/ipam,kubelet,kube-proxy,pod-logs,images}

  # Pod traffic is routed and bridged through the host's iptables (kube-proxy's Service rules).
  sysctl -qw net.ipv4.ip_forward=1
  [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] || modprobe br_netfilter 2>/dev/null || true
  [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] && sysctl -qw net.bridge.bridge-nf-call-iptables=1

  client_cert node "system:node:$REAL_NODE_NAME" system:nodes
  client_cert kube-proxy system:kube-proxy system:node-proxier
  component_kubeconfig "$NODE/kubelet/kubeconfig" node
  component_kubeconfig "$NODE/kube-proxy/kubeconfig" kube-proxy

  containerd_config
  start containerd containerd --config "$NODE/containerd/config.toml" --log-level warn
  node_wait_healthy containerd
  pause_image
  client_image

  kubelet_config "$ip"
  start kubelet "$BIN/kubelet" --config="$NODE/kubelet/config.yaml" --kubeconfig="$NODE/kubelet/kubeconfig" \
    --root-dir="$NODE/kubelet/root" --cert-dir="$NODE/kubelet/pki" --hostname-override="$REAL_NODE_NAME" \
    --node-ip="$ip" --node-labels="$REAL_NODE_LABEL=true" --v=1
  node_wait_healthy kubelet
  local deadline=$((SECONDS + TIMEOUT))
  until cidr=$(kc get node "$REAL_NODE_NAME" -o 'jsonpath={.spec.podCIDR}' 2>/dev/null) && [[ -n "$cidr" ]]; do
    ((SECONDS < deadline)) || die "node $REAL_NODE_NAME got no podCIDR after ${TIMEOUT}s (kubelet log: $LOGS/kubelet.log)"
    sleep 0.5
  done
  cni_config "$cidr"
  start kube-proxy "$BIN/kube-proxy" --config="$NODE/kube-proxy/config.yaml" --v=1
  node_wait_healthy kube-proxy
  kc wait --for=condition=Ready "node/$REAL_NODE_NAME" --timeout="${TIMEOUT}s" >/dev/null
  log "node $REAL_NODE_NAME Ready (ip $ip, pods $cidr) in $((SECONDS - t0))s"
  echo "export KUBECONFIG=$KUBECONFIG_PATH"
}

node_down() {
  BIN=$("$here/build.sh" --bin-dir)
  stop kube-proxy kubelet
  # Containers first, while containerd still answers, then containerd, then any shim it left behind.
  if pid_of containerd >/dev/null; then
    local t
    for t in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true; done
    for t in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks delete -f "$t" >/dev/null 2>&1 || true; done
  fi
  stop containerd
  local pid
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $CONTAINERD_SOCK" || true); do
    kill -KILL "$pid" 2>/dev/null || true
  done
  # Pod volumes, sandbox /dev/shm and overlay rootfs mounts of the node's folders, innermost first.
  findmnt -rno TARGET | grep "^$NODE/" | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  [[ -x "$BIN/kube-proxy" ]] && "$BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
  ip link delete "$CNI_BRIDGE" 2>/dev/null || true
  if healthy kube-apiserver; then kc delete node "$REAL_NODE_NAME" --ignore-not-found --wait=false >/dev/null || true; fi
  # Keep the built images (pause, tractor archives); drop runtime state so the next node-up starts clean.
  rm -rf "$NODE"/{containerd,cni,kubelet,kube-proxy,pod-logs}
  log "node stopped"
}

node_status() {
  local c pid state rc=0
  for c in "${NODE_COMPONENTS[@]}"; do
    if pid=$(pid_of "$c"); then
      if node_healthy "$c"; then state=healthy; else state="running, not healthy"; rc=1; fi
    else
      pid=-; state=stopped; rc=1
    fi
    printf '%-24s %-8s %s\n' "$c" "$pid" "$state"
  done
  return $rc
}
