import { beforeAll, describe, expect, it } from 'vitest';
import type { Bundle, BundleKey, SigningKeyPair } from '../bundle/index.ts';
import { formatRevision, generateSigningKey, signBundle, toConfigMapData, toJwks, WASM_MODULE_PATH } from '../bundle/index.ts';
import type { PolicyArtifact } from '../compiler/index.ts';
import type { BundleState, Finding, LoadedPolicy, ObservedConfigMap } from './bundle-verdict.ts';
import { judge, judgeBundle } from './bundle-verdict.ts';
import { loadStandIn } from './test-support.ts';

let operatorKey: SigningKeyPair;
let rotatedKey: SigningKeyPair;
let attackerKey: SigningKeyPair;

beforeAll(async () => {
  [operatorKey, rotatedKey, attackerKey] = await Promise.all([generateSigningKey(), generateSigningKey(), generateSigningKey()]);
});

const DIGEST = 'a'.repeat(16);
const OPTIONS = { tenant: 'finance', trustNamespace: 'portcullis-system' };

function bundleOf(tenant: string, sequence: number, digest = DIGEST): Bundle {
  return {
    manifest: { revision: formatRevision(sequence, digest), roots: ['portcullis'], metadata: { tenant }, wasm: [{ entrypoint: 'portcullis/decision', module: WASM_MODULE_PATH }] },
    wasm: new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0]),
    data: { portcullis: { tenant } },
  };
}

let versions = 0;
/** Each ConfigMap written gets a new version, as the API server's resourceVersion. */
const nextVersion = (): string => `uid/${String(++versions)}`;

interface BundleSpec { sequence: number; digest?: string; tenant?: string; signer?: SigningKeyPair }

async function bundleConfigMap(spec: BundleSpec): Promise<ObservedConfigMap> {
  const signer = spec.signer ?? operatorKey;
  const signed = await signBundle(bundleOf(spec.tenant ?? 'finance', spec.sequence, spec.digest ?? DIGEST), { privateKey: signer.privateKey, keyId: signer.keyId });
  return { version: nextVersion(), ...toConfigMapData(signed) };
}

async function trustConfigMap(...trusted: SigningKeyPair[]): Promise<ObservedConfigMap> {
  const jwks = await toJwks(new Map<string, BundleKey>(trusted.map((k) => [k.keyId, k.publicKey])));
  return { version: nextVersion(), data: { 'jwks.json': JSON.stringify(jwks) } };
}


/** The sidecar's judgements in turn, as its watches see the two ConfigMaps change. */
class Sidecar {
  state: BundleState = {};
  findings: Finding[] = [];
  trust: ObservedConfigMap | undefined;
  bundle: ObservedConfigMap | undefined;

  async see(change: { trust?: ObservedConfigMap | null; bundle?: ObservedConfigMap | null }): Promise<Finding[]> {
    if (change.trust !== undefined) this.trust = change.trust ?? undefined;
    if (change.bundle !== undefined) this.bundle = change.bundle ?? undefined;
    const judged = await judge(this.state, { ...(this.trust === undefined ? {} : { trust: this.trust }), ...(this.bundle === undefined ? {} : { bundle: this.bundle }) }, { ...OPTIONS, load: loadStandIn });
    this.state = judged.state;
    this.findings = judged.findings;
    return judged.findings;
  }

  get revision(): string | undefined {
    return this.state.loaded?.policy.revision;
  }
}

/** A sidecar that loaded the operator's bundle at `sequence` under the operator's key. */
async function running(sequence = 3): Promise<Sidecar> {
  const sidecar = new Sidecar();
  await sidecar.see({ trust: await trustConfigMap(operatorKey), bundle: await bundleConfigMap({ sequence }) });
  expect(sidecar.revision).toBe(formatRevision(sequence, DIGEST));
  return sidecar;
}

const kinds = (findings: Finding[]): string[] => findings.map((f) => (f.kind === 'refused' || f.kind === 'unloaded' ? `${f.kind} ${f.code}` : f.kind));

