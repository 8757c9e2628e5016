#!/usr/bin/env bash
# Builds the binaries the tests run against — kube-apiserver, kubectl, etcd,
# opa, helm, kube-score, and three programs on go-control-plane's generated Envoy types
# (hack/tools/extauthz-client, hack/tools/extproc-client, hack/tools/envoy-check) and Argo CD's Lua
# health-check runner on gopher-lua (hack/tools/argocd-health) — from source through
# the Go module proxy, at the versions pinned in
# hack/versions.env, into a cache keyed by version. A second run finds them and
# builds nothing. Prints, as its last line, nothing: callers read the paths with
# `hack/build-tools.sh --print-env`.
#
# Binaries that already exist are used instead of building:
#   KUBEBUILDER_ASSETS=DIR          (envtest's convention: DIR/kube-apiserver, DIR/etcd, DIR/kubectl)
#   TEST_ASSET_KUBE_APISERVER, TEST_ASSET_ETCD, TEST_ASSET_KUBECTL, TEST_ASSET_OPA, TEST_ASSET_HELM, TEST_ASSET_KUBE_SCORE,
#   TEST_ASSET_EXTAUTHZ_CLIENT, TEST_ASSET_EXTPROC_CLIENT, TEST_ASSET_ENVOY_CHECK,
#   TEST_ASSET_ARGOCD_HEALTH  (explicit paths)
#
# Usage: hack/build-tools.sh [--print-env] [TOOL...]   TOOL: kube-apiserver kubectl etcd opa helm kube-score extauthz-client extproc-client envoy-check argocd-health
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
cache="${PORTCULLIS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/portcullis}"

log() { printf '[build-tools %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'build-tools: error: %s\n' "$*" >&2; exit 1; }
# shellcheck source=build-lib.sh
source "$here/build-lib.sh"

print_env=false
wanted=()
for arg in "$@"; do
  case "$arg" in
    --print-env) print_env=true ;;
    kube-apiserver|kubectl|etcd|opa|helm|kube-score|extauthz-client|extproc-client|envoy-check|argocd-health) wanted+=("$arg") ;;
    *) die "unknown argument '$arg' (expected --print-env or one of: kube-apiserver kubectl etcd opa helm kube-score extauthz-client extproc-client envoy-check argocd-health)" ;;
  esac
