#!/usr/bin/env bash
# npm run bench -- NAME: the benchmark NAME under Node 24 with the tools built.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$repo_root"
ensure_node
ensure_node_modules
ensure_tools
exec node bench/run.ts "$@"
