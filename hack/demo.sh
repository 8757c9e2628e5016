#!/usr/bin/env bash
# The local demo on an embedded control plane. Usage: hack/demo.sh [--keep]
#   --keep  leave the control plane running (prints a KUBECONFIG to use) until Ctrl-C
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$repo_root"
ensure_node
ensure_node_modules
say "building or finding kube-apiserver, kubectl, etcd and opa"
ensure_tools kube-apiserver kubectl etcd opa
exec node hack/demo.ts "$@"
