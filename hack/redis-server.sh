#!/usr/bin/env bash
# Installs redis-server from Debian's packages into the project's cache, keyed
# by the package version, without installing anything system-wide: the .deb
# files of redis-server, redis-tools and the two libraries the binary needs
# that a slim Debian lacks (libjemalloc2, liblzf1) are fetched with
# `apt-get download` and unpacked with `dpkg -x`; a wrapper script points the
# binary at those libraries. A second run with the same candidate version finds
# the cache and fetches nothing.
#
# An existing binary is used instead: TEST_ASSET_REDIS_SERVER=/path/to/redis-server
#
# Usage: hack/redis-server.sh [--print-env]   (prints TEST_ASSET_REDIS_SERVER=PATH)
set -euo pipefail

cache="${PORTCULLIS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/portcullis}"
packages=(redis-server redis-tools libjemalloc2 liblzf1)

log() { printf '[redis-server %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'redis-server.sh: error: %s\n' "$*" >&2; exit 1; }

print_env=false
for arg in "$@"; do
  case "$arg" in
    --print-env) print_env=true ;;
    *) die "unknown argument '$arg' (expected --print-env)" ;;
  esac
done

# The version apt would install now, or nothing when its package lists lack it.
candidate() {
  apt-cache policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: //p' | grep -v '^(none)$' || true
}

find_or_install() {
  if [ -n "${TEST_ASSET_REDIS_SERVER:-}" ]; then
    [ -x "$TEST_ASSET_REDIS_SERVER" ] || die "TEST_ASSET_REDIS_SERVER names $TEST_ASSET_REDIS_SERVER, which is not an executable file"
    echo "$TEST_ASSET_REDIS_SERVER"
    return
  fi
  command -v apt-get >/dev/null 2>&1 && command -v dpkg >/dev/null 2>&1 \
    || die "apt-get and dpkg are needed to fetch redis-server from Debian's packages; on another system set TEST_ASSET_REDIS_SERVER to a redis-server (6.2 or newer)"
  local version; version="$(candidate redis-server)"
  if [ -z "$version" ]; then
    [ "$(id -u)" = 0 ] || die "apt's package lists do not know redis-server; run 'apt-get update' as root, or set TEST_ASSET_REDIS_SERVER"
    log "apt's package lists do not know redis-server: running apt-get update"
    apt-get update -qq >&2 || die "apt-get update failed"
    version="$(candidate redis-server)"
    [ -n "$version" ] || die "no redis-server package in apt's sources"
  fi
  # Debian versions hold ':' and '~', which are fine in a folder name but not pretty.
  local dest="$cache/redis-server-${version//[:~]/_}"
  if [ ! -x "$dest/redis-server" ]; then
    log "installing redis-server $version from Debian's packages into $dest"
    local work; work="$(mktemp -d)"
    # apt's download sandbox user cannot write to a private temporary folder.
    (cd "$work" && apt-get download -q -o APT::Sandbox::User=root "${packages[@]}" >&2) \
      || { rm -rf "$work"; die "apt-get download ${packages[*]} failed"; }
    rm -rf "$dest.tmp" && mkdir -p "$dest.tmp/root"
    local deb
    for deb in "$work"/*.deb; do dpkg -x "$deb" "$dest.tmp/root" || { rm -rf "$work"; die "dpkg -x $deb failed"; }; done
    rm -rf "$work"
    local libs="$dest/root/usr/lib/x86_64-linux-gnu:$dest/root/usr/lib/aarch64-linux-gnu:$dest/root/usr/lib"
    # redis-server is a link to redis-check-rdb, which picks its role from the name it was run by.
    cat >"$dest.tmp/redis-server" <<SCRIPT
#!/bin/sh
LD_LIBRARY_PATH="$libs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$dest/root/usr/bin/redis-server" "\$@"
SCRIPT
    chmod +x "$dest.tmp/redis-server"
    rm -rf "$dest" && mv "$dest.tmp" "$dest"
    local got
    got="$("$dest/redis-server" --version 2>&1)" || { rm -rf "$dest"; die "the unpacked redis-server does not run: $got"; }
    log "installed: $got"
  fi
  echo "$dest/redis-server"
}

path="$(find_or_install)"
if $print_env; then echo "TEST_ASSET_REDIS_SERVER=$path"; fi
