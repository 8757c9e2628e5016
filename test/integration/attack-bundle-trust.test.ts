// The bundle trust root against a tenant's own RBAC, on the real API server:
// a user bound to Kubernetes' default `edit` ClusterRole in the tenant
// namespace tries every route to make a spawned `portcullis sidecar` load a
// bundle signed with the user's own key — a trust ConfigMap of its own in the
// tenant namespace, the operator's trust ConfigMap, a self-signed bundle at a
// high revision, an older genuine bundle replayed — and the genuine bundle
// stays in force, or comes back, throughout. Key rotation still reaches the
// sidecar, and a bundle whose key the trust drops is unloaded (fail closed).
import type { KubeConfig, V1ConfigMap, V1Secret } from '@kubernetes/client-node';
import { CoreV1Api } from '@kubernetes/client-node';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { stringify } from 'yaml';
import type { BundleJwks, SigningKeyPair } from '../../src/bundle/index.ts';
import { formatRevision, fromConfigMapData, fromJwks, generateSigningKey, parseRevision, signBundle, toConfigMapData, toJwks, verifyBundle } from '../../src/bundle/index.ts';
import type { Operator } from '../../src/operator/operator.ts';
import { MAX_REVISION_SEQUENCE } from '../../src/bundle/revision.ts';
import { parseKeyring, rotateKeyring, SIGNING_SECRET_KEY } from '../../src/operator/signing-keys.ts';
import type { TrackedProcess } from '../harness/cluster.ts';
import { eventually, kubeConfigOf, spawnTracked } from '../harness/cluster.ts';
import { freePort, kubectl, REPO_ROOT } from '../harness/control-plane.ts';
import { agentKubeconfigFile, serviceAccountKubeConfig, startScopedOperator } from '../harness/local-parts.ts';
import { aggregateClusterRoles } from '../harness/rbac.ts';

const plane = inject('controlPlane');
const core = kubeConfigOf(plane).makeApiClient(CoreV1Api);
const OPERATOR_NS = 'trust-attack-system';
const NS = 'trust-attack';
const TENANT = NS;
const AGENT = 'finance-agent';
const ATTACKER = 'mallory';
const TRUST = 'portcullis-trust';
const BUNDLE = 'portcullis-bundle';
const SIGNING_SECRET = 'portcullis-signing-keys';
const HIGHEST_SEQUENCE = MAX_REVISION_SEQUENCE;

let operator: Operator | undefined;
let sidecar: TrackedProcess;
let httpBase: string;
/** The API as the attacker: a ServiceAccount of the tenant namespace bound to the default `edit` ClusterRole there. */
let attacker: CoreV1Api;
let attackerKey: SigningKeyPair;

const apply = async (docs: unknown[]): Promise<void> => {
  await kubectl(plane, ['apply', '--validate=strict', '-f', '-'], { input: docs.map((d) => stringify(d)).join('---\n') });
};

function paymentsPolicy(max: number): unknown {
  return {
    apiVersion: 'portcullis.dev/v1alpha1',
    kind: 'ToolPolicy',
    metadata: { name: 'payments', namespace: NS },
    spec: {
      subjects: { agents: [AGENT] },
      rules: [{ name: 'small-payments', tool: 'stripe-payments', actions: ['create_payment'], decision: 'allow', when: [{ param: 'amount', max }] }],
    },
  };
}

interface Answer { decision: string; rule: string; revision: string }

async function pay(amount: number): Promise<Answer> {
  const response = await fetch(`${httpBase}/v1/authorize`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ tool: 'stripe-payments', action: 'create_payment', params: { amount } }),
  });
  return (await response.json()) as Answer;
}

