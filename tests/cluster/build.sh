#!/usr/bin/env bash
# Builds (or reuses) the test cluster's binaries from the pinned wrapper Go modules in this folder.
#
#   tests/cluster/build.sh              build what is missing, print the bin dir at the end
#   tests/cluster/build.sh --bin-dir    print the bin dir only (builds nothing)
#
# Binaries land in ${TRACTOR_CACHE:-$HOME/.cache/tractor}/k8s/<k8s version>-<hash>/bin, where <hash> covers every
# go.mod/go.sum here and BUILD_REV below, so a version bump or a build-flag change gets a fresh folder and
# fresh clones/CI reuse a warm one. A cold build on 2 cores takes many minutes (see README in this folder);
# with a warm Go build cache it is seconds per binary.
#
# Environment:
#   TRACTOR_CACHE       cache root (default ~/.cache/tractor)
#   TRACTOR_BUILD_NODE  1 = also build kubelet and kube-proxy and install containerd, runc, CNI plugins,
#                       iptables, conntrack, busybox-static (the real node of cluster.sh node-up; off by default)
#   TRACTOR_NO_APT      1 = never call apt-get (fail if openssl/curl are missing)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# Versions come from the committed go.mod files, so there is one place to bump them.
modver() { sed -n -E "s#^[[:space:]]*(require )?$1 (v[^ ]+)( .*)?\$#\2#p" "$2" | head -n1; }
K8S_VERSION=$(modver k8s.io/kubernetes "$here/k8s/go.mod")
ETCD_VERSION=$(modver go.etcd.io/etcd/server/v3 "$here/etcd/go.mod")
KWOK_VERSION=$(modver sigs.k8s.io/kwok "$here/kwok/go.mod")
HELM_VERSION=$(modver helm.sh/helm/v3 "$here/helm/go.mod")
PROM_MODULE_VERSION=$(modver github.com/prometheus/prometheus "$here/prometheus/go.mod")   # v0.316.0 is Prometheus 3.16.0

# Bump BUILD_REV when build flags below change, so cached binaries built the old way are not reused.
BUILD_REV=1
hash=$( (cat "$here"/{k8s,etcd,kwok,helm}/go.{mod,sum}; echo "rev $BUILD_REV") | sha256sum | cut -c1-12)
CACHE=${TRACTOR_CACHE:-$HOME/.cache/tractor}
BIN="$CACHE/k8s/$K8S_VERSION-$hash/bin"
# Prometheus has its own cache key (a bump rebuilds only it); $BIN/prometheus links to it.
prom_hash=$( (cat "$here"/prometheus/go.{mod,sum}; echo "rev $BUILD_REV") | sha256sum | cut -c1-12)
PROM_DIR="$CACHE/prometheus/$PROM_MODULE_VERSION-$prom_hash"
# CoreDNS likewise (its wrapper's main.go picks the plugins, so it is in the key); $BIN/coredns links to it.
COREDNS_VERSION=$(modver github.com/coredns/coredns "$here/coredns/go.mod")
coredns_hash=$( (cat "$here"/coredns/{go.mod,go.sum,main.go}; echo "rev $BUILD_REV") | sha256sum | cut -c1-12)
COREDNS_DIR="$CACHE/coredns/$COREDNS_VERSION-$coredns_hash"

if [[ "${1:-}" == "--bin-dir" ]]; then
  echo "$BIN"
  exit 0
fi

