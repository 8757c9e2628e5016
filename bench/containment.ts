// npm run bench -- containment
//
// Time-to-contain on a real control plane: an operator process and a sidecar process (running as
// the agent's ServiceAccount, with the access the operator grants it) decide an allowed payment in
// a tight loop over /v1/authorize. Each trial runs `kubectl patch` setting `spec.suspended: true`
// on the agent and measures the time from just before kubectl starts to the first answer denied
// with portcullis:agent-suspended (the path: API server → operator watch → compile, sign, write
// the bundle → sidecar watch → verify, load). Then the agent is resumed and the loop waits for
// allow again. Then the same with an invalid policy present (the tenant blocked, its policies not
// compiled): the suspension goes out as the last good bundle with the agent's new standing. Also:
// token issuance by the operator's token service over HTTPS (a real TokenReview
// per exchange), one at a time and with 16 in flight.
// Operator, sidecar, API server, etcd and this process share the machine's cores.

import { join } from 'node:path';
import { stringify } from 'yaml';
import { INJECTED_ANNOTATION } from '../src/api/index.ts';
import { TokenServiceClient, tokenServiceEndpoint } from '../src/identity/index.ts';
import type { TrackedProcess } from '../test/harness/cluster.ts';
import { eventually, spawnTracked } from '../test/harness/cluster.ts';
import { freePort, kubectl, REPO_ROOT, startControlPlane } from '../test/harness/control-plane.ts';
import { agentKubeconfigFile } from '../test/harness/local-parts.ts';
import type { Figure } from './lib.ts';
import { figure, percentile, report } from './lib.ts';

const TRIALS = 30;
const ISSUE_SEQUENTIAL = 200;
const ISSUE_CONCURRENT = 800;
const ISSUE_CONCURRENCY = 16;
/** ISSUE_SEQUENTIAL + ISSUE_CONCURRENT exchanges over this many accounts stay within each one's burst. */
const ISSUE_ACCOUNTS = 60;
const NS = 'bench-containment';
const AGENT = 'finance-agent';
const CONTAIN_TARGET_MS = 1000;

const plane = await startControlPlane({ log: (l) => { console.log(`[control-plane] ${l}`); } });

const apply = async (docs: unknown[]): Promise<void> => {
  await kubectl(plane, ['apply', '-f', '-'], { input: docs.map((d) => stringify(d)).join('---\n') });
};

const paymentCall = { tool: 'stripe-payments', action: 'create_payment', params: { amount: 4200, currency: 'USD', account: '1234567890' } };

interface Answer { decision: string; rule: string }

async function decide(base: string): Promise<Answer> {
  const response = await fetch(`${base}/v1/authorize`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(paymentCall) });
  return (await response.json()) as Answer;
}

/** Calls in a loop until an answer satisfies `done`; resolves with the time of that answer. */
async function firstAnswer(base: string, done: (answer: Answer) => boolean, timeoutMs = 30_000): Promise<number> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    const answer = await decide(base);
    if (done(answer)) return performance.now();
  }
  throw new Error(`no such answer within ${String(timeoutMs)} ms`);
}

async function issue(client: TokenServiceClient, serviceAccountToken: string): Promise<number> {
  const started = performance.now();
  const response = await client.request('POST', '/v1/token', { authorization: `Bearer ${serviceAccountToken}` });
  const body = (response.body ?? {}) as { access_token?: string; error?: string };
  if (response.status !== 200 || body.access_token === undefined) throw new Error(`token exchange failed: ${String(response.status)} ${body.error ?? ''}`);
  return performance.now() - started;
}

