#!/usr/bin/env bash
# Builds the tools only the benchmarks use — never the tests — from source
# through the Go module proxy, at the versions pinned in hack/versions.env,
# into the same cache as hack/build-tools.sh, keyed by version. A second run
# finds them and builds nothing.
#
#   ghz         the gRPC load generator (github.com/bojand/ghz/cmd/ghz)
#   opa-envoy   opa-envoy-plugin (github.com/open-policy-agent/opa-envoy-plugin):
#               the opa command with Envoy's ext_authz gRPC plugin, built from
#               hack/tools/opa-envoy-plugin as its release binary is. The module
#               proxy here lists no version of it but serves the exact version
#               pinned (OPA_ENVOY_PLUGIN_VERSION), so it is built through a
#               wrapper module rather than `go install`, which asks for the list
#
# Binaries that already exist are used instead of building:
#   BENCH_ASSET_GHZ, BENCH_ASSET_OPA_ENVOY  (explicit paths)
#
# Usage: hack/build-bench-tools.sh [--print-env] [TOOL...]   TOOL: ghz opa-envoy
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
source "$here/lib.sh"
cache="$PORTCULLIS_CACHE"

log() { printf '[build-bench-tools %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'build-bench-tools: error: %s\n' "$*" >&2; exit 1; }
# shellcheck source=build-lib.sh
source "$here/build-lib.sh"

print_env=false
wanted=()
for arg in "$@"; do
  case "$arg" in
    --print-env) print_env=true ;;
    ghz|opa-envoy) wanted+=("$arg") ;;
    *) die "unknown argument '$arg' (expected --print-env or one of: ghz opa-envoy)" ;;
  esac
done
[ ${#wanted[@]} -gt 0 ] || wanted=(ghz opa-envoy)

require_go() {
  command -v go >/dev/null 2>&1 || die "Go is required to build ${1} from source (https://go.dev/dl/), or set BENCH_ASSET_* to an existing binary"
}

build_ghz() {
  local dest="$cache/ghz-$GHZ_VERSION"
  if [ -x "$dest/ghz" ]; then return; fi
  require_go ghz
  log "building ghz $GHZ_VERSION (cold: about 1 min, module downloads included)"
  mkdir -p "$dest.tmp"
  with_progress ghz env GOBIN="$dest.tmp" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w -X main.version=$GHZ_VERSION" \
    "github.com/bojand/ghz/cmd/ghz@$GHZ_VERSION"
  rm -rf "$dest"; mv "$dest.tmp" "$dest"
}

# The wrapper's own files are part of the cache key: an edit to them rebuilds it.
opa_envoy_dir() {
  local source_hash
  source_hash="$(cat "$here/tools/opa-envoy-plugin/main.go" "$here/tools/opa-envoy-plugin/go.mod" | sha256sum | cut -c1-12)"
  echo "$cache/opa-envoy-plugin-$OPA_ENVOY_PLUGIN_VERSION-$source_hash"
}

build_opa_envoy() {
  local dest; dest="$(opa_envoy_dir)"
  if [ -x "$dest/opa-envoy-plugin" ]; then return; fi
  require_go "opa-envoy-plugin"
  grep -q "opa-envoy-plugin $OPA_ENVOY_PLUGIN_VERSION\$" "$here/tools/opa-envoy-plugin/go.mod" \
    || die "hack/tools/opa-envoy-plugin/go.mod does not require opa-envoy-plugin $OPA_ENVOY_PLUGIN_VERSION (versions.env): update it with go get and go mod tidy there"
  log "building opa-envoy-plugin $OPA_ENVOY_PLUGIN_VERSION (cold: about 3 min, module downloads included)"
  mkdir -p "$dest.tmp"
  with_progress opa-envoy-plugin env -C "$here/tools/opa-envoy-plugin" CGO_ENABLED=0 go build -mod=mod -trimpath -ldflags "-s -w" -o "$dest.tmp/opa-envoy-plugin" .
  rm -rf "$dest"; mv "$dest.tmp" "$dest"
}

# path_of TOOL: an existing binary named by the environment, else the cached build.
path_of() {
  case "$1" in
    ghz) echo "${BENCH_ASSET_GHZ:-$cache/ghz-$GHZ_VERSION/ghz}" ;;
    opa-envoy) echo "${BENCH_ASSET_OPA_ENVOY:-$(opa_envoy_dir)/opa-envoy-plugin}" ;;
  esac
}

env_name() {
  case "$1" in
    ghz) echo BENCH_ASSET_GHZ ;;
    opa-envoy) echo BENCH_ASSET_OPA_ENVOY ;;
  esac
}

for tool in "${wanted[@]}"; do
  path="$(path_of "$tool")"
  if [ -x "$path" ]; then continue; fi
  explicit_name="$(env_name "$tool")"
  [ -z "${!explicit_name:-}" ] || die "$explicit_name names $path, which is not an executable file"
  case "$tool" in
    ghz) build_ghz ;;
    opa-envoy) build_opa_envoy ;;
  esac
  [ -x "$path" ] || die "$tool was built but $path is missing"
done

if $print_env; then
  for tool in "${wanted[@]}"; do echo "$(env_name "$tool")=$(path_of "$tool")"; done
fi
