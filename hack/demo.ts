// The local demo: a real control plane on loopback, the operator running with
// its own RBAC, the samples applied with kubectl, the signed bundle read back
// and verified, an agent pod injected by the webhook, and the real authz
// sidecar deciding three calls: one allowed, one denied, one waiting for
// approval.

import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { CoreV1Api } from '@kubernetes/client-node';
import type { BundleJwks } from '../src/bundle/index.ts';
import { fromConfigMapData, fromJwks, verifyBundle } from '../src/bundle/index.ts';
import type { Operator } from '../src/operator/operator.ts';
import type { RunningWebhook } from '../src/webhook/index.ts';
import { startWebhook } from '../src/webhook/index.ts';
import { eventually, kubeConfigOf, spawnTracked } from '../test/harness/cluster.ts';
import { freePort, kubectl, REPO_ROOT, startControlPlane } from '../test/harness/control-plane.ts';
import { localWebhookOptions, serviceAccountKubeConfig, startLocalOperator } from '../test/harness/local-parts.ts';

const { values } = parseArgs({ options: { keep: { type: 'boolean', default: false } } });

const bold = (text: string): string => `\u001b[1m${text}\u001b[0m`;
function step(title: string): void {
  console.log(`\n${bold(`── ${title}`)}`);
}

const plane = await startControlPlane({ log: (line) => { console.log(`   ${line}`); } });
let operator: Operator | undefined;
let webhook: RunningWebhook | undefined;
let stopSidecar: (() => Promise<void>) | undefined;
const execFileAsync = promisify(execFile);
const portcullis = join(REPO_ROOT, 'bin', 'portcullis.js');
let stopping = false;
const stop = async (): Promise<void> => {
  if (stopping) return;
  stopping = true;
  await stopSidecar?.();
  await webhook?.stop();
  await operator?.stop();
  await plane.stop();
};
process.once('SIGINT', () => { void stop().then(() => process.exit(130)); });
process.once('SIGTERM', () => { void stop().then(() => process.exit(143)); });

const run = async (args: string[]): Promise<void> => {
  console.log(`$ kubectl ${args.join(' ')}`);
  console.log((await kubectl(plane, args)).stdout.trim());
};

