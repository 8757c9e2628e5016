#!/usr/bin/env bash
# Portcullis on a kind cluster, for users who have Docker: creates the cluster,
# loads the image archive hack/image.sh writes, installs the Helm chart, applies
# config/samples and decides the demo's three calls (hack/demo.ts) against the
# bundle the operator wrote, with kubectl portcullis why.
#
# Needs docker, kind, helm and kubectl on PATH, and Node 24 (kubectl portcullis
# runs from bin/). It is not run by the test command: no container engine on the
# machines the tests run on can fetch kind's node image. `bash -n` checks it there.
#
# Usage: hack/kind.sh [CLUSTER_NAME]   (default portcullis; an existing cluster is reused)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cluster="${1:-portcullis}"
version="$(sed -n 's/^  "version": "\(.*\)",$/\1/p' package.json)"
archive="dist/image/portcullis-$version.oci.tar"
context="kind-$cluster"

for tool in docker kind helm kubectl node; do
  command -v "$tool" >/dev/null || { echo "hack/kind.sh: $tool is not on PATH" >&2; exit 1; }
done
[ -f "$archive" ] || bash hack/image.sh
# kubectl finds the plugin bin/kubectl-portcullis on PATH.
export PATH="$PWD/bin:$PATH"

kind get clusters | grep -qx "$cluster" || kind create cluster --name "$cluster"
kind load image-archive "$archive" --name "$cluster"

helm upgrade --install portcullis charts/portcullis --kube-context "$context" \
  -n portcullis-system --create-namespace --set image.pullPolicy=Never --wait --timeout 5m

kubectl --context "$context" apply -f config/samples/
kubectl --context "$context" -n finance wait --for=condition=Ready agentidentity/finance-agent --timeout=2m
kubectl portcullis status --context "$context"

call() { echo "{\"agent\":\"finance-agent\",\"tool\":\"stripe-payments\",\"action\":\"create_payment\",\"params\":$1}"; }
for params in \
  '{"amount":4200,"currency":"USD","account":"1234567890"}' \
  '{"amount":4200,"currency":"GBP","account":"1234567890"}' \
  '{"amount":50000,"currency":"USD","account":"1234567890"}'; do
  echo "--- $(call "$params")"
  call "$params" | kubectl portcullis why --context "$context" -n finance --input -
done
