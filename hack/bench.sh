#!/usr/bin/env bash
# npm run bench -- NAME: the benchmark NAME under Node 24 with the tools built.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$repo_root"
ensure_node
ensure_node_modules
# The tools the benchmarks run (helm, kube-score and the Lua runner are for the tests only).
ensure_tools kube-apiserver kubectl etcd opa extauthz-client extproc-client
exec node bench/run.ts "$@"