done
[ ${#wanted[@]} -gt 0 ] || wanted=(kube-apiserver kubectl etcd opa helm kube-score extauthz-client extproc-client envoy-check argocd-health)

require_go() {
  command -v go >/dev/null 2>&1 || die "Go is required to build ${1} from source (https://go.dev/dl/), or set TEST_ASSET_* / KUBEBUILDER_ASSETS to existing binaries"
}

build_kubernetes() {
  local dest="$cache/kubernetes-$KUBERNETES_VERSION"
  if [ -x "$dest/kube-apiserver" ] && [ -x "$dest/kubectl" ]; then return; fi
  require_go "kube-apiserver and kubectl"
  log "building kube-apiserver and kubectl $KUBERNETES_VERSION (cold: about 5 min on 2 cores, module downloads included)"
  local work; work="$(mktemp -d)"
  # k8s.io/kubernetes replaces its staging modules with local paths, which a
  # consumer cannot follow; each staging module k8s.io/X is published as X v0.N.M.
  local published="v0.${KUBERNETES_VERSION#v1.}"
  local gomod
  gomod="$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')"
  [ -f "$gomod" ] || die "could not download k8s.io/kubernetes@$KUBERNETES_VERSION through the Go module proxy"
  {
    echo "module portcullis.dev/hack/kubernetes"
    echo "go 1.24"
    echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
    grep -E '=> \./staging/src/' "$gomod" | awk -v v="$published" '{print "replace " $1 " => " $1 " " v}'
  } >"$work/go.mod"
  cat >"$work/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  (cd "$work" && go mod tidy >/dev/null 2>&1) || (cd "$work" && go mod tidy) || die "resolving k8s.io/kubernetes $KUBERNETES_VERSION failed"
  local pkg=k8s.io/component-base/version
  local minor="${KUBERNETES_VERSION#v1.}"; minor="${minor%%.*}"
  local ldflags="-s -w -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  mkdir -p "$dest.tmp"
  with_progress "kube-apiserver and kubectl" \
    env -C "$work" CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$dest.tmp/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl
  rm -rf "$dest" "$work"; mv "$dest.tmp" "$dest"
}

build_etcd() {
  local dest="$cache/etcd-$ETCD_VERSION"
  if [ -x "$dest/etcd" ]; then return; fi
  require_go etcd
  log "building etcd $ETCD_VERSION (cold: about 1-2 min)"
  local work; work="$(mktemp -d)"
  cp "$here/tools/etcd/main.go" "$work/"
  printf 'module portcullis.dev/hack/etcd\ngo 1.24\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" >"$work/go.mod"
  (cd "$work" && go mod tidy) || die "resolving go.etcd.io/etcd/server/v3 $ETCD_VERSION failed"
  mkdir -p "$dest.tmp"
  with_progress etcd env -C "$work" CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$dest.tmp/etcd" .
  rm -rf "$dest" "$work"; mv "$dest.tmp" "$dest"
}

build_opa() {
  local dest="$cache/opa-$OPA_VERSION"
  if [ -x "$dest/opa" ]; then return; fi
  require_go opa
  log "building opa $OPA_VERSION (cold: about 1-2 min)"
  mkdir -p "$dest.tmp"
  with_progress opa env GOBIN="$dest.tmp" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" \
    "github.com/open-policy-agent/opa@$OPA_VERSION"
  rm -rf "$dest"; mv "$dest.tmp" "$dest"
}

build_helm() {
  local dest="$cache/helm-$HELM_VERSION"
  if [ -x "$dest/helm" ]; then return; fi
  require_go helm
  log "building helm $HELM_VERSION (cold: about 3 min, module downloads included)"
  # As helm's Makefile stamps it: the Kubernetes version `helm template` and `helm lint` assume
  # (else v1.20) is the one of the client-go it is built with (v0.N.M is 1.N).
  local gomod client_go minor
  gomod="$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')"
  [ -f "$gomod" ] || die "could not download helm.sh/helm/v3@$HELM_VERSION through the Go module proxy"
  client_go="$(awk '$1 == "k8s.io/client-go" {print $2}' "$gomod")"
  minor="${client_go#v0.}"; minor="${minor%%.*}"
  [ -n "$minor" ] || die "helm $HELM_VERSION's go.mod names no k8s.io/client-go version"
  local ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  local pkg
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$minor"
  done
  # A folder of its own: two runs that build at once must not move each other's result away.
  local tmp; tmp="$(mktemp -d "$dest.tmp.XXXXXX")"
  with_progress helm env GOBIN="$tmp" CGO_ENABLED=0 go install -trimpath -ldflags "$ldflags" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  if [ -x "$dest/helm" ]; then rm -rf "$tmp"; else rm -rf "$dest"; mv "$tmp" "$dest"; fi
}

build_kube_score() {
  local dest="$cache/kube-score-$KUBE_SCORE_VERSION"
  if [ -x "$dest/kube-score" ]; then return; fi
  require_go kube-score
  log "building kube-score $KUBE_SCORE_VERSION (cold: about 1 min, module downloads included)"
  mkdir -p "$cache"
  local tmp; tmp="$(mktemp -d "$dest.tmp.XXXXXX")"
  with_progress kube-score env GOBIN="$tmp" CGO_ENABLED=0 go install -trimpath \
    -ldflags "-s -w -X main.version=${KUBE_SCORE_VERSION#v}" \
    "github.com/zegl/kube-score/cmd/kube-score@$KUBE_SCORE_VERSION"
  if [ -x "$dest/kube-score" ]; then rm -rf "$tmp"; else rm -rf "$dest"; mv "$tmp" "$dest"; fi
}

# Go programs of our own, one folder each under hack/tools/, each built against
# one module at the version versions.env pins: extauthz-client (sends ext_authz
# Check requests as Envoy does), extproc-client (drives ext_proc Process
# streams as Envoy does) and envoy-check (validates bootstraps against Envoy's
# types) on go-control-plane; argocd-health (runs Argo CD's Lua health checks
# as its controller does) on the gopher-lua Argo CD embeds.
# A tool's own source is part of its cache key: an edit to it rebuilds it.

# pinned_module TOOL: the module path and version TOOL is built against.
pinned_module() {
  case "$1" in
    argocd-health) echo "github.com/yuin/gopher-lua $GOPHER_LUA_VERSION" ;;
    *) echo "github.com/envoyproxy/go-control-plane/envoy $GO_CONTROL_PLANE_VERSION" ;;
  esac
}

own_tool_dir() {
  local source_hash version
  source_hash="$(cat "$here/tools/$1/main.go" "$here/tools/$1/go.mod" | sha256sum | cut -c1-12)"
  version="$(pinned_module "$1" | cut -d' ' -f2)"
  echo "$cache/$1-$version-$source_hash"
}

