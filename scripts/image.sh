#!/usr/bin/env bash
# Builds the tractor container image without a container engine: the `tractor` binary, the shared libraries
# `ldd` lists for it, and a passwd/group naming the nonroot user (65532), packed as an OCI archive by
# tests/cluster/oci-pack.sh. The Dockerfile at the repository root produces the same layout with Docker.
#
#   scripts/image.sh [--bin PATH] [--name REF] [--out FILE] [--import]
#
#   --bin PATH   the binary to pack (default: $CARGO_TARGET_DIR/release/tractor, built here with --release)
#   --name REF   image reference (default localhost/tractor:dev)
#   --out FILE   the OCI archive (default: $CARGO_TARGET_DIR/image/tractor.oci.tar)
#   --import     load it into the test cluster's real node (cluster.sh node-up), where pods use it with
#                imagePullPolicy: IfNotPresent
#
# Prints the archive path, its size, and the image's manifest digest.
set -euo pipefail
cd "$(dirname "$0")/.."

target=${CARGO_TARGET_DIR:-$HOME/.cache/tractor/target}
bin="" name=localhost/tractor:dev out="$target/image/tractor.oci.tar" import=0
while (($#)); do
  case $1 in
    --bin) bin=$2; shift 2 ;;
    --name) name=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --import) import=1; shift ;;
    *) echo "usage: $0 [--bin PATH] [--name REF] [--out FILE] [--import]" >&2; exit 2 ;;
  esac
done
log() { printf '[image %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [[ -z "$bin" ]]; then
  log "cargo build --release -p tractor"
  cargo build --locked --release -q -p tractor
  bin="$target/release/tractor"
fi
[[ -x "$bin" ]] || { echo "$0: $bin is not an executable" >&2; exit 1; }

# Parallel test binaries may ask for the same image at once: one packs, the others wait and reuse it.
mkdir -p "$(dirname "$out")"
exec 8>"$out.lock"
flock 8
stamp="$out.source"   # the binary the archive was packed from, and its mtime and size
source_id="$(readlink -f "$bin") $(stat -c '%Y %s' "$bin") $name"
if [[ -f "$out" && -f "$stamp" && "$(<"$stamp")" == "$source_id" ]]; then
  log "$name: $out is up to date"
else
  rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs"' EXIT
  mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc" "$rootfs/tmp"
  chmod 1777 "$rootfs/tmp"
  # Debug builds carry hundreds of MB of debug info and symbols; the image needs none of it.
  objcopy --strip-all "$bin" "$rootfs/usr/local/bin/tractor"
  chmod 755 "$rootfs/usr/local/bin/tractor"
  # The dynamic loader and every library at the path ldd resolves, as real files (the image has no symlinks
  # to follow them through).
  ldd "$bin" | awk '/=> \// {print $3} /^[[:space:]]*\/.*ld-linux/ {print $1}' | while read -r lib; do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
  done
  printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' 'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' \
    >"$rootfs/etc/passwd"
  printf '%s\n' 'root:x:0:' 'nonroot:x:65532:' >"$rootfs/etc/group"

  digest=$(tests/cluster/oci-pack.sh "$rootfs" "$name" "$out" '["/usr/local/bin/tractor"]')
  log "$name: $out ($(du -h "$out" | cut -f1) compressed, rootfs $(du -sh "$rootfs" | cut -f1)), $digest"
  echo "$source_id" >"$stamp"
fi

if ((import)); then
  sock="${TRACTOR_CLUSTER_DIR:-$HOME/.cache/tractor/cluster}/node/containerd/containerd.sock"
  [[ -S "$sock" ]] || { echo "$0: no real node running ($sock missing): run tests/cluster/cluster.sh node-up" >&2; exit 1; }
  ctr --address "$sock" --namespace k8s.io images import "$out" >/dev/null
  log "$name imported into the real node"
fi
echo "$out"