const figures: Figure[] = [];
const processes: TrackedProcess[] = [];
try {
  await kubectl(plane, ['create', 'namespace', 'portcullis-system']);
  await apply([
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } },
    { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: AGENT, namespace: NS } },
    { apiVersion: 'portcullis.dev/v1alpha1', kind: 'AgentIdentity', metadata: { name: AGENT, namespace: NS }, spec: { serviceAccountName: AGENT, owner: { name: 'Dana Ruiz', email: 'dana@example.com' } } },
    {
      apiVersion: 'portcullis.dev/v1alpha1', kind: 'ToolPolicy', metadata: { name: 'payments', namespace: NS },
      spec: { subjects: { agents: [AGENT] }, rules: [{ name: 'small-payments', tool: 'stripe-payments', actions: ['create_payment'], decision: 'allow', when: [{ param: 'amount', max: 5000 }] }] },
    },
  ]);

  const tokenPort = await freePort();
  const operator = await spawnTracked(plane, process.execPath, [
    join(REPO_ROOT, 'bin', 'portcullis.js'), 'operator',
    '--kubeconfig', plane.kubeconfig, '--namespace', 'portcullis-system', '--identity', 'bench',
    '--ops-address', `127.0.0.1:${String(await freePort())}`, '--token-address', `127.0.0.1:${String(tokenPort)}`, '--token-url', `https://127.0.0.1:${String(tokenPort)}`, '--log-level', 'error',
    '--lease-duration', '3s', '--renew-deadline', '2s', '--retry-period', '500ms',
  ], { TEST_ASSET_OPA: plane.tools.opa });
  processes.push(operator);

  const httpPort = await freePort();
  const base = `http://127.0.0.1:${String(httpPort)}`;
  const sidecar = await spawnTracked(plane, process.execPath, [
    join(REPO_ROOT, 'bin', 'portcullis.js'), 'sidecar',
    '--agent', AGENT, '--namespace', NS, '--tenant', NS,
    '--http-address', `127.0.0.1:${String(httpPort)}`, '--grpc-address', `127.0.0.1:${String(await freePort())}`,
    '--kubeconfig', await agentKubeconfigFile(plane, NS, AGENT),
    '--log-level', 'error',
  ]);
  processes.push(sidecar);
  await eventually('the sidecar to allow the payment', async () => ((await decide(base).catch(() => undefined))?.decision === 'allow' ? true : undefined), 60_000);

  // ---- 1. time-to-contain ---------------------------------------------
  const trials = async (label: string): Promise<{ contain: number[]; afterPatch: number[] }> => {
    const contain: number[] = [];
    const afterPatch: number[] = [];
    for (let trial = 0; trial < TRIALS; trial++) {
      const started = performance.now();
      const denied = firstAnswer(base, (a) => a.decision === 'deny' && a.rule === 'portcullis:agent-suspended');
      await kubectl(plane, ['patch', 'agentidentity', AGENT, '-n', NS, '--type=merge', '-p', '{"spec":{"suspended":true}}']);
      const patched = performance.now();
      const at = await denied;
      contain.push(at - started);
      afterPatch.push(Math.max(0, at - patched));
      await kubectl(plane, ['patch', 'agentidentity', AGENT, '-n', NS, '--type=merge', '-p', '{"spec":{"suspended":false}}']);
      await firstAnswer(base, (a) => a.decision === 'allow');
      process.stdout.write(`${label} trial ${String(trial + 1)}/${String(TRIALS)}: contained in ${(at - started).toFixed(0)} ms\n`);
    }
    return { contain: contain.sort((a, b) => a - b), afterPatch: afterPatch.sort((a, b) => a - b) };
  };
  const { contain, afterPatch } = await trials('valid tenant');
  const p99 = percentile(contain, 99);
  figures.push(
    figure(`time-to-contain p50 (kubectl patch suspended → first denied call, ${String(TRIALS)} trials)`, percentile(contain, 50), 'ms'),
    figure(`time-to-contain p99 (${String(TRIALS)} trials)`, p99, 'ms', { text: `<= ${String(CONTAIN_TARGET_MS)} ms`, met: p99 <= CONTAIN_TARGET_MS }),
    figure('time-to-contain p50 from the patch accepted (kubectl start-up excluded)', percentile(afterPatch, 50), 'ms'),
    figure('time-to-contain p99 from the patch accepted', percentile(afterPatch, 99), 'ms'),
  );

  // ---- 1b. time-to-contain with an invalid policy present -----------------
  // RE2 has no look-behind: the API server takes the policy, the compiler refuses it, and the
  // tenant is blocked until it is fixed. The suspension must not wait for that fix.
  await apply([{
    apiVersion: 'portcullis.dev/v1alpha1', kind: 'ToolPolicy', metadata: { name: 'broken', namespace: NS },
    spec: { subjects: { agents: [AGENT] }, rules: [{ name: 'lookbehind', tool: 'stripe-payments', decision: 'allow', when: [{ param: 'account', regex: '(?<=x)y' }] }] },
  }]);
  await eventually('the invalid policy to block the tenant', async () => {
    const compiled = (await kubectl(plane, ['get', 'toolpolicy', 'broken', '-n', NS, '-o', 'jsonpath={.status.conditions[?(@.type=="Compiled")].status}'], { allowFailure: true })).stdout.trim();
    return compiled === 'False' ? true : undefined;
  }, 30_000);
  const blocked = await trials('blocked tenant');
  const blockedP99 = percentile(blocked.contain, 99);
  figures.push(
    figure(`time-to-contain p50 with an invalid policy present (tenant blocked, ${String(TRIALS)} trials)`, percentile(blocked.contain, 50), 'ms'),
    figure(`time-to-contain p99 with an invalid policy present (${String(TRIALS)} trials)`, blockedP99, 'ms', { text: `<= ${String(CONTAIN_TARGET_MS)} ms`, met: blockedP99 <= CONTAIN_TARGET_MS }),
    figure('time-to-contain p50 with an invalid policy present, from the patch accepted', percentile(blocked.afterPatch, 50), 'ms'),
    figure('time-to-contain p99 with an invalid policy present, from the patch accepted', percentile(blocked.afterPatch, 99), 'ms'),
  );
  await kubectl(plane, ['delete', 'toolpolicy', 'broken', '-n', NS]);

  // ---- 2. token issuance ------------------------------------------------
  // The token service lets one ServiceAccount exchange 5 a second (burst 20): spread the load over
  // enough accounts that the limiter never answers, so the figures are the service's own.
  // Over TLS, as sidecars reach it: verified against the CA the operator keeps in Secret portcullis-tokens-tls.
  const tokenCa = await eventually('the token service CA', async () => {
    const data = (await kubectl(plane, ['get', 'secret', 'portcullis-tokens-tls', '-n', 'portcullis-system', '-o', 'jsonpath={.data.ca\\.crt}'], { allowFailure: true })).stdout.trim();
    return data === '' ? undefined : Buffer.from(data, 'base64').toString('utf8');
  }, 30_000);
  const tokenClient = new TokenServiceClient(tokenServiceEndpoint(`https://127.0.0.1:${String(tokenPort)}`, { ca: tokenCa }));
  const accounts = Array.from({ length: ISSUE_ACCOUNTS }, (_, i) => `bench-agent-${String(i)}`);
  await apply(accounts.flatMap((name) => [
    { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name, namespace: NS } },
    { apiVersion: 'portcullis.dev/v1alpha1', kind: 'AgentIdentity', metadata: { name, namespace: NS }, spec: { serviceAccountName: name, owner: { name: 'Dana Ruiz', email: 'dana@example.com' } } },
    // Agent tokens are issued only for a token bound to an injected pod (stays Pending: no scheduler).
    {
      apiVersion: 'v1', kind: 'Pod', metadata: { name: `${name}-0`, namespace: NS, annotations: { [INJECTED_ANNOTATION]: '{}' } },
      spec: { serviceAccountName: name, automountServiceAccountToken: false, containers: [{ name: 'agent', image: 'example.com/agent:1' }] },
    },
  ]));
  const tokens: string[] = [];
  for (const name of accounts) {
    tokens.push((await kubectl(plane, ['create', 'token', name, '-n', NS, '--audience=portcullis', '--duration=1h', '--bound-object-kind=Pod', `--bound-object-name=${name}-0`])).stdout.trim());
  }
  await eventually('the token service to know the last bench agent', () => issue(tokenClient, tokens.at(-1) ?? '').catch(() => undefined), 30_000);
  const latencies: number[] = [];
  for (let i = 0; i < ISSUE_SEQUENTIAL; i++) latencies.push(await issue(tokenClient, tokens[i % tokens.length] ?? ''));
  latencies.sort((a, b) => a - b);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < ISSUE_CONCURRENT) {
      const i = next++;
      await issue(tokenClient, tokens[i % tokens.length] ?? '');
    }
  };
  const burstStarted = performance.now();
  await Promise.all(Array.from({ length: ISSUE_CONCURRENCY }, worker));
  const seconds = (performance.now() - burstStarted) / 1000;
  tokenClient.close();
  figures.push(
    // The name is the one earlier runs recorded, so they compare; the token service speaks only HTTPS
    // now, on a kept-alive connection, and that is what this measures.
    figure('token issuance p50 (one at a time, over HTTP, a real TokenReview each)', percentile(latencies, 50), 'ms'),
    figure('token issuance p99 (one at a time)', percentile(latencies, 99), 'ms'),
    figure(`token issuance throughput (${String(ISSUE_CONCURRENCY)} in flight)`, ISSUE_CONCURRENT / seconds, 'tokens/s'),
  );
} finally {
  for (const child of processes) await child.kill('SIGTERM');
  await plane.stop();
}
await report('containment', figures);
