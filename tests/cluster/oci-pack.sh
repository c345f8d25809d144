#!/usr/bin/env bash
# Packs a root filesystem folder into a one-layer OCI image archive (an OCI layout in a tar), with no container
# engine and nothing but tar, gzip and sha256sum, so `ctr images import` can load it on the test node.
#
#   tests/cluster/oci-pack.sh ROOTFS NAME OUT.tar ENTRYPOINT [USER]
#
#   ROOTFS      folder whose content becomes the image's only layer (owned by root, mtimes zeroed)
#   NAME        full image reference, e.g. localhost/tractor:dev (recorded in index.json as containerd reads it)
#   OUT.tar     the archive to write (written to a temp file and renamed)
#   ENTRYPOINT  JSON array, e.g. '["/usr/local/bin/tractor"]'
#   USER        numeric uid:gid the image runs as (default 65532:65532)
#
# The same ROOTFS always gives the same digests (sorted entries, fixed mtimes and owners, gzip -n), so a
# rebuild with an unchanged binary is recognised as the same image.
set -euo pipefail

[[ $# -ge 4 ]] || { echo "usage: $0 ROOTFS NAME OUT.tar ENTRYPOINT [USER]" >&2; exit 2; }
rootfs=$1 name=$2 out=$3 entrypoint=$4 user=${5:-65532:65532}
[[ -d "$rootfs" ]] || { echo "$0: $rootfs is not a folder" >&2; exit 1; }
[[ "$name" == */*:* ]] || { echo "$0: NAME must be a full reference like localhost/tractor:dev, got '$name'" >&2; exit 1; }
tag=${name##*:}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/layout/blobs/sha256"
blobs="$work/layout/blobs/sha256"

# put FILE: stores FILE as a blob, prints "sha256:<hex> <size>".
put() {
  local hex size
  hex=$(sha256sum "$1" | cut -d' ' -f1)
  size=$(stat -c %s "$1")
  mv -f "$1" "$blobs/$hex"
  echo "sha256:$hex $size"
}

tar -C "$rootfs" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu -cf "$work/layer.tar" .
diff_id=sha256:$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
gzip -n -6 "$work/layer.tar"
read -r layer_digest layer_size < <(put "$work/layer.tar.gz")

cat >"$work/config.json" <<EOF
{"architecture":"amd64","os":"linux","config":{"User":"$user","Entrypoint":$entrypoint,"Env":["PATH=/usr/local/bin:/usr/bin:/bin"],"WorkingDir":"/"},"rootfs":{"type":"layers","diff_ids":["$diff_id"]},"history":[{"created":"1970-01-01T00:00:00Z","created_by":"tests/cluster/oci-pack.sh"}]}
EOF
read -r config_digest config_size < <(put "$work/config.json")

cat >"$work/manifest.json" <<EOF
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"$config_digest","size":$config_size},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"$layer_digest","size":$layer_size}]}
EOF
read -r manifest_digest manifest_size < <(put "$work/manifest.json")

# Both annotations, as `ctr images export` writes them: containerd takes the full name from the first, other
# tools the tag from the second.
cat >"$work/layout/index.json" <<EOF
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"$manifest_digest","size":$manifest_size,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"$name","org.opencontainers.image.ref.name":"$tag"}}]}
EOF
echo '{"imageLayoutVersion":"1.0.0"}' >"$work/layout/oci-layout"

mkdir -p "$(dirname "$out")"
tar -C "$work/layout" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu -cf "$out.tmp" .
mv -f "$out.tmp" "$out"
echo "$manifest_digest"
