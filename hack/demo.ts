// The local demo: a real control plane on loopback, the samples applied with
// kubectl, and what users then see.

import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { kubectl, REPO_ROOT, startControlPlane } from '../test/harness/control-plane.ts';

const { values } = parseArgs({ options: { keep: { type: 'boolean', default: false } } });

function step(title: string): void {
  console.log(`\n\u001b[1m── ${title}\u001b[0m`);
}

const plane = await startControlPlane({ log: (line) => { console.log(`   ${line}`); } });
let stopping = false;
const stop = async (): Promise<void> => {
  if (stopping) return;
  stopping = true;
  await plane.stop();
};
process.once('SIGINT', () => { void stop().then(() => process.exit(130)); });
process.once('SIGTERM', () => { void stop().then(() => process.exit(143)); });

try {
  step(`control plane ready at ${plane.server}`);
  console.log((await kubectl(plane, ['version'])).stdout.trim());

  step('kubectl apply -f config/samples/');
  console.log((await kubectl(plane, ['apply', '--validate=strict', '-f', join(REPO_ROOT, 'config', 'samples')])).stdout.trim());

  step('kubectl get portcullis -A   (every Portcullis resource, by category)');
  console.log((await kubectl(plane, ['get', 'portcullis', '-A', '-o', 'wide'])).stdout.trim());

  step('kubectl get toolpolicy payments -n finance -o yaml   (spec and status)');
  console.log((await kubectl(plane, ['get', 'toolpolicy', 'payments', '-n', 'finance', '-o', 'yaml'])).stdout.trim());

  step('a malformed policy is refused by the API server');
  const bad = await kubectl(plane, ['apply', '-f', '-'], {
    allowFailure: true,
    input: [
      'apiVersion: portcullis.dev/v1alpha1',
      'kind: ToolPolicy',
      'metadata: { name: broken, namespace: finance }',
      'spec:',
      '  subjects: { agents: [finance-agent] }',
      '  rules: [ { name: big, tool: stripe-payments, decision: allow, when: [ { param: amount, min: 10, max: 5 } ] } ]',
    ].join('\n'),
  });
  console.log(bad.stderr.trim());

  if (values.keep) {
    step('control plane kept running; Ctrl-C stops it');
    console.log(`export KUBECONFIG=${plane.kubeconfig}`);
    await new Promise(() => undefined);
  }
} finally {
  await stop();
}
