#!/usr/bin/env bash
# Builds the archive krew installs kubectl portcullis from, and fills the krew
# manifest template (plugins/krew/portcullis.yaml) with its version, download
# address and SHA-256.
#
# The archive, dist/krew/kubectl-portcullis-VERSION.tar.gz, holds one folder,
# kubectl-portcullis/, with the packed package (npm pack, which builds dist/)
# installed with its production dependencies; its bin is
# kubectl-portcullis/node_modules/portcullis/bin/kubectl-portcullis. The
# manifest goes to dist/krew/portcullis.yaml ($PORTCULLIS_KREW_OUT instead of
# dist/krew when set).
#
# Usage: plugins/krew/release.sh [BASE_URL]
#          BASE_URL: where the release's files are downloaded from (default
#          https://github.com/portcullis-dev/portcullis/releases/download/vVERSION);
#          upload the archive there under its own name.
#        plugins/krew/release.sh --manifest-only ARCHIVE URL
#          fills the manifest for an archive already built and published at URL.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

version="$(sed -n 's/^  "version": "\(.*\)",$/\1/p' package.json)"
[ -n "$version" ] || { echo "release.sh: no version in package.json" >&2; exit 1; }
out="${PORTCULLIS_KREW_OUT:-dist/krew}"
mkdir -p "$out"

fill_manifest() { # ARCHIVE URL
  local sha
  sha="$(sha256sum "$1" | cut -d' ' -f1)"
  sed -e "s|{{VERSION}}|$version|g" -e "s|{{URI}}|$2|g" -e "s|{{SHA256}}|$sha|g" plugins/krew/portcullis.yaml >"$out/portcullis.yaml"
  echo "wrote $out/portcullis.yaml (sha256 $sha)"
}

if [ "${1:-}" = "--manifest-only" ]; then
  [ $# -eq 3 ] || { echo "usage: plugins/krew/release.sh --manifest-only ARCHIVE URL" >&2; exit 2; }
  fill_manifest "$2" "$3"
  exit 0
fi

base="${1:-https://github.com/portcullis-dev/portcullis/releases/download/v$version}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
npm pack --silent --pack-destination "$work" >/dev/null
mkdir "$work/kubectl-portcullis"
npm install --prefix "$work/kubectl-portcullis" --omit=dev --no-audit --no-fund --loglevel=error "$work/portcullis-$version.tgz"
archive="$out/kubectl-portcullis-$version.tar.gz"
# Reproducible: sorted names, one time, no owner names.
tar --sort=name --mtime='2000-01-01 00:00Z' --owner=0 --group=0 --numeric-owner \
  -C "$work" -czf "$archive" kubectl-portcullis
echo "wrote $archive"
fill_manifest "$archive" "$base/kubectl-portcullis-$version.tar.gz"