build_own_tool() {
  local tool="$1" module version
  read -r module version < <(pinned_module "$tool")
  local dest; dest="$(own_tool_dir "$tool")"
  if [ -x "$dest/$tool" ]; then return; fi
  require_go "$tool"
  log "building $tool with $module $version (cold: about 1-2 min)"
  local work; work="$(mktemp -d)"
  cp "$here/tools/$tool/main.go" "$here/tools/$tool/go.mod" "$here/tools/$tool/go.sum" "$work/"
  # The version in versions.env wins over the one go.mod was committed with.
  (cd "$work" && go mod edit -require="$module@$version" && go mod tidy) \
    || die "resolving $module $version failed"
  mkdir -p "$cache"
  local tmp; tmp="$(mktemp -d "$dest.tmp.XXXXXX")"
  with_progress "$tool" env -C "$work" CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmp/$tool" .
  rm -rf "$work"
  if [ -x "$dest/$tool" ]; then rm -rf "$tmp"; else rm -rf "$dest"; mv "$tmp" "$dest"; fi
}

# path_of TOOL: an existing binary named by the environment, else the cached build.
path_of() {
  local explicit=""
  case "$1" in
    kube-apiserver) explicit="${TEST_ASSET_KUBE_APISERVER:-}" ;;
    kubectl) explicit="${TEST_ASSET_KUBECTL:-}" ;;
    etcd) explicit="${TEST_ASSET_ETCD:-}" ;;
    opa) explicit="${TEST_ASSET_OPA:-}" ;;
    helm) explicit="${TEST_ASSET_HELM:-}" ;;
    kube-score) explicit="${TEST_ASSET_KUBE_SCORE:-}" ;;
    extauthz-client) explicit="${TEST_ASSET_EXTAUTHZ_CLIENT:-}" ;;
    extproc-client) explicit="${TEST_ASSET_EXTPROC_CLIENT:-}" ;;
    envoy-check) explicit="${TEST_ASSET_ENVOY_CHECK:-}" ;;
    argocd-health) explicit="${TEST_ASSET_ARGOCD_HEALTH:-}" ;;
  esac
  if [ -n "$explicit" ]; then echo "$explicit"; return; fi
  if [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/$1" ]; then echo "$KUBEBUILDER_ASSETS/$1"; return; fi
  case "$1" in
    kube-apiserver|kubectl) echo "$cache/kubernetes-$KUBERNETES_VERSION/$1" ;;
    etcd) echo "$cache/etcd-$ETCD_VERSION/etcd" ;;
    opa) echo "$cache/opa-$OPA_VERSION/opa" ;;
    helm) echo "$cache/helm-$HELM_VERSION/helm" ;;
    kube-score) echo "$cache/kube-score-$KUBE_SCORE_VERSION/kube-score" ;;
    extauthz-client|extproc-client|envoy-check|argocd-health) echo "$(own_tool_dir "$1")/$1" ;;
  esac
}

env_name() {
  case "$1" in
    kube-apiserver) echo TEST_ASSET_KUBE_APISERVER ;;
    kubectl) echo TEST_ASSET_KUBECTL ;;
    etcd) echo TEST_ASSET_ETCD ;;
    opa) echo TEST_ASSET_OPA ;;
    helm) echo TEST_ASSET_HELM ;;
    kube-score) echo TEST_ASSET_KUBE_SCORE ;;
    extauthz-client) echo TEST_ASSET_EXTAUTHZ_CLIENT ;;
    extproc-client) echo TEST_ASSET_EXTPROC_CLIENT ;;
    envoy-check) echo TEST_ASSET_ENVOY_CHECK ;;
    argocd-health) echo TEST_ASSET_ARGOCD_HEALTH ;;
  esac
}

for tool in "${wanted[@]}"; do
  path="$(path_of "$tool")"
  if [ -x "$path" ]; then continue; fi
  if [ "$path" != "$(KUBEBUILDER_ASSETS='' TEST_ASSET_KUBE_APISERVER='' TEST_ASSET_KUBECTL='' TEST_ASSET_ETCD='' TEST_ASSET_OPA='' TEST_ASSET_HELM='' TEST_ASSET_KUBE_SCORE='' TEST_ASSET_EXTAUTHZ_CLIENT='' TEST_ASSET_EXTPROC_CLIENT='' TEST_ASSET_ENVOY_CHECK='' TEST_ASSET_ARGOCD_HEALTH='' path_of "$tool")" ]; then
    die "$(env_name "$tool") or KUBEBUILDER_ASSETS names $path, which is not an executable file"
  fi
  case "$tool" in
    kube-apiserver|kubectl) build_kubernetes ;;
    etcd) build_etcd ;;
    opa) build_opa ;;
    helm) build_helm ;;
    kube-score) build_kube_score ;;
    extauthz-client|extproc-client|envoy-check|argocd-health) build_own_tool "$tool" ;;
  esac
  [ -x "$path" ] || die "$tool was built but $path is missing"
done

if $print_env; then
  for tool in "${wanted[@]}"; do echo "$(env_name "$tool")=$(path_of "$tool")"; done
fi
