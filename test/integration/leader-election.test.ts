// Two `portcullis operator` processes: exactly one reconciles; when it dies
// the other takes over (measured), and a graceful stop hands over at once.

import { join } from 'node:path';
import { CoordinationV1Api, CoreV1Api } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { stringify } from 'yaml';
import type { TrackedProcess } from '../harness/cluster.ts';
import { eventually, kubeConfigOf, spawnTracked } from '../harness/cluster.ts';
import { ensureNamespace, freePort, kubectl, REPO_ROOT } from '../harness/control-plane.ts';

const plane = inject('controlPlane');
const kc = kubeConfigOf(plane);
const core = kc.makeApiClient(CoreV1Api);
const coordination = kc.makeApiClient(CoordinationV1Api);
const SYSTEM_NS = 'election-system';
const TENANT_NS = 'election-tenant';

interface Replica {
  identity: string;
  port: number;
  process: TrackedProcess;
}

const replicas = new Map<string, Replica>();

async function startReplica(identity: string): Promise<Replica> {
  const port = await freePort();
  const process = await spawnTracked(plane, globalThis.process.execPath, [
    join(REPO_ROOT, 'bin', 'portcullis.js'),
    'operator',
    '--kubeconfig', plane.kubeconfig,
    '--namespace', SYSTEM_NS,
    '--identity', identity,
    '--ops-address', `127.0.0.1:${port}`,
    // Replicas share this host: each token service takes a free port.
    '--token-address', '127.0.0.1:0',
  ], { TEST_ASSET_OPA: plane.tools.opa });
  const replica = { identity, port, process };
  replicas.set(identity, replica);
  await eventually(`${identity} to be ready`, async () => {
    const res = await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined);
    return res?.status === 200 ? true : undefined;
  }, 30_000);
  return replica;
}

async function metric(replica: Replica, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${replica.port}/metrics`)).text();
  return text
    .split('\n')
    .filter((line) => line.startsWith(name))
    .reduce((sum, line) => sum + Number(line.split(' ').pop()), 0);
}

async function holder(): Promise<string | undefined> {
  const lease = await coordination.readNamespacedLease({ name: 'portcullis-operator', namespace: SYSTEM_NS }).catch(() => undefined);
  return lease?.spec?.holderIdentity ?? undefined;
}

async function applyPolicy(maxAmount: number): Promise<void> {
  const docs = [
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: TENANT_NS } },
    {
      apiVersion: 'portcullis.dev/v1alpha1',
      kind: 'ToolPolicy',
      metadata: { name: 'payments', namespace: TENANT_NS },
      spec: { subjects: { agents: ['worker'] }, rules: [{ name: `max-${maxAmount}`, tool: 'stripe-payments', decision: 'allow', when: [{ param: 'amount', max: maxAmount }] }] },
    },
  ];
  await kubectl(plane, ['apply', '-f', '-'], { input: docs.map((d) => stringify(d)).join('---\n') });
}

async function bundleHolds(rule: string): Promise<true | undefined> {
  const cm = await core.readNamespacedConfigMap({ name: 'portcullis-bundle', namespace: TENANT_NS }).catch(() => undefined);
  return cm?.data?.['data.json']?.includes(`"${rule}"`) ? true : undefined;
}

beforeAll(async () => {
  await ensureNamespace(plane, SYSTEM_NS);
  await Promise.all([startReplica('replica-a'), startReplica('replica-b')]);
}, 60_000);

afterAll(async () => {
  await Promise.all([...replicas.values()].map((r) => r.process.kill('SIGKILL')));
});

describe('leader election between operator processes', () => {
  let leader: Replica;
  let follower: Replica;

  it('lets exactly one replica reconcile', async () => {
    const name = await eventually('a leader', holder, 30_000);
    const [elected, other] = [replicas.get(name), [...replicas.values()].find((r) => r.identity !== name)];
    if (!elected || !other) throw new Error(`the Lease names ${name}, which is not one of the replicas`);
    leader = elected;
    follower = other;
    await applyPolicy(100);
    await eventually('the bundle from the leader', () => bundleHolds('max-100'), 30_000);
    expect(await metric(leader, 'portcullis_leader')).toBe(1);
    expect(await metric(follower, 'portcullis_leader')).toBe(0);
    expect(await metric(leader, 'portcullis_reconcile_total')).toBeGreaterThan(0);
    expect(await metric(follower, 'portcullis_reconcile_total')).toBe(0);
  }, 60_000);

  it('fails over when the leader is killed, within a lease duration and a retry period', async () => {
    const killedAt = Date.now();
    await leader.process.kill('SIGKILL');
    await eventually('the follower to take the Lease', async () => ((await holder()) === follower.identity ? true : undefined), 40_000, 100);
    const takeoverMs = Date.now() - killedAt;
    console.log(`leader killed: the other replica took over in ${takeoverMs} ms`);
    // 15 s lease duration + 2 s retry period, plus scheduling slack.
    expect(takeoverMs).toBeLessThan(25_000);
    await applyPolicy(200);
    await eventually('the new leader to reconcile', () => bundleHolds('max-200'), 30_000);
    expect(await metric(follower, 'portcullis_reconcile_total')).toBeGreaterThan(0);
  }, 60_000);

  it('hands over at once when the leader stops gracefully', async () => {
    const restarted = await startReplica(leader.identity);
    const stoppedAt = Date.now();
    await follower.process.kill('SIGTERM');
    expect(await follower.process.exited).toBe(0);
    await eventually('the restarted replica to take the released Lease', async () => ((await holder()) === restarted.identity ? true : undefined), 20_000, 100);
    const handoverMs = Date.now() - stoppedAt;
    console.log(`leader stopped gracefully: the other replica took over in ${handoverMs} ms`);
    expect(handoverMs).toBeLessThan(8_000);
    await applyPolicy(300);
    await eventually('the new leader to reconcile', () => bundleHolds('max-300'), 30_000);
  }, 60_000);
});
