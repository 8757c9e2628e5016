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
say "finding or installing redis-server (Debian's package, unpacked into the cache)"
redis_env="$(bash "$hack_dir/redis-server.sh" --print-env)"
export "${redis_env?}"
say "checking generated API files"
npm run --silent gen:check
say "lint"
npm run --silent lint
say "type check"
npm run --silent typecheck
results="$(mktemp -d)"
say "unit tests (no process, no binary)"
npm run --silent test:unit -- --reporter=default --reporter=json --outputFile.json="$results/unit.json"
say "policy tests (the real opa binary)"
npm run --silent test:policy -- --reporter=default --reporter=json --outputFile.json="$results/policy.json"
say "building the image (hack/image.sh: buildah, FROM scratch; the image tests run it with podman)"
image_env="$(bash "$hack_dir/image.sh" --print-env)" || fail "hack/image.sh failed"
while IFS= read -r line; do export "${line?}"; done <<<"$image_env"
say "integration tests (real kube-apiserver and etcd)"
npm run --silent test:integration -- --reporter=default --reporter=json --outputFile.json="$results/integration.json"
# One closing line counting every test of both tiers.
node -e '
  const fs = require("node:fs");
  let passed = 0, failed = 0, skipped = 0;
  for (const f of process.argv.slice(1)) {
    const r = JSON.parse(fs.readFileSync(f, "utf8"));
    passed += r.numPassedTests; failed += r.numFailedTests; skipped += r.numPendingTests + r.numTodoTests;
    for (const file of r.testResults) {
      for (const t of file.assertionResults) {
        if (["skipped", "pending", "todo"].includes(t.status)) console.log(`skipped: ${t.fullName}`);
      }
    }
  }
  if (passed === 0) { console.error("no test ran"); process.exit(1); }
  console.log(`tests: ${passed} passed, ${failed} failed, ${skipped} skipped`);
' "$results/unit.json" "$results/policy.json" "$results/integration.json"
say "all checks passed in $((SECONDS - start)) s"
