import { pino } from 'pino';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import type { BundleKey, SigningKeyPair } from '../bundle/index.ts';
import { formatRevision, generateSigningKey, signBundle, toConfigMapData, toJwks, WASM_MODULE_PATH } from '../bundle/index.ts';
import { minimumRevisionConfigMap } from '../bundle/revision.ts';
import type { BundleRefusal } from './bundle-events.ts';
import { BundleSource } from './bundle-source.ts';
import type { ConfigMap, ConfigMapApi, WatchEvent } from './configmap-watch.ts';
import { createSidecarMetrics } from './metrics.ts';
import { loadStandIn } from './test-support.ts';

const AGENT_NS = 'finance';
const OPERATOR_NS = 'portcullis-system';
const DIGEST = 'a'.repeat(16);

/** The API server as the watches see it: ConfigMaps by namespace/name, and every list asked for. */
class FakeApi implements ConfigMapApi {
  readonly asked: string[] = [];
  private readonly objects = new Map<string, ConfigMap>();
  private readonly watchers = new Map<string, (event: WatchEvent) => void>();
  private version = 0;

  /** Lists of these namespace/names fail, once each, as a list refused or timed out would. */
  readonly failingOnce = new Set<string>();

  list(namespace: string, name: string): Promise<{ resourceVersion: string; item: ConfigMap | undefined }> {
    this.asked.push(`${namespace}/${name}`);
    if (this.failingOnce.delete(`${namespace}/${name}`)) return Promise.reject(new Error(`the list of ${namespace}/${name} failed`));
    return Promise.resolve({ resourceVersion: String(this.version), item: this.objects.get(`${namespace}/${name}`) });
  }

  watch(namespace: string, name: string, _from: string, onEvent: (event: WatchEvent) => void, signal: AbortSignal): Promise<void> {
    this.watchers.set(`${namespace}/${name}`, onEvent);
    return new Promise((resolve) => { signal.addEventListener('abort', () => { resolve(); }, { once: true }); });
  }

  put(namespace: string, name: string, contents: { data?: Record<string, string>; binaryData?: Record<string, string> }): void {
    const key = `${namespace}/${name}`;
    const existed = this.objects.has(key);
    const object: ConfigMap = { metadata: { name, namespace, uid: `uid-${key}`, resourceVersion: String(++this.version) }, ...contents };
    this.objects.set(key, object);
    this.watchers.get(key)?.({ type: existed ? 'MODIFIED' : 'ADDED', object });
  }
}

let operatorKey: SigningKeyPair;
let attackerKey: SigningKeyPair;

beforeAll(async () => {
  [operatorKey, attackerKey] = await Promise.all([generateSigningKey(), generateSigningKey()]);
});

async function bundle(sequence: number, signer: SigningKeyPair): Promise<{ data: Record<string, string>; binaryData: Record<string, string> }> {
  const signed = await signBundle({
    manifest: { revision: formatRevision(sequence, DIGEST), roots: ['portcullis'], metadata: { tenant: AGENT_NS }, wasm: [{ entrypoint: 'portcullis/decision', module: WASM_MODULE_PATH }] },
    wasm: new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0]),
    data: { portcullis: { tenant: AGENT_NS } },
  }, { privateKey: signer.privateKey, keyId: signer.keyId });
  return toConfigMapData(signed);
}

async function trust(...keys: SigningKeyPair[]): Promise<{ data: Record<string, string> }> {
  return { data: { 'jwks.json': JSON.stringify(await toJwks(new Map<string, BundleKey>(keys.map((k) => [k.keyId, k.publicKey])))) } };
}


async function started(api: FakeApi): Promise<{ source: BundleSource; refusals: BundleRefusal[]; metrics: ReturnType<typeof createSidecarMetrics> }> {
  const refusals: BundleRefusal[] = [];
  const metrics = createSidecarMetrics();
  const source = new BundleSource({
    api, namespace: AGENT_NS, trustNamespace: OPERATOR_NS, tenant: AGENT_NS, log: pino({ level: 'silent' }), metrics,
    onRefused: (refusal) => { refusals.push(refusal); }, load: loadStandIn,
  });
  await source.start();
  return { source, refusals, metrics };
}

async function series(metrics: ReturnType<typeof createSidecarMetrics>, name: string): Promise<string[]> {
  return (await metrics.registry.metrics()).split('\n').filter((line) => line.startsWith(name));
}