async function metricValue(series: string): Promise<number> {
  const text = await (await fetch(`${httpBase}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
}

/** The status code of a refused API call, or 'allowed'. */
async function statusOf(call: Promise<unknown>): Promise<number | 'allowed'> {
  try {
    await call;
    return 'allowed';
  } catch (error) {
    return (error as { code?: number }).code ?? -1;
  }
}

const bundleConfigMap = (): Promise<V1ConfigMap> => core.readNamespacedConfigMap({ name: BUNDLE, namespace: NS });
const revisionOf = (cm: V1ConfigMap): string => cm.metadata?.annotations?.['portcullis.dev/revision'] ?? '';

function keyIdOf(cm: V1ConfigMap): string {
  const jws = (JSON.parse(cm.data?.['.signatures.json'] ?? '{"signatures":[]}') as { signatures: string[] }).signatures[0] ?? '';
  return (JSON.parse(Buffer.from(jws.split('.')[0] ?? '', 'base64url').toString('utf8')) as { kid?: string }).kid ?? '';
}

async function trustedKeyIds(): Promise<string[]> {
  const trust = await core.readNamespacedConfigMap({ name: TRUST, namespace: OPERATOR_NS });
  return [...(await fromJwks(JSON.parse(trust.data?.['jwks.json'] ?? '{"keys":[]}') as BundleJwks)).keys()].sort();
}

/**
 * The genuine bundle in the ConfigMap, re-signed with the attacker's key at a
 * far higher revision, with its payment bound raised a thousandfold: a bundle
 * that would allow what the genuine one does not, if it ever loaded.
 */
async function forgedBundle(genuine: V1ConfigMap, sequence: bigint): Promise<{ data: Record<string, string>; binaryData: Record<string, string>; revision: string }> {
  const keys = await fromJwks(JSON.parse((await core.readNamespacedConfigMap({ name: TRUST, namespace: OPERATOR_NS })).data?.['jwks.json'] ?? '') as BundleJwks);
  const bundle = await verifyBundle(fromConfigMapData({ data: genuine.data ?? {}, binaryData: genuine.binaryData ?? {} }), { publicKeys: keys, tenant: TENANT });
  const revision = formatRevision(sequence, parseRevision(bundle.manifest.revision).digest);
  const data = JSON.parse(JSON.stringify(bundle.data).replace('"bound":5000', '"bound":5000000')) as unknown;
  expect(JSON.stringify(data)).toContain('"bound":5000000');
  const signed = await signBundle({ manifest: { ...bundle.manifest, revision }, wasm: bundle.wasm, data }, { privateKey: attackerKey.privateKey, keyId: attackerKey.keyId });
  return { ...toConfigMapData(signed), revision };
}

/** Polls for `ms`: the sidecar must never allow the payment only the forged bundle allows, nor answer from `forged`. */
async function neverForged(forged: string, ms: number): Promise<void> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    const answer = await pay(4_000_000);
    expect(answer.decision).not.toBe('allow');
    expect(answer.revision).not.toBe(forged);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function refusalEvents(code: string): Promise<string[]> {
  const events = await core.listNamespacedEvent({ namespace: NS });
  return events.items.filter((e) => e.reason === 'BundleRefused' && e.message?.startsWith(`${code}:`) === true).map((e) => e.message ?? '');
}

beforeAll(async () => {
  attackerKey = await generateSigningKey();
  // `edit` as a real cluster has it: the rules its aggregation collects.
  await aggregateClusterRoles(plane, ['edit']);
  operator = await startScopedOperator(plane, 'trustattack', OPERATOR_NS);
  await apply([
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } },
    { apiVersion: 'portcullis.dev/v1alpha1', kind: 'AgentIdentity', metadata: { name: AGENT, namespace: NS }, spec: { serviceAccountName: AGENT, owner: { name: 'Dana Ruiz', email: 'dana@example.com' } } },
    paymentsPolicy(5000),
    { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: ATTACKER, namespace: NS } },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'RoleBinding', metadata: { name: `${ATTACKER}-edit`, namespace: NS },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'edit' },
      subjects: [{ kind: 'ServiceAccount', name: ATTACKER, namespace: NS }],
    },
  ]);
  const attackerConfig: KubeConfig = await serviceAccountKubeConfig(plane, NS, ATTACKER);
  attacker = attackerConfig.makeApiClient(CoreV1Api);
  const kubeconfig = await agentKubeconfigFile(plane, NS, AGENT);
  const httpPort = await freePort();
  httpBase = `http://127.0.0.1:${String(httpPort)}`;
  sidecar = await spawnTracked(plane, process.execPath, [
    join(REPO_ROOT, 'bin', 'portcullis.js'), 'sidecar', '--kubeconfig', kubeconfig, '--agent', AGENT, '--namespace', NS, '--tenant', TENANT,
    '--trust-namespace', OPERATOR_NS, '--http-address', `127.0.0.1:${String(httpPort)}`, '--grpc-address', `127.0.0.1:${String(await freePort())}`,
  ]);
  await eventually('the sidecar to load the genuine bundle', async () => ((await pay(4200).catch(() => undefined))?.decision === 'allow' ? true : undefined), 60_000);
}, 120_000);

afterAll(async () => {
  await sidecar.kill('SIGTERM');
  await writeFile(join(plane.runDir, 'attack-bundle-trust-sidecar.log'), sidecar.output());
  await operator?.stop();
});

describe('a user bound to edit in the tenant namespace', () => {
  it('can write ConfigMaps of the tenant namespace (the role is what it says)', async () => {
    const probe = { metadata: { name: 'edit-probe', namespace: NS }, data: { a: 'b' } };
    expect(await statusOf(attacker.createNamespacedConfigMap({ namespace: NS, body: probe }))).toBe('allowed');
    expect(await statusOf(attacker.deleteNamespacedConfigMap({ name: 'edit-probe', namespace: NS }))).toBe('allowed');
  });

  it('cannot write the trust ConfigMap of the operator namespace by any verb, nor read anything else there', async () => {
    const current = await core.readNamespacedConfigMap({ name: TRUST, namespace: OPERATOR_NS });
    const jwks = JSON.stringify(await toJwks(new Map([[attackerKey.keyId, attackerKey.publicKey]])));
    const body = { metadata: { name: TRUST, namespace: OPERATOR_NS, resourceVersion: current.metadata?.resourceVersion ?? '' }, data: { 'jwks.json': jwks } };
    expect(await statusOf(attacker.replaceNamespacedConfigMap({ name: TRUST, namespace: OPERATOR_NS, body }))).toBe(403);
    expect(await statusOf(attacker.patchNamespacedConfigMap({ name: TRUST, namespace: OPERATOR_NS, body: [{ op: 'replace', path: '/data/jwks.json', value: jwks }] }))).toBe(403);
    expect(await statusOf(attacker.deleteNamespacedConfigMap({ name: TRUST, namespace: OPERATOR_NS }))).toBe(403);
    expect(await statusOf(attacker.createNamespacedConfigMap({ namespace: OPERATOR_NS, body: { metadata: { name: 'portcullis-trust-2' }, data: { 'jwks.json': jwks } } }))).toBe(403);
    // Reading it is allowed to every ServiceAccount (public keys), by name — which is how the sidecar lists and watches it.
    expect(await statusOf(attacker.listNamespacedConfigMap({ namespace: OPERATOR_NS, fieldSelector: `metadata.name=${TRUST}` }))).toBe('allowed');
    expect(await statusOf(attacker.listNamespacedConfigMap({ namespace: OPERATOR_NS }))).toBe(403);
    expect(await statusOf(attacker.readNamespacedSecret({ name: SIGNING_SECRET, namespace: OPERATOR_NS }))).toBe(403);
    expect(await trustedKeyIds()).not.toContain(attackerKey.keyId);
  });

  it('trusting its own key in portcullis-trust of the tenant namespace and pushing a self-signed bundle at a high revision: the forged bundle never loads, the genuine one stays in force and comes back', async () => {
    const genuine = await bundleConfigMap();
    const inForce = await pay(4200);
    expect(inForce).toMatchObject({ decision: 'allow', revision: revisionOf(genuine) });
    const rejectedBefore = await metricValue('portcullis_bundle_rejections_total{code="bundle_key_unknown"}');

    // The route that once worked: the tenant namespace's own trust ConfigMap, holding the attacker's key.
    const jwks = JSON.stringify(await toJwks(new Map([[attackerKey.keyId, attackerKey.publicKey]])));
    expect(await statusOf(attacker.createNamespacedConfigMap({ namespace: NS, body: { metadata: { name: TRUST, namespace: NS }, data: { 'jwks.json': jwks } } }))).toBe('allowed');
    // The highest sequence a revision may carry: were the operator to number its next bundle after it, there would be none.
    const forged = await forgedBundle(genuine, HIGHEST_SEQUENCE);
    const metadata = { name: BUNDLE, namespace: NS, resourceVersion: genuine.metadata?.resourceVersion ?? '', labels: genuine.metadata?.labels ?? {}, annotations: { 'portcullis.dev/revision': forged.revision } };
    const body = { metadata, data: forged.data, binaryData: forged.binaryData };
    expect(await statusOf(attacker.replaceNamespacedConfigMap({ name: BUNDLE, namespace: NS, body }))).toBe('allowed');

    await eventually('the sidecar to refuse the forged bundle', async () => ((await metricValue('portcullis_bundle_rejections_total{code="bundle_key_unknown"}')) > rejectedBefore ? true : undefined));
    await neverForged(forged.revision, 2_000);
    expect(await pay(4200)).toMatchObject({ decision: 'allow', revision: inForce.revision });
    expect((await refusalEvents('bundle_key_unknown')).join('\n')).toContain(`keeping revision ${inForce.revision}`);

    // The operator puts its bundle back, numbered as before (a made-up revision numbers nothing);
    // the sidecar, which never left it, goes on answering from it.
    await eventually('the operator to restore the genuine bundle', async () => (revisionOf(await bundleConfigMap()) === revisionOf(genuine) ? true : undefined), 30_000);
    await neverForged(forged.revision, 1_000);
    await attacker.deleteNamespacedConfigMap({ name: TRUST, namespace: NS });

    // The high revision it saw counted for nothing: the next genuine revision loads.
    await apply([paymentsPolicy(6000)]);
    const next = await eventually('the sidecar to load the next genuine revision', async () => {
      const answer = await pay(5500);
      return answer.decision === 'allow' ? answer : undefined;
    }, 30_000);
    expect(parseRevision(next.revision).sequence).toBeGreaterThan(parseRevision(inForce.revision).sequence);
    expect(parseRevision(next.revision).sequence).toBeLessThan(HIGHEST_SEQUENCE);
  });

  it('replaying an older genuine bundle into portcullis-bundle: refused as a regressed revision while the sidecar runs', async () => {
    const older = await bundleConfigMap();
    await apply([paymentsPolicy(7000)]);
    const newer = await eventually('the sidecar to load a newer revision', async () => {
      const answer = await pay(6500);
      return answer.decision === 'allow' ? answer : undefined;
    }, 30_000);
    const current = await bundleConfigMap();
    const replay = { metadata: current.metadata, data: older.data ?? {}, binaryData: older.binaryData ?? {} };
    const regressedBefore = await metricValue('portcullis_bundle_rejections_total{code="bundle_revision_regressed"}');
    expect(await statusOf(attacker.replaceNamespacedConfigMap({ name: BUNDLE, namespace: NS, body: replay }))).toBe('allowed');
    await eventually('the sidecar to refuse the replayed revision', async () => ((await metricValue('portcullis_bundle_rejections_total{code="bundle_revision_regressed"}')) > regressedBefore ? true : undefined));
    expect(await pay(6500)).toMatchObject({ decision: 'allow', revision: newer.revision });
    await eventually('the operator to restore the newer bundle', async () => (revisionOf(await bundleConfigMap()) === newer.revision ? true : undefined), 30_000);
  });

  it('cannot point a sidecar at a trust in the agent namespace: the sidecar refuses to start', async () => {
    const refused = await spawnTracked(plane, process.execPath, [join(REPO_ROOT, 'bin', 'portcullis.js'), 'sidecar', '--agent', AGENT, '--namespace', NS, '--trust-namespace', NS]);
    expect(await refused.exited).toBe(2);
    expect(refused.output()).toContain(`--trust-namespace ${NS} is the agent's own namespace`);
  });

  it('never made the sidecar load a bundle signed with its key', () => {
    const loaded = sidecar.output().split('\n').filter((line) => line.includes('"msg":"bundle loaded"'));
    expect(loaded.length).toBeGreaterThan(0);
    for (const line of loaded) expect(parseRevision((JSON.parse(line) as { revision: string }).revision).sequence).toBeLessThan(HIGHEST_SEQUENCE);
  });
});

describe('the operator', () => {
  it('removes a portcullis-trust it wrote into a tenant namespace before, and leaves none there', async () => {
    await apply([{
      apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: TRUST, namespace: NS, labels: { 'app.kubernetes.io/managed-by': 'portcullis-operator', 'portcullis.dev/tenant': TENANT } },
      data: { 'jwks.json': '{"keys":[]}' },
    }]);
    await eventually('the trust ConfigMap of the tenant namespace to be removed', async () => ((await statusOf(core.readNamespacedConfigMap({ name: TRUST, namespace: NS }))) === 404 ? true : undefined), 30_000);
  });

  it('rotates the signing key: the new key reaches the trust before any bundle signed with it, and the sidecar follows', async () => {
    const before = await bundleConfigMap();
    const oldKid = keyIdOf(before);
    const newKid = await rotateKeyring(core, OPERATOR_NS, SIGNING_SECRET);
    const resigned = await eventually('the bundle to be signed with the new key', async () => {
      const cm = await bundleConfigMap();
      return keyIdOf(cm) === newKid ? cm : undefined;
    }, 60_000);
    expect(await trustedKeyIds()).toEqual([oldKid, newKid].sort());
    expect(await pay(6500)).toMatchObject({ decision: 'allow', revision: revisionOf(resigned) });

    // A new revision, signed with the new key, loads.
    await apply([paymentsPolicy(8000)]);
    await eventually('the sidecar to load a revision signed with the new key', async () => ((await pay(7500)).decision === 'allow' ? true : undefined), 30_000);
    expect(keyIdOf(await bundleConfigMap())).toBe(newKid);

    // The old key dropped from the Secret leaves the trust; the bundle in force, signed with the new key, stays.
    const secret: V1Secret = await core.readNamespacedSecret({ name: SIGNING_SECRET, namespace: OPERATOR_NS });
    const ring = parseKeyring(secret, 'the signing Secret');
    const kept = { ...ring, keys: ring.keys.filter((k) => k.keyId !== oldKid) };
    await core.replaceNamespacedSecret({ name: SIGNING_SECRET, namespace: OPERATOR_NS, body: { metadata: secret.metadata, type: secret.type, data: { [SIGNING_SECRET_KEY]: Buffer.from(JSON.stringify(kept)).toString('base64') } } });
    await eventually('the trust to drop the old key', async () => ((await trustedKeyIds()).join() === newKid ? true : undefined), 60_000);
    expect((await pay(7500)).decision).toBe('allow');
  });

  it('gone, its trust changed to drop the key of the bundle in force: the sidecar unloads it and denies every call, then loads it again when the key is trusted again', async () => {
    const inForce = await pay(7500);
    expect(inForce.decision).toBe('allow');
    await operator?.stop();
    operator = undefined;
    const trust = await core.readNamespacedConfigMap({ name: TRUST, namespace: OPERATOR_NS });
    const stranger = await generateSigningKey();
    const unloadsBefore = await metricValue('portcullis_bundle_rejections_total{code="bundle_key_unknown"}');
    await core.replaceNamespacedConfigMap({ name: TRUST, namespace: OPERATOR_NS, body: { metadata: trust.metadata, data: { 'jwks.json': JSON.stringify(await toJwks(new Map([[stranger.keyId, stranger.publicKey]]))) } } });

    const denied = await eventually('the sidecar to unload the bundle', async () => {
      const answer = await pay(10);
      return answer.rule === 'portcullis:no-bundle' ? answer : undefined;
    });
    expect(denied.decision).toBe('deny');
    expect(await metricValue('portcullis_bundle_rejections_total{code="bundle_key_unknown"}')).toBeGreaterThan(unloadsBefore);
    expect((await fetch(`${httpBase}/metrics`).then((r) => r.text())).split('\n').filter((l) => l.startsWith('portcullis_bundle_revision_sequence{'))).toEqual([]);
    await eventually('an event saying no bundle is loaded', async () => ((await refusalEvents('bundle_key_unknown')).some((m) => m.includes(`revision ${inForce.revision} in force no longer verifies`) && m.endsWith('(no bundle is loaded)')) ? true : undefined));

    const restored = await core.readNamespacedConfigMap({ name: TRUST, namespace: OPERATOR_NS });
    await core.replaceNamespacedConfigMap({ name: TRUST, namespace: OPERATOR_NS, body: { metadata: restored.metadata, data: trust.data ?? {} } });
    await eventually('the sidecar to load the bundle again', async () => {
      const answer = await pay(7500);
      return answer.decision === 'allow' && answer.revision === inForce.revision ? true : undefined;
    });
  });
});
