// npm run bench -- identity
//
// Token issuance against a real control plane on loopback: every exchange is a real TokenReview
// of a real ServiceAccount token (TokenRequest, audience portcullis), an AgentIdentity lookup in
// the informer cache, and an Ed25519 signature.
// 1. Latency of one exchange at a time (p50/p99), next to a bare TokenReview as the floor.
// 2. Throughput with CONCURRENCY exchanges in flight.
// 3. Verification of an agent token (what sidecars and tools do per call), in process.
// 4. The token service's part of containment: from `kubectl patch` setting `suspended: true` to
//    the first refused exchange, over CONTAINMENT_TRIALS trials. The whole time-to-contain (to the
//    first denied call at the sidecar) goes through the bundle path and is measured with the sidecar.
// The token service, its client and the API server share the machine's cores.

import { AuthenticationV1Api, CoreV1Api } from '@kubernetes/client-node';
import { pino } from 'pino';
import { stringify } from 'yaml';
import { AGENT_TOKEN_AUDIENCE, startTokenService, TokenServiceClient, tokenServiceEndpoint, verifyAgentToken } from '../src/identity/index.ts';
import { ephemeralServingTls } from '../src/webhook/serving-certs.ts';
import { fromJwks } from '../src/bundle/index.ts';
import type { BundleJwks } from '../src/bundle/index.ts';
import { kubeConfigOf } from '../test/harness/cluster.ts';
import { kubectl, startControlPlane } from '../test/harness/control-plane.ts';
import type { Figure } from './lib.ts';
import { figure, percentile, report } from './lib.ts';

const AGENTS = 20;
const SEQUENTIAL = 400;
const CONCURRENT = 2000;
const CONCURRENCY = 16;
const VERIFICATIONS = 5000;
const NS = 'bench-identity';
const CONTAINMENT_TRIALS = 30;

const plane = await startControlPlane({ log: (l) => { console.log(`[control-plane] ${l}`); } });
const kc = kubeConfigOf(plane);
const core = kc.makeApiClient(CoreV1Api);
const auth = kc.makeApiClient(AuthenticationV1Api);

await kubectl(plane, ['create', 'namespace', NS]);
await kubectl(plane, ['create', 'namespace', 'portcullis-system']);
const names = Array.from({ length: AGENTS }, (_, i) => `agent-${String(i)}`);
await kubectl(plane, ['apply', '-f', '-'], {
  input: names
    .flatMap((name) => [
      { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name, namespace: NS } },
      { apiVersion: 'portcullis.dev/v1alpha1', kind: 'AgentIdentity', metadata: { name, namespace: NS }, spec: { serviceAccountName: name, owner: { name: 'Bench', email: 'bench@example.com' }, roles: ['bench'] } },
      // Agent tokens are issued only for a token bound to an injected pod (stays Pending: no scheduler).
      {
        apiVersion: 'v1', kind: 'Pod', metadata: { name: `${name}-0`, namespace: NS, annotations: { 'portcullis.dev/injected': '{}' } },
        spec: { serviceAccountName: name, automountServiceAccountToken: false, containers: [{ name: 'agent', image: 'example.com/agent:1' }] },
      },
    ])
    .map((d) => stringify(d))
    .join('---\n'),
});
const saTokens = await Promise.all(
  names.map(async (name) => {
    const answer = await core.createNamespacedServiceAccountToken({ name, namespace: NS, body: { spec: { audiences: ['portcullis'], expirationSeconds: 3600, boundObjectRef: { apiVersion: 'v1', kind: 'Pod', name: `${name}-0` } } } });
    return answer.status?.token ?? '';
  }),
);

// Over TLS, as sidecars reach it, on connections kept alive.
const tls = await ephemeralServingTls({ dnsNames: ['localhost'], ips: ['127.0.0.1'] });
const service = await startTokenService({ kubeConfig: kc, namespace: 'portcullis-system', host: '127.0.0.1', port: 0, log: pino({ level: 'error' }), rateLimit: { perSecond: 1e9, burst: 1e9 }, tls: () => Promise.resolve(tls) });
const client = new TokenServiceClient(tokenServiceEndpoint(service.url, { ca: tls.ca }));