describe('BundleSource', () => {
  it('reads the trust from the operator namespace only: a trust ConfigMap in the agent namespace is never asked for', async () => {
    const api = new FakeApi();
    api.put(AGENT_NS, 'portcullis-trust', await trust(attackerKey));
    api.put(AGENT_NS, 'portcullis-bundle', await bundle(9, attackerKey));
    api.put(OPERATOR_NS, 'portcullis-trust', await trust(operatorKey));
    const { source, refusals } = await started(api);
    expect(api.asked.sort()).toEqual([`${AGENT_NS}/portcullis-bundle`, `${OPERATOR_NS}/${minimumRevisionConfigMap(AGENT_NS)}`, `${OPERATOR_NS}/portcullis-trust`].sort());
    expect(source.policy).toBeUndefined();
    expect(refusals).toEqual([expect.objectContaining({ code: 'bundle_key_unknown', keeping: undefined })]);
    await source.stop();
  });

  it.each([
    ['an older genuine bundle replayed is refused at start', 3, 5, undefined, 'bundle_revision_regressed'],
    ['the bundle at the minimum revision loads', 5, 5, formatRevision(5, DIGEST), undefined],
    ['a newer bundle than the minimum loads', 6, 5, formatRevision(6, DIGEST), undefined],
  ])('with the tenant minimum revision in the operator namespace, %s', async (_name, sequence, minimum, loaded, code) => {
    const api = new FakeApi();
    api.put(OPERATOR_NS, 'portcullis-trust', await trust(operatorKey));
    api.put(OPERATOR_NS, minimumRevisionConfigMap(AGENT_NS), { data: { revision: formatRevision(minimum, 'b'.repeat(16)) } });
    api.put(AGENT_NS, 'portcullis-bundle', await bundle(sequence, operatorKey));
    const { source, refusals } = await started(api);
    expect(source.policy?.revision).toBe(loaded);
    expect(refusals.map((r) => r.code)).toEqual(code === undefined ? [] : [code]);
    await source.stop();
  });

  it('loads no bundle before the minimum revision has been read: a replay is refused even when that read fails at first', async () => {
    const api = new FakeApi();
    api.put(OPERATOR_NS, 'portcullis-trust', await trust(operatorKey));
    api.put(OPERATOR_NS, minimumRevisionConfigMap(AGENT_NS), { data: { revision: formatRevision(5, 'b'.repeat(16)) } });
    api.put(AGENT_NS, 'portcullis-bundle', await bundle(3, operatorKey));
    api.failingOnce.add(`${OPERATOR_NS}/${minimumRevisionConfigMap(AGENT_NS)}`);
    const refusals: BundleRefusal[] = [];
    const source = new BundleSource({
      api, namespace: AGENT_NS, trustNamespace: OPERATOR_NS, tenant: AGENT_NS, log: pino({ level: 'silent' }), metrics: createSidecarMetrics(),
      onRefused: (refusal) => { refusals.push(refusal); }, load: loadStandIn, minBackoffMs: 5,
    });
    await source.start();
    expect(source.policy).toBeUndefined();
    expect(refusals).toEqual([]);
    await vi.waitFor(() => { expect(refusals.map((r) => r.code)).toEqual(['bundle_revision_regressed']); });
    expect(source.policy).toBeUndefined();
    await source.stop();
  });

  it('loads a bundle once the minimum revision is known to be absent (a tenant before its first record)', async () => {
    const api = new FakeApi();
    api.put(OPERATOR_NS, 'portcullis-trust', await trust(operatorKey));
    api.put(AGENT_NS, 'portcullis-bundle', await bundle(3, operatorKey));
    const { source } = await started(api);
    expect(source.policy?.revision).toBe(formatRevision(3, DIGEST));
    await source.stop();
  });

  it('keeps the bundle in force when the minimum revision rises past it: the newer bundle is on its way', async () => {
    const api = new FakeApi();
    api.put(OPERATOR_NS, 'portcullis-trust', await trust(operatorKey));
    api.put(AGENT_NS, 'portcullis-bundle', await bundle(3, operatorKey));
    const { source, refusals } = await started(api);
    api.put(OPERATOR_NS, minimumRevisionConfigMap(AGENT_NS), { data: { revision: formatRevision(4, DIGEST) } });
    await source.settled();
    expect(source.policy?.revision).toBe(formatRevision(3, DIGEST));
    api.put(AGENT_NS, 'portcullis-bundle', await bundle(4, operatorKey));
    await source.settled();
    expect(source.policy?.revision).toBe(formatRevision(4, DIGEST));
    expect(refusals).toEqual([]);
    await source.stop();
  });

  it('reports a minimum revision that holds no revision once, and applies none', async () => {
    const api = new FakeApi();
    api.put(OPERATOR_NS, 'portcullis-trust', await trust(operatorKey));
    api.put(OPERATOR_NS, minimumRevisionConfigMap(AGENT_NS), { data: { revision: '99999999999999999999-aaaaaaaaaaaaaaaa' } });
    api.put(AGENT_NS, 'portcullis-bundle', await bundle(3, operatorKey));
    const { source, refusals } = await started(api);
    expect(source.policy?.revision).toBe(formatRevision(3, DIGEST));
    api.put(AGENT_NS, 'portcullis-bundle', await bundle(4, operatorKey));
    await source.settled();
    expect(refusals.map((r) => r.code)).toEqual(['minimum_revision_invalid']);
    await source.stop();
  });

  it('unloads the bundle in force when the trust drops its key: no policy, no revision gauge, a refusal saying no bundle is kept', async () => {
    const api = new FakeApi();
    api.put(OPERATOR_NS, 'portcullis-trust', await trust(operatorKey));
    api.put(AGENT_NS, 'portcullis-bundle', await bundle(3, operatorKey));
    const { source, refusals, metrics } = await started(api);
    expect(source.policy?.revision).toBe(formatRevision(3, DIGEST));
    expect(await series(metrics, 'portcullis_bundle_revision_sequence{')).toEqual([`portcullis_bundle_revision_sequence{tenant="${AGENT_NS}"} 3`]);

    api.put(OPERATOR_NS, 'portcullis-trust', await trust(attackerKey));
    await source.settled();
    expect(source.policy).toBeUndefined();
    expect(await series(metrics, 'portcullis_bundle_revision_sequence{')).toEqual([]);
    expect(await series(metrics, 'portcullis_bundle_rejections_total{')).toEqual(['portcullis_bundle_rejections_total{code="bundle_key_unknown"} 1']);
    expect(refusals).toEqual([expect.objectContaining({ code: 'bundle_key_unknown', keeping: undefined, bundle: expect.objectContaining({ name: 'portcullis-bundle' }) as unknown })]);

    api.put(OPERATOR_NS, 'portcullis-trust', await trust(operatorKey));
    await source.settled();
    expect(source.policy?.revision).toBe(formatRevision(3, DIGEST));
    await source.stop();
  });
});