log() { printf '[build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# --- Debian packages -------------------------------------------------------------------------------------
need_pkgs=()
command -v openssl >/dev/null || need_pkgs+=(openssl)
command -v curl >/dev/null || need_pkgs+=(curl)
if [[ "${TRACTOR_BUILD_NODE:-0}" == 1 ]]; then
  # The real node (cluster.sh node-up): container runtime, CNI plugins, what kube-proxy drives.
  command -v containerd >/dev/null || need_pkgs+=(containerd)
  command -v runc >/dev/null || need_pkgs+=(runc)
  [[ -x /usr/lib/cni/bridge ]] || need_pkgs+=(containernetworking-plugins)
  command -v iptables >/dev/null || need_pkgs+=(iptables)
  command -v conntrack >/dev/null || need_pkgs+=(conntrack)
  # A static busybox for the test client image (wget, nslookup in pods on the real node).
  { [[ -x /bin/busybox ]] && ! ldd /bin/busybox >/dev/null 2>&1; } || need_pkgs+=(busybox-static)
fi
if ((${#need_pkgs[@]})); then
  if [[ "${TRACTOR_NO_APT:-0}" == 1 ]]; then
    log "missing Debian packages: ${need_pkgs[*]} (TRACTOR_NO_APT=1, not installing)"; exit 1
  fi
  sudo=""; [[ $(id -u) == 0 ]] || sudo="sudo"
  log "installing Debian packages: ${need_pkgs[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

# --- Go binaries -----------------------------------------------------------------------------------------
command -v go >/dev/null || { log "go not found on PATH"; exit 1; }
mkdir -p "$BIN"
export CGO_ENABLED=0        # static, like upstream release binaries; no C toolchain needed

built=0
# build NAME MODULE_DIR PACKAGE LDFLAGS: builds into a temp file and renames, so an interrupted build
# never leaves a half-written binary that a later run would take for a finished one.
build() {
  local name=$1 dir=$2 pkg=$3 ldf=$4
  if [[ -x "$BIN/$name" ]]; then
    log "$name: cached"
    return 0
  fi
  log "$name: building $pkg (cold builds take minutes; go prints nothing meanwhile)"
  local t0=$SECONDS
  (cd "$here/$dir" && go build -trimpath -ldflags "$ldf" -o "$BIN/.$name.tmp" "$pkg")
  mv -f "$BIN/.$name.tmp" "$BIN/$name"
  log "$name: built in $((SECONDS - t0))s"
  built=$((built + 1))
}

# Version info through ldflags (hack/lib/version.sh in k/k): without it /version says v0.0.0-master and
# Helm's kubeVersion checks fail.
minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
k8s_ldf="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldf+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  k8s_ldf+=" -X $p.gitCommit=none -X $p.buildDate=1970-01-01T00:00:00Z"
done

build etcd etcd go.etcd.io/etcd/server/v3 "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_VERSION"
for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  build "$c" k8s "k8s.io/kubernetes/cmd/$c" "$k8s_ldf"
done
if [[ "${TRACTOR_BUILD_NODE:-0}" == 1 ]]; then
  for c in kubelet kube-proxy; do
    build "$c" k8s "k8s.io/kubernetes/cmd/$c" "$k8s_ldf"
  done
fi
build kwok kwok sigs.k8s.io/kwok/cmd/kwok \
  "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=$K8S_VERSION"
# Helm's default capabilities (helm template, lint) report the Kubernetes minor its client-go was built from,
# as helm's own Makefile sets it.
helm_k8s=$(cd "$here/helm" && go list -m -f '{{.Version}}' k8s.io/client-go)   # v0.M.P -> 1.M
helm_minor=${helm_k8s#v0.}; helm_minor=${helm_minor%%.*}
build helm helm helm.sh/helm/v3/cmd/helm \
  "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean \
   -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$helm_minor \
   -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$helm_minor"

# Prometheus from its Go module: Debian's package is built without Kubernetes service discovery
# ("field kubernetes_sd_configs not found"). Only the file and Kubernetes SD plugins (upstream's build tags),
# and no embedded web UI: the tests use the HTTP API.
prom_version=$(echo "$PROM_MODULE_VERSION" | sed -E 's/^v0\.([0-9]+)([0-9]{2})\.([0-9]+)$/\1.\2.\3/; s/\.0([0-9])\./.\1./')
if [[ ! -x "$PROM_DIR/prometheus" ]]; then
  log "prometheus: building github.com/prometheus/prometheus@$PROM_MODULE_VERSION ($prom_version)"
  t0=$SECONDS
  mkdir -p "$PROM_DIR"
  (cd "$here/prometheus" && go build -trimpath -tags remove_all_sd,enable_kubernetes_sd \
    -ldflags "-s -w -X github.com/prometheus/common/version.Version=$prom_version" \
    -o "$PROM_DIR/.prometheus.tmp" github.com/prometheus/prometheus/cmd/prometheus)
  mv -f "$PROM_DIR/.prometheus.tmp" "$PROM_DIR/prometheus"
  log "prometheus: built in $((SECONDS - t0))s"
  built=$((built + 1))
else
  log "prometheus: cached"
fi
ln -sfn "$PROM_DIR/prometheus" "$BIN/prometheus"

# CoreDNS, the cluster's DNS (cluster.sh): only the plugins its Corefile uses, from coredns/main.go.
if [[ ! -x "$COREDNS_DIR/coredns" ]]; then
  log "coredns: building github.com/coredns/coredns@$COREDNS_VERSION (kubernetes plugin only)"
  t0=$SECONDS
  mkdir -p "$COREDNS_DIR"
  (cd "$here/coredns" && go build -trimpath -ldflags "-s -w" -o "$COREDNS_DIR/.coredns.tmp" .)
  mv -f "$COREDNS_DIR/.coredns.tmp" "$COREDNS_DIR/coredns"
  log "coredns: built in $((SECONDS - t0))s"
  built=$((built + 1))
else
  log "coredns: cached"
fi
ln -sfn "$COREDNS_DIR/coredns" "$BIN/coredns"

cat > "$BIN/../VERSIONS" <<EOF
kubernetes $K8S_VERSION
etcd $ETCD_VERSION
kwok $KWOK_VERSION
helm $HELM_VERSION
prometheus $prom_version
coredns $COREDNS_VERSION
hash $hash
EOF
log "done ($built built); binaries in $BIN ($(du -sh "$BIN" | cut -f1))"
echo "$BIN"