async function exchange(i: number): Promise<string> {
  const res = await client.request('POST', '/v1/token', { authorization: `Bearer ${saTokens[i % AGENTS] ?? ''}` });
  if (res.status !== 200) throw new Error(`exchange answered ${String(res.status)}: ${JSON.stringify(res.body)}`);
  return (res.body as { access_token: string }).access_token;
}

async function timed(run: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await run();
  return performance.now() - start;
}

// Warm up connections, caches and the JIT.
for (let i = 0; i < 50; i++) await exchange(i);

const reviews: number[] = [];
for (let i = 0; i < SEQUENTIAL; i++) {
  reviews.push(await timed(() => auth.createTokenReview({ body: { spec: { token: saTokens[i % AGENTS] ?? '', audiences: ['portcullis'] } } })));
}
const latencies: number[] = [];
for (let i = 0; i < SEQUENTIAL; i++) latencies.push(await timed(() => exchange(i)));
reviews.sort((a, b) => a - b);
latencies.sort((a, b) => a - b);

let next = 0;
const issued: string[] = [];
const concurrentMs = await timed(() =>
  Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < CONCURRENT) issued.push(await exchange(next++));
    }),
  ),
);

const jwks = (await client.request('GET', '/.well-known/jwks.json')).body as BundleJwks;
const keys = await fromJwks(jwks);
const verifyMs = await timed(async () => {
  for (let i = 0; i < VERIFICATIONS; i++) {
    await verifyAgentToken(issued[i % issued.length] ?? '', { issuer: service.service.issuer, audience: AGENT_TOKEN_AUDIENCE, keys, tenant: NS });
  }
});

async function patchSuspended(name: string, suspended: boolean): Promise<void> {
  await kubectl(plane, ['patch', 'agentidentity', name, '-n', NS, '--type=merge', '-p', JSON.stringify({ spec: { suspended } })]);
}

async function exchangeStatus(i: number): Promise<number> {
  return (await client.request('POST', '/v1/token', { authorization: `Bearer ${saTokens[i] ?? ''}` })).status;
}

const contain: number[] = [];
for (let trial = 0; trial < CONTAINMENT_TRIALS; trial++) {
  const i = trial % AGENTS;
  const start = performance.now();
  const patched = patchSuspended(names[i] ?? '', true);
  while ((await exchangeStatus(i)) !== 403) await new Promise((r) => setTimeout(r, 2));
  contain.push(performance.now() - start);
  await patched;
  await patchSuspended(names[i] ?? '', false);
  while ((await exchangeStatus(i)) !== 200) await new Promise((r) => setTimeout(r, 10));
}
contain.sort((a, b) => a - b);

const figures: Figure[] = [
  figure('token issuance p50 (one at a time)', percentile(latencies, 50), 'ms', undefined, { name: 'bare TokenReview p50', value: percentile(reviews, 50) }),
  figure('token issuance p99 (one at a time)', percentile(latencies, 99), 'ms', undefined, { name: 'bare TokenReview p99', value: percentile(reviews, 99) }),
  figure(`token issuance throughput (${String(CONCURRENCY)} in flight)`, CONCURRENT / (concurrentMs / 1000), 'tokens/s'),
  figure('agent token verification (in process)', VERIFICATIONS / (verifyMs / 1000), 'tokens/s'),
  figure('kubectl patch suspended → token refused p50', percentile(contain, 50), 'ms'),
  figure('kubectl patch suspended → token refused p99', percentile(contain, 99), 'ms', { text: '<= 1000 ms', met: percentile(contain, 99) <= 1000 }),
];
client.close();
await service.stop();
await plane.stop();
await report('identity', figures);
