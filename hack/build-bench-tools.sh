#!/usr/bin/env bash
# Builds the tools only the benchmarks use — never the tests — from source
# through the Go module proxy, at the versions pinned in hack/versions.env,
# into the same cache as hack/build-tools.sh, keyed by version. A second run
# finds them and builds nothing.
#
#   ghz         the gRPC load generator (github.com/bojand/ghz/cmd/ghz)
#   opa-envoy   an Envoy ext_authz v3 server on OPA: opa-envoy-plugin's binary
#               when BENCH_ASSET_OPA_ENVOY names one; else the opa command with
#               an envoy_ext_authz_grpc plugin built the way opa-envoy-plugin
#               builds its own (hack/tools/opa-extauthz), since the module proxy
#               does not serve opa-envoy-plugin's module here
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

# Runs a long command, printing a progress line every 30 s so a cold build is never silent.
with_progress() {
  local what="$1"; shift
  local start=$SECONDS
  "$@" &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -0 "$pid" 2>/dev/null && log "still building $what ($((SECONDS - start)) s)"
  done
  wait "$pid" || die "building $what failed (see the go output above)"
  log "built $what in $((SECONDS - start)) s"
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

# The tool's own source is part of its cache key: an edit to it rebuilds it.
opa_extauthz_dir() {
  local source_hash
  source_hash="$(cat "$here/tools/opa-extauthz/main.go" "$here/tools/opa-extauthz/go.mod" | sha256sum | cut -c1-12)"
  echo "$cache/opa-extauthz-$OPA_VERSION-$GO_CONTROL_PLANE_VERSION-$source_hash"
}

build_opa_extauthz() {
  local dest; dest="$(opa_extauthz_dir)"
  if [ -x "$dest/opa-extauthz" ]; then return; fi
  require_go "opa-extauthz"
  log "building opa-extauthz with opa $OPA_VERSION and go-control-plane $GO_CONTROL_PLANE_VERSION (cold: about 2 min; seconds once opa is built)"
  local work; work="$(mktemp -d)"
  cp "$here/tools/opa-extauthz/main.go" "$here/tools/opa-extauthz/go.mod" "$here/tools/opa-extauthz/go.sum" "$work/"
  # The versions in versions.env win over the ones go.mod was committed with (or the newer ones opa needs).
  (cd "$work" && go mod edit -require="github.com/open-policy-agent/opa@$OPA_VERSION" \
      -require="github.com/envoyproxy/go-control-plane/envoy@$GO_CONTROL_PLANE_VERSION" && go mod tidy) \
    || die "resolving github.com/open-policy-agent/opa $OPA_VERSION and go-control-plane $GO_CONTROL_PLANE_VERSION failed"
  mkdir -p "$dest.tmp"
  with_progress opa-extauthz env -C "$work" CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$dest.tmp/opa-extauthz" .
  rm -rf "$dest" "$work"; mv "$dest.tmp" "$dest"
}

# path_of TOOL: an existing binary named by the environment, else the cached build.
path_of() {
  case "$1" in
    ghz) echo "${BENCH_ASSET_GHZ:-$cache/ghz-$GHZ_VERSION/ghz}" ;;
    opa-envoy) echo "${BENCH_ASSET_OPA_ENVOY:-$(opa_extauthz_dir)/opa-extauthz}" ;;
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
    opa-envoy) build_opa_extauthz ;;
  esac
  [ -x "$path" ] || die "$tool was built but $path is missing"
done

if $print_env; then
  for tool in "${wanted[@]}"; do echo "$(env_name "$tool")=$(path_of "$tool")"; done
fi