describe('judge: the trust and the bundle together', () => {
  it('loads a bundle signed by a trusted key when none is loaded', async () => {
    const sidecar = new Sidecar();
    expect(kinds(await sidecar.see({ trust: await trustConfigMap(operatorKey), bundle: await bundleConfigMap({ sequence: 3 }) }))).toEqual(['loaded']);
    expect(sidecar.revision).toBe(formatRevision(3, DIGEST));
  });

  it('loads nothing while there is no trust ConfigMap, and says what it waits for', async () => {
    const sidecar = new Sidecar();
    const findings = await sidecar.see({ bundle: await bundleConfigMap({ sequence: 3 }) });
    expect(findings).toEqual([{ kind: 'waiting', reason: 'no ConfigMap portcullis-system/portcullis-trust' }]);
    expect(sidecar.revision).toBeUndefined();
  });

  it('waits for the bundle ConfigMap once the trust is there', async () => {
    const sidecar = new Sidecar();
    expect(await sidecar.see({ trust: await trustConfigMap(operatorKey) })).toEqual([{ kind: 'waiting', reason: 'no ConfigMap portcullis-bundle' }]);
  });

  it('loads a newer revision over the loaded one', async () => {
    const sidecar = await running(3);
    expect(kinds(await sidecar.see({ bundle: await bundleConfigMap({ sequence: 4, digest: 'b'.repeat(16) }) }))).toEqual(['loaded']);
    expect(sidecar.revision).toBe(formatRevision(4, 'b'.repeat(16)));
  });

  it('does nothing when neither ConfigMap changed', async () => {
    const sidecar = await running(3);
    expect(await sidecar.see({})).toEqual([]);
  });

  it.each([
    ['an older revision than the loaded one', { sequence: 2 }, 'bundle_revision_regressed'],
    ['the loaded sequence with other content', { sequence: 3, digest: 'c'.repeat(16) }, 'bundle_revision_conflict'],
    ["another tenant's bundle", { sequence: 4, tenant: 'payroll' }, 'bundle_tenant_mismatch'],
  ])('refuses %s and keeps the loaded bundle', async (_name, spec: BundleSpec, code) => {
    const sidecar = await running(3);
    expect(await sidecar.see({ bundle: await bundleConfigMap(spec) })).toEqual([expect.objectContaining({ kind: 'refused', code, keeping: formatRevision(3, DIGEST) })]);
    expect(sidecar.revision).toBe(formatRevision(3, DIGEST));
  });

  it('refuses a bundle signed with a key the trust does not hold, at any revision, and keeps the loaded one', async () => {
    const sidecar = await running(3);
    const forged = await sidecar.see({ bundle: await bundleConfigMap({ sequence: 999_999, signer: attackerKey }) });
    expect(forged).toEqual([expect.objectContaining({ kind: 'refused', code: 'bundle_key_unknown', keeping: formatRevision(3, DIGEST) })]);
    expect(sidecar.revision).toBe(formatRevision(3, DIGEST));
  });

  it('counts for revision order only bundles that verified: the genuine bundle after a refused high revision loads', async () => {
    const sidecar = await running(3);
    await sidecar.see({ bundle: await bundleConfigMap({ sequence: 999_999, signer: attackerKey }) });
    expect(kinds(await sidecar.see({ bundle: await bundleConfigMap({ sequence: 3 }) }))).toEqual([]);
    expect(kinds(await sidecar.see({ bundle: await bundleConfigMap({ sequence: 4, digest: 'b'.repeat(16) }) }))).toEqual(['loaded']);
  });

  it('loads a bundle refused for an unknown key once the trust gains that key (a rotation seen bundle first)', async () => {
    const sidecar = await running(3);
    const resigned = await bundleConfigMap({ sequence: 4, digest: 'b'.repeat(16), signer: rotatedKey });
    expect(kinds(await sidecar.see({ bundle: resigned }))).toEqual(['refused bundle_key_unknown']);
    expect(kinds(await sidecar.see({ trust: await trustConfigMap(operatorKey, rotatedKey) }))).toEqual(['loaded']);
    expect(sidecar.revision).toBe(formatRevision(4, 'b'.repeat(16)));
  });

  it('keeps the loaded bundle through a rotation: a new key added, the same revision signed again, the old key dropped', async () => {
    const sidecar = await running(3);
    expect(await sidecar.see({ trust: await trustConfigMap(operatorKey, rotatedKey) })).toEqual([]);
    expect(await sidecar.see({ bundle: await bundleConfigMap({ sequence: 3, signer: rotatedKey }) })).toEqual([]);
    expect(await sidecar.see({ trust: await trustConfigMap(rotatedKey) })).toEqual([]);
    expect(sidecar.revision).toBe(formatRevision(3, DIGEST));
  });

  it('unloads the bundle in force when the trust drops its key, and loads nothing while the bundle ConfigMap holds only it', async () => {
    const sidecar = await running(3);
    const findings = await sidecar.see({ trust: await trustConfigMap(rotatedKey) });
    expect(findings).toEqual([expect.objectContaining({ kind: 'unloaded', code: 'bundle_key_unknown', revision: formatRevision(3, DIGEST) })]);
    expect(findings[0]?.kind === 'unloaded' && findings[0].message).toMatch(/revision 3-a+ in force no longer verifies under portcullis-system\/portcullis-trust/);
    expect(sidecar.revision).toBeUndefined();
  });

  it('drops the bundle in force for the bundle ConfigMap when that verifies, even at a lower revision', async () => {
    const sidecar = await running(5);
    await sidecar.see({ bundle: await bundleConfigMap({ sequence: 2, signer: rotatedKey }) });
    expect(sidecar.revision).toBe(formatRevision(5, DIGEST));
    expect(kinds(await sidecar.see({ trust: await trustConfigMap(rotatedKey) }))).toEqual(['unloaded bundle_key_unknown', 'loaded']);
    expect(sidecar.revision).toBe(formatRevision(2, DIGEST));
  });

  it('fails closed when the trust drops the loaded key and the bundle ConfigMap does not verify either, saying no bundle is kept', async () => {
    const sidecar = await running(5);
    await sidecar.see({ bundle: await bundleConfigMap({ sequence: 6, signer: attackerKey }) });
    const findings = await sidecar.see({ trust: await trustConfigMap(rotatedKey) });
    expect(kinds(findings)).toEqual(['unloaded bundle_key_unknown', 'refused bundle_key_unknown']);
    expect(findings[1]).toMatchObject({ keeping: undefined });
    expect(sidecar.revision).toBeUndefined();
  });

  it.each([
    ['no jwks.json', {}, /has no jwks.json/],
    ['jwks.json that is not JSON', { 'jwks.json': '{' }, /is not JSON/],
    ['jwks.json without keys', { 'jwks.json': '{"k": []}' }, /is not a JWKS/],
    ['a key whose id is not its thumbprint', { 'jwks.json': '{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"mine"}]}' }, /is not the key's thumbprint/],
  ])('refuses a trust ConfigMap with %s, keeping the keys and the bundle in force', async (_name, data: Record<string, string>, message) => {
    const sidecar = await running(3);
    const findings = await sidecar.see({ trust: { version: nextVersion(), data } });
    expect(findings).toEqual([expect.objectContaining({ kind: 'refused', code: 'trust_invalid', keeping: formatRevision(3, DIGEST) })]);
    expect(findings[0]?.kind === 'refused' && findings[0].message).toMatch(message);
    expect(kinds(await sidecar.see({ bundle: await bundleConfigMap({ sequence: 4, digest: 'b'.repeat(16) }) }))).toEqual(['loaded']);
  });

  it('refuses a trust ConfigMap holding a private key', async () => {
    const jwk = { ...(await toJwks(new Map([[attackerKey.keyId, attackerKey.publicKey]]))).keys[0], d: 'nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A' };
    const sidecar = new Sidecar();
    expect(kinds(await sidecar.see({ trust: { version: nextVersion(), data: { 'jwks.json': JSON.stringify({ keys: [jwk] }) } }, bundle: await bundleConfigMap({ sequence: 1, signer: attackerKey }) }))).toEqual(['refused trust_invalid']);
    expect(sidecar.revision).toBeUndefined();
  });

  it('keeps the keys and the bundle in force when the trust ConfigMap goes, saying so once', async () => {
    const sidecar = await running(3);
    expect(await sidecar.see({ trust: null })).toEqual([{ kind: 'waiting', reason: 'no ConfigMap portcullis-system/portcullis-trust; the keys last read from it stay trusted' }]);
    expect(kinds(await sidecar.see({ bundle: await bundleConfigMap({ sequence: 4, digest: 'b'.repeat(16) }) }))).toEqual(['loaded']);
  });

  it('judges a refused bundle ConfigMap once under one trust, and again when the trust changes', async () => {
    const sidecar = await running(3);
    const resigned = await bundleConfigMap({ sequence: 4, digest: 'b'.repeat(16), signer: rotatedKey });
    expect(kinds(await sidecar.see({ bundle: resigned }))).toEqual(['refused bundle_key_unknown']);
    expect(await sidecar.see({})).toEqual([]);
    expect(kinds(await sidecar.see({ trust: await trustConfigMap(operatorKey, attackerKey) }))).toEqual(['refused bundle_key_unknown']);
  });

  it('judges an unchanged refused trust ConfigMap once', async () => {
    const sidecar = await running(3);
    await sidecar.see({ trust: { version: nextVersion(), data: {} } });
    expect(await sidecar.see({ bundle: await bundleConfigMap({ sequence: 3 }) })).toEqual([]);
  });
});

describe('judgeBundle', () => {
  const keys = (): Map<string, BundleKey> => new Map([[operatorKey.keyId, operatorKey.publicKey]]);

  it('refuses a bundle whose data.json was edited after signing', async () => {
    const bundle = await bundleConfigMap({ sequence: 1 });
    const data = { ...bundle.data, 'data.json': JSON.stringify({ portcullis: { tenant: 'finance', edited: true } }) };
    expect(await judgeBundle({ ...bundle, data }, { tenant: 'finance', publicKeys: keys(), load: loadStandIn })).toMatchObject({ kind: 'reject', code: 'bundle_digest_mismatch' });
  });

  it('refuses a bundle whose tool declarations do not form a routing table, naming the declaration', async () => {
    const withTools = (tools: unknown[]) => async (artifact: PolicyArtifact): Promise<LoadedPolicy> => ({ ...(await loadStandIn(artifact)), tools: tools as LoadedPolicy['tools'] });
    const bundle = await bundleConfigMap({ sequence: 1 });
    const verdict = await judgeBundle(bundle, { tenant: 'finance', publicKeys: keys(), load: withTools([{ name: 'ehr', mcp: { host: 'EHR.svc' } }]) });
    expect(verdict).toMatchObject({ kind: 'reject', code: 'tools_invalid' });
    expect(verdict.kind === 'reject' && verdict.message).toContain('tools[0].mcp.host');
    expect(await judgeBundle(bundle, { tenant: 'finance', publicKeys: keys(), load: withTools([{ name: 'ehr', mcp: { host: 'ehr.svc' } }]) })).toMatchObject({ kind: 'load' });
  });

  it('refuses a signed bundle whose policy does not load, with the loader message', async () => {
    const verdict = await judgeBundle(await bundleConfigMap({ sequence: 1 }), { tenant: 'finance', publicKeys: keys() });
    expect(verdict).toMatchObject({ kind: 'reject', code: 'policy_load_failed' });
    expect(verdict.kind === 'reject' && verdict.message).toMatch(/does not load/);
  });

  it('refuses a bundle whose data names another tenant than its signature', async () => {
    const otherData = (artifact: PolicyArtifact): Promise<LoadedPolicy> => loadStandIn({ ...artifact, data: { portcullis: { ...artifact.data.portcullis, tenant: 'payroll' } } });
    expect(await judgeBundle(await bundleConfigMap({ sequence: 1 }), { tenant: 'finance', publicKeys: keys(), load: otherData })).toMatchObject({ kind: 'reject', code: 'bundle_tenant_mismatch' });
  });
});
