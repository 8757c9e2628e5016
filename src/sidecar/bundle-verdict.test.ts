import { beforeAll, describe, expect, it } from 'vitest';
import type { Bundle, SigningKeyPair } from '../bundle/index.ts';
import { formatRevision, generateSigningKey, signBundle, toConfigMapData, toJwks, WASM_MODULE_PATH } from '../bundle/index.ts';
import type { AuthorizationDecision, PolicyArtifact } from '../compiler/index.ts';
import type { BundleSnapshot, LoadedPolicy } from './bundle-verdict.ts';
import { judgeBundle } from './bundle-verdict.ts';

let key: SigningKeyPair;
let otherKey: SigningKeyPair;

beforeAll(async () => {
  [key, otherKey] = await Promise.all([generateSigningKey(), generateSigningKey()]);
});

const DIGEST = 'a'.repeat(16);

function bundleOf(tenant: string, sequence: number, digest = DIGEST): Bundle {
  return {
    manifest: { revision: formatRevision(sequence, digest), roots: ['portcullis'], metadata: { tenant }, wasm: [{ entrypoint: 'portcullis/decision', module: WASM_MODULE_PATH }] },
    wasm: new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0]),
    data: { portcullis: { tenant } },
  };
}

async function snapshotOf(bundle: Bundle, options: { signer?: SigningKeyPair; trusted?: SigningKeyPair } = {}): Promise<BundleSnapshot> {
  const signer = options.signer ?? key;
  const trusted = options.trusted ?? key;
  const signed = await signBundle(bundle, { privateKey: signer.privateKey, keyId: signer.keyId });
  const jwks = await toJwks(new Map([[trusted.keyId, trusted.publicKey]]));
  return { bundle: toConfigMapData(signed), trust: { data: { 'jwks.json': JSON.stringify(jwks) } } };
}

/** A stand-in for PolicyEvaluator.load: the verdict's logic, not the WASM, is under test here. */
const loadStandIn = (artifact: PolicyArtifact): Promise<LoadedPolicy> =>
  Promise.resolve({
    revision: artifact.revision,
    tenant: artifact.data.portcullis.tenant,
    authorize: (): AuthorizationDecision => ({ decision: 'allow', enforced: true, policy: 'p', rule: 'r', revision: artifact.revision, reasons: [] }),
    obligations: () => ({ calls: [], rate: [], spend: [] }), standing: () => undefined,
  });

describe('judgeBundle', () => {
  it('loads a bundle signed by a trusted key for the tenant when none is loaded', async () => {
    const verdict = await judgeBundle(await snapshotOf(bundleOf('finance', 3)), { tenant: 'finance', load: loadStandIn });
    expect(verdict.kind).toBe('load');
    expect(verdict.kind === 'load' && verdict.policy.revision).toBe(formatRevision(3, DIGEST));
  });

  it('loads a newer revision over the loaded one', async () => {
    const verdict = await judgeBundle(await snapshotOf(bundleOf('finance', 4, 'b'.repeat(16))), { tenant: 'finance', loaded: formatRevision(3, DIGEST), load: loadStandIn });
    expect(verdict.kind).toBe('load');
  });

  it('does nothing when the bundle is the loaded revision', async () => {
    const verdict = await judgeBundle(await snapshotOf(bundleOf('finance', 3)), { tenant: 'finance', loaded: formatRevision(3, DIGEST), load: loadStandIn });
    expect(verdict).toEqual({ kind: 'unchanged' });
  });

  it('waits while either ConfigMap is missing', async () => {
    const { bundle, trust } = await snapshotOf(bundleOf('finance', 1));
    expect(await judgeBundle({ trust }, { tenant: 'finance' })).toMatchObject({ kind: 'waiting', reason: 'no ConfigMap portcullis-bundle' });
    expect(await judgeBundle({ bundle }, { tenant: 'finance' })).toMatchObject({ kind: 'waiting', reason: 'no ConfigMap portcullis-trust' });
  });

  it.each([
    ['an older revision than the loaded one', { sequence: 2, loaded: 3 }, 'bundle_revision_regressed'],
    ['the loaded sequence with other content', { sequence: 3, digest: 'c'.repeat(16), loaded: 3 }, 'bundle_revision_conflict'],
    ["another tenant's bundle", { tenant: 'payroll' }, 'bundle_tenant_mismatch'],
    ['a bundle signed by an untrusted key', { untrusted: true }, 'bundle_key_unknown'],
  ])('refuses %s', async (_name, c: { sequence?: number; digest?: string; loaded?: number; tenant?: string; untrusted?: boolean }, code) => {
    const snapshot = await snapshotOf(bundleOf(c.tenant ?? 'finance', c.sequence ?? 1, c.digest ?? DIGEST), c.untrusted === true ? { signer: otherKey } : {});
    const options = c.loaded === undefined ? { tenant: 'finance', load: loadStandIn } : { tenant: 'finance', loaded: formatRevision(c.loaded, DIGEST), load: loadStandIn };
    expect(await judgeBundle(snapshot, options)).toMatchObject({ kind: 'reject', code });
  });

  it('refuses a bundle whose data.json was edited after signing', async () => {
    const snapshot = await snapshotOf(bundleOf('finance', 1));
    const data = { ...snapshot.bundle?.data, 'data.json': JSON.stringify({ portcullis: { tenant: 'finance', edited: true } }) };
    const verdict = await judgeBundle({ ...snapshot, bundle: { ...snapshot.bundle, data } }, { tenant: 'finance', load: loadStandIn });
    expect(verdict).toMatchObject({ kind: 'reject', code: 'bundle_digest_mismatch' });
  });

  it.each([
    ['no jwks.json', {}],
    ['jwks.json that is not JSON', { 'jwks.json': '{' }],
    ['jwks.json without keys', { 'jwks.json': '{"k": []}' }],
  ])('refuses the bundle when the trust ConfigMap has %s', async (_name, trustData: Record<string, string>) => {
    const snapshot = await snapshotOf(bundleOf('finance', 1));
    expect(await judgeBundle({ ...snapshot, trust: { data: trustData } }, { tenant: 'finance', load: loadStandIn })).toMatchObject({ kind: 'reject', code: 'trust_invalid' });
  });

  it('refuses a bundle whose tool declarations do not form a routing table, naming the declaration', async () => {
    const withTools = (tools: unknown[]) => async (artifact: PolicyArtifact): Promise<LoadedPolicy> => ({ ...(await loadStandIn(artifact)), tools: tools as LoadedPolicy['tools'] });
    const snapshot = await snapshotOf(bundleOf('finance', 1));
    const verdict = await judgeBundle(snapshot, { tenant: 'finance', load: withTools([{ name: 'ehr', mcp: { host: 'EHR.svc' } }]) });
    expect(verdict).toMatchObject({ kind: 'reject', code: 'tools_invalid' });
    expect(verdict.kind === 'reject' && verdict.message).toContain('tools[0].mcp.host');
    expect(await judgeBundle(snapshot, { tenant: 'finance', load: withTools([{ name: 'ehr', mcp: { host: 'ehr.svc' } }]) })).toMatchObject({ kind: 'load' });
  });

  it('refuses a signed bundle whose policy does not load, with the loader message', async () => {
    const verdict = await judgeBundle(await snapshotOf(bundleOf('finance', 1)), { tenant: 'finance' });
    expect(verdict).toMatchObject({ kind: 'reject', code: 'policy_load_failed' });
    expect(verdict.kind === 'reject' && verdict.message).toMatch(/does not load/);
  });
});
