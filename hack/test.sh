#!/usr/bin/env bash
# The whole test suite on a fresh machine: Node 24, npm dependencies, the tools
# built from source, generated-file drift, lint, type check, unit and
# integration tests. Fails loudly at the first missing part.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$repo_root"
start=$SECONDS

ensure_node
ensure_node_modules
say "building or finding kube-apiserver, kubectl, etcd and opa"
ensure_tools
say "checking generated API files"
npm run --silent gen:check
say "lint"
npm run --silent lint
say "type check"
npm run --silent typecheck
say "unit tests"
npx vitest run --project unit
say "integration tests (real kube-apiserver and etcd)"
npx vitest run --project integration
say "all checks passed in $((SECONDS - start)) s"