try {
  step(`control plane ready at ${plane.server}`);
  console.log((await kubectl(plane, ['version'])).stdout.trim());

  step('the operator, running as its ServiceAccount with config/rbac');
  await kubectl(plane, ['create', 'namespace', 'portcullis-system']);
  await run(['apply', '-k', join(REPO_ROOT, 'config', 'rbac')]);
  const operatorClient = await serviceAccountKubeConfig(plane, 'portcullis-system', 'portcullis-operator');
  // Warnings would interleave with the demo's own output; errors still show.
  operator = await startLocalOperator(plane, { kubeConfig: operatorClient, namespace: 'portcullis-system', identity: 'demo-operator', logLevel: 'error' });
  console.log('operator started and holds the leader Lease');

  step('policies as a platform team writes them');
  await run(['apply', '--validate=strict', '-f', join(REPO_ROOT, 'config', 'samples')]);
  await eventually('every sample to be Ready', async () => {
    const out = (await kubectl(plane, ['get', 'portcullis', '-n', 'finance', '-o', 'jsonpath={.items[*].status.conditions[?(@.type=="Ready")].status}'])).stdout;
    const states = out.split(' ').filter(Boolean);
    return states.length === 4 && states.every((s) => s === 'True') ? true : undefined;
  });
  await run(['get', 'portcullis', '-n', 'finance']);

  step('the signed bundle the operator wrote for tenant finance');
  await run(['get', 'configmap', '-n', 'finance', '-l', 'app.kubernetes.io/managed-by=portcullis-operator', '-L', 'portcullis.dev/tenant']);
  const core = kubeConfigOf(plane).makeApiClient(CoreV1Api);
  const cm = await core.readNamespacedConfigMap({ name: 'portcullis-bundle', namespace: 'finance' });
  const trust = await core.readNamespacedConfigMap({ name: 'portcullis-trust', namespace: 'portcullis-system' });
  const publicKeys = await fromJwks(JSON.parse(trust.data?.['jwks.json'] ?? '{"keys":[]}') as BundleJwks);
  const bundle = await verifyBundle(fromConfigMapData({ data: cm.data ?? {}, binaryData: cm.binaryData ?? {} }), { publicKeys, tenant: 'finance' });
  console.log(`signature verified: revision ${bundle.manifest.revision}, tenant ${bundle.manifest.metadata.tenant}, policy.wasm ${bundle.wasm.byteLength} bytes`);

  step('an agent pod in a namespace labelled for injection gets the authz sidecar and Envoy');
  webhook = await startWebhook(localWebhookOptions(operatorClient, 'portcullis-system', await freePort()));
  const agentPod = ['apiVersion: v1', 'kind: Pod', 'metadata: { name: finance-agent-0, namespace: finance }', 'spec:', '  serviceAccountName: finance-agent', '  containers: [ { name: agent, image: finance-agent:1 } ]'].join('\n');
  await eventually('the injector to be in the admission chain', async () => {
    await kubectl(plane, ['apply', '-f', '-'], { input: agentPod });
    const pod = await core.readNamespacedPod({ name: 'finance-agent-0', namespace: 'finance' });
    if ((pod.spec?.initContainers ?? []).length > 0) return true;
    await kubectl(plane, ['delete', 'pod', 'finance-agent-0', '-n', 'finance', '--wait=false']);
    return undefined;
  }, 30_000, 500);
  await run(['get', 'pod', 'finance-agent-0', '-n', 'finance', '-o', 'jsonpath={range .spec.initContainers[*]}init (native sidecar): {.name} {.image} restartPolicy={.restartPolicy}{"\\n"}{end}{range .spec.containers[*]}app: {.name} HTTPS_PROXY={.env[?(@.name=="HTTPS_PROXY")].value}{"\\n"}{end}']);

  step('the authz sidecar of finance-agent, deciding with that bundle');
  const sidecarPort = await freePort();
  const auditDir = join(plane.runDir, 'audit');
  const auditFile = join(auditDir, 'finance-agent.log');
  await execFileAsync(process.execPath, [portcullis, 'audit', 'keygen', '--out', auditDir]);
  const sidecar = await spawnTracked(plane, process.execPath, [
    portcullis, 'sidecar', '--kubeconfig', plane.kubeconfig, '--agent', 'finance-agent', '--namespace', 'finance',
    '--tenant', 'finance', '--http-address', `127.0.0.1:${sidecarPort}`, '--grpc-address', `127.0.0.1:${await freePort()}`, '--log-level', 'error',
    '--audit-file', auditFile, '--audit-key', join(auditDir, 'audit-key.pem'), '--shutdown-delay', '10ms',
  ]);
  stopSidecar = () => sidecar.kill('SIGTERM');
  const base = `http://127.0.0.1:${sidecarPort}`;
  await eventually('the sidecar to load the bundle', async () => ((await fetch(`${base}/readyz`).catch(() => undefined))?.status === 200 ? true : undefined), 60_000);
  console.log(`sidecar ready on ${base} (POST /v1/authorize)`);
  const call = (params: Record<string, unknown>): Record<string, unknown> => ({ tool: 'stripe-payments', action: 'create_payment', params });
  const calls = [
    { title: 'a small payment: allowed', input: call({ amount: 4200, currency: 'USD', account: '1234567890' }) },
    { title: 'a payment in a currency no rule allows: denied, saying which condition failed', input: call({ amount: 4200, currency: 'GBP', account: '1234567890' }) },
    { title: 'a large payment: waiting for approval', input: call({ amount: 50000, currency: 'USD', account: '1234567890' }) },
  ];
  for (const { title, input } of calls) {
    console.log(`\n${bold(title)}`);
    console.log(`POST /v1/authorize ${JSON.stringify(input)}`);
    const response = await fetch(`${base}/v1/authorize`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(input) });
    console.log(`${response.status} ${await response.text()}`);
  }

  step('every decision is in a hash-chained audit trail, signed at checkpoints');
  await sidecar.kill('SIGTERM');
  stopSidecar = undefined;
  const verify = async (file: string): Promise<void> => {
    console.log(`$ portcullis audit verify ${file.slice(plane.runDir.length + 1)} --key audit-key.pub.pem`);
    const result = await execFileAsync(process.execPath, [portcullis, 'audit', 'verify', file, '--key', join(auditDir, 'audit-key.pub.pem')]).catch((error: unknown) => error as { stdout: string; code: number });
    console.log(`${result.stdout.trim()}${'code' in result ? `\n(exit ${String(result.code)})` : ''}`);
  };
  await verify(auditFile);
  // Someone turns the recorded denial into an allow: the chain says which entry.
  const lines = (await readFile(auditFile, 'utf8')).split('\n');
  const denied = lines.findIndex((line) => line.includes('"decision":"deny"'));
  const tampered = join(auditDir, 'tampered.log');
  await writeFile(tampered, lines.map((line, i) => (i === denied ? line.replace('"decision":"deny"', '"decision":"allow"') : line)).join('\n'));
  await verify(tampered);

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

  step('a policy only the compiler can refuse: Ready=False, and the last good bundle stays in force');
  await kubectl(plane, ['apply', '-f', '-'], {
    input: [
      'apiVersion: portcullis.dev/v1alpha1',
      'kind: ToolPolicy',
      'metadata: { name: lookbehind, namespace: finance }',
      'spec:',
      '  subjects: { agents: [finance-agent] }',
      '  rules: [ { name: odd-accounts, tool: stripe-payments, decision: allow, when: [ { param: account, regex: "(?<=x)y" } ] } ]',
    ].join('\n'),
  });
  await eventually('the status of the invalid policy', async () => {
    const out = (await kubectl(plane, ['get', 'toolpolicy', 'lookbehind', '-n', 'finance', '-o', 'jsonpath={.status.conditions[?(@.type=="Ready")].status}'])).stdout;
    return out === 'False' ? true : undefined;
  });
  await run(['get', 'toolpolicies', '-n', 'finance', '-o', 'wide']);
  await run(['get', 'toolpolicy', 'lookbehind', '-n', 'finance', '-o', 'jsonpath={.status.conditions[?(@.type=="Ready")].message}{"\\n"}']);

  if (values.keep) {
    step('control plane kept running; Ctrl-C stops it');
    console.log(`export KUBECONFIG=${plane.kubeconfig}`);
    await new Promise(() => undefined);
  }
} finally {
  await stop();
}
