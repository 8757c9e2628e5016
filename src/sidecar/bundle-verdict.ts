// What the sidecar should hold after a change to either ConfigMap it follows:
// the trust (portcullis-trust, in the operator's namespace, which tenants
// cannot write) and the bundle (portcullis-bundle, in the agent's namespace).
// The trust is judged first: when its keys change, the loaded bundle is
// verified again and unloaded if it no longer verifies; then the bundle
// ConfigMap is judged against the trust in force, its revision compared only
// with a bundle that verified under that trust and with the tenant's minimum
// revision, which the operator keeps next to the trust. No Kubernetes client
// here: the watch (bundle-source.ts) hands in what it saw.
import type { BundleJwks, BundleKey } from '../bundle/index.ts';
import { BundleError, BundleRevisionRegressedError, fromConfigMapData, fromJwks, parseRevision, verifyBundle } from '../bundle/index.ts';
import { MINIMUM_REVISION_KEY, minimumRevisionConfigMap } from '../bundle/revision.ts';
import type { AgentStanding, AuthorizationDecision, Obligations, PolicyArtifact, TenantData, ToolData } from '../compiler/index.ts';
import { PolicyEvaluator } from '../compiler/index.ts';
import { toolTableOf, ToolTableError } from './tools.ts';

export const BUNDLE_CONFIGMAP = 'portcullis-bundle';
export const TRUST_CONFIGMAP = 'portcullis-trust';
export const TRUST_JWKS_KEY = 'jwks.json';

/** A ConfigMap as judged: its contents, and which version of it this is (uid and resourceVersion). */
export interface ObservedConfigMap {
  version: string;
  data?: Record<string, string>;
  binaryData?: Record<string, string>;
}

/** What the watches saw; a ConfigMap is absent when it does not exist. */
export interface Observed {
  bundle?: ObservedConfigMap;
  trust?: ObservedConfigMap;
  /** The tenant's minimum revision, kept by the operator next to the trust (minimumRevisionConfigMap). */
  minimum?: ObservedConfigMap;
}

/** Codes of refusals that are not the bundle's own (src/bundle/errors.ts has those). */
export type SidecarRejectionCode = 'trust_invalid' | 'policy_load_failed' | 'tools_invalid' | 'minimum_revision_invalid';

/** What the sidecar needs of a loaded bundle: PolicyEvaluator, or a stand-in in tests. */
export interface LoadedPolicy {
  readonly revision: string;
  readonly tenant: string;
  authorize(input: unknown): AuthorizationDecision;
  /** The counters a call of this tool and action needs (PolicyEvaluator.obligations). */
  obligations(namespace: string, tool: string, action?: string): Obligations;
  /** Whether an agent is suspended and since when its tokens are revoked (PolicyEvaluator.standing). */
  standing(namespace: string, agent: string): AgentStanding | undefined;
  /** The tenant's tool declarations, which map proxied requests to tool and action; absent: none. */
  readonly tools?: readonly ToolData[];
  /** The parameter paths the tenant's policies read (PolicyEvaluator.paramPaths); absent: none known. */
  readonly paramPaths?: readonly (readonly string[])[];
}

/** The keys bundles are verified with, and the trust ConfigMap version they were read from. */
export interface TrustedKeys {
  version: string;
  keys: ReadonlyMap<string, BundleKey>;
}

/** A loaded bundle, with the ConfigMap it came from: verified again whenever the trust changes. */
export interface LoadedBundle {
  policy: LoadedPolicy;
  source: ObservedConfigMap;
}

export interface BundleState {
  /** The last valid trust; a trust ConfigMap that goes or turns invalid leaves it in force. */
  trust?: TrustedKeys;
  /** The version of the trust ConfigMap last judged, valid or not ('' while there is none), so each is judged once. */
  trustSeen?: string;
  /** The bundle in force: always one that verifies under `trust`. */
  loaded?: LoadedBundle;
  /** The version of the bundle ConfigMap last refused under `trust`: judged again only when the trust changes. */
  refused?: string;
  /** The version of the minimum-revision ConfigMap last judged ('' while there is none), so an invalid one is reported once. */
  minimumSeen?: string;
}

export type Finding =
  /** A bundle verified and was swapped in. */
  | { kind: 'loaded'; policy: LoadedPolicy; previous: string | undefined }
  /** The bundle in force no longer verifies under the trust in force: nothing of it answers any more. */
  | { kind: 'unloaded'; revision: string; code: string; message: string }
  /** A bundle or trust ConfigMap was refused; `keeping` is the revision still in force. */
  | { kind: 'refused'; code: string; message: string; keeping: string | undefined }
  /** A ConfigMap is missing: wait for it. */
  | { kind: 'waiting'; reason: string };

export interface Judgement {
  state: BundleState;
  findings: Finding[];
}

export interface JudgeOptions {
  tenant: string;
  /** The namespace of the trust ConfigMap, named in messages. */
  trustNamespace: string;
  /** Turns a verified artifact into a policy: PolicyEvaluator.load unless a test swaps it. */
  load?: (artifact: PolicyArtifact) => Promise<LoadedPolicy>;
}

export class TrustInvalidError extends Error {
  readonly code: SidecarRejectionCode = 'trust_invalid';
  override readonly name = 'TrustInvalidError';
}

/** The keys of a trust ConfigMap's JWKS; `where` names the ConfigMap in the error. */
export async function parseTrust(data: Readonly<Record<string, string>> | undefined, where: string): Promise<Map<string, BundleKey>> {
  const text = data?.[TRUST_JWKS_KEY];
  if (text === undefined) throw new TrustInvalidError(`${where} has no ${TRUST_JWKS_KEY}`);
  let jwks: unknown;
  try {
    jwks = JSON.parse(text);
  } catch (error) {
    throw new TrustInvalidError(`${where}/${TRUST_JWKS_KEY} is not JSON: ${error instanceof Error ? error.message : String(error)}`);
  }
  if (typeof jwks !== 'object' || jwks === null || !Array.isArray((jwks as { keys?: unknown }).keys)) {
    throw new TrustInvalidError(`${where}/${TRUST_JWKS_KEY} is not a JWKS ({"keys": [...]})`);
  }
  try {
    return await fromJwks(jwks as BundleJwks);
  } catch (error) {
    if (error instanceof BundleError) throw new TrustInvalidError(`${where}/${TRUST_JWKS_KEY}: ${error.message}`);
    throw error;
  }
}

export type BundleVerdict =
  /** A bundle verified and loaded, to swap in. */
  | { kind: 'load'; policy: LoadedPolicy }
  /** The bundle is the loaded revision: nothing to load. */
  | { kind: 'unchanged' }
  | { kind: 'reject'; code: string; message: string };

export interface VerdictOptions {
  tenant: string;
  /** The keys of the trust in force. */
  publicKeys: ReadonlyMap<string, BundleKey>;
  /** The revision of the loaded bundle, which verified under the same keys: an older one is refused, the same one is unchanged. */
  loaded?: string;
  /** The lowest revision the operator allows the tenant: an older bundle is refused, even with nothing loaded. */
  minimum?: string;
  load?: (artifact: PolicyArtifact) => Promise<LoadedPolicy>;
}

function reject(code: string, message: string): BundleVerdict {
  return { kind: 'reject', code, message };
}

/**
 * Judges a bundle ConfigMap against the trusted keys and the loaded revision. Never throws:
 * every failure is a rejection with a stable code (a BundleError's code, or a
 * SidecarRejectionCode) that the caller counts and reports.
 */
export async function judgeBundle(bundle: Omit<ObservedConfigMap, 'version'>, options: VerdictOptions): Promise<BundleVerdict> {
  let artifact: PolicyArtifact;
  try {
    const signed = fromConfigMapData({ data: bundle.data ?? {}, binaryData: bundle.binaryData ?? {} });
    const trust = { publicKeys: options.publicKeys, tenant: options.tenant, ...(options.loaded === undefined ? {} : { minRevision: options.loaded }) };
    const verified = await verifyBundle(signed, trust);
    if (verified.manifest.revision === options.loaded) return { kind: 'unchanged' };
    if (options.minimum !== undefined && parseRevision(verified.manifest.revision).sequence < parseRevision(options.minimum).sequence) {
      throw new BundleRevisionRegressedError(`revision ${verified.manifest.revision} is older than ${options.minimum}, the lowest the operator allows tenant ${options.tenant}`);
    }
    // verifyBundle checked data.json parses; the evaluator checks it is a compiled tenant.
    artifact = { wasm: verified.wasm, data: verified.data as { portcullis: TenantData }, revision: verified.manifest.revision };
  } catch (error) {
    if (error instanceof BundleError) return reject(error.code, error.message);
    throw error;
  }
  let policy: LoadedPolicy;
  const load = options.load ?? ((a: PolicyArtifact): Promise<LoadedPolicy> => PolicyEvaluator.load(a));
  try {
    policy = await load(artifact);
  } catch (error) {
    return reject('policy_load_failed', `the policy does not load: ${error instanceof Error ? error.message : String(error)}`);
  }
  // The signature names the tenant; the data must agree, or the rules are another tenant's.
  if (policy.tenant !== options.tenant) return reject('bundle_tenant_mismatch', `data.json holds tenant ${policy.tenant}, not ${options.tenant}`);
  try {
    // Built now, so a malformed declaration refuses the bundle instead of failing call by call.
    toolTableOf(policy);
  } catch (error) {
    if (error instanceof ToolTableError) return reject('tools_invalid', `the tool declarations of data.json do not load: ${error.message}`);
    throw error;
  }
  return { kind: 'load', policy };
}

/** Why the loaded bundle no longer verifies under these keys, or undefined when it still does. */
async function distrusted(loaded: LoadedBundle, keys: ReadonlyMap<string, BundleKey>, tenant: string): Promise<BundleError | undefined> {
  try {
    const { data, binaryData } = loaded.source;
    await verifyBundle(fromConfigMapData({ data: data ?? {}, binaryData: binaryData ?? {} }), { publicKeys: keys, tenant });
    return undefined;
  } catch (error) {
    if (error instanceof BundleError) return error;
    throw error;
  }
}

/** The trust after a change of its ConfigMap: new keys, or the last valid ones kept (with why). */
async function judgeTrust(state: BundleState, observed: ObservedConfigMap | undefined, where: string): Promise<{ trust: TrustedKeys | undefined; changed: boolean; findings: Finding[] }> {
  const seen = observed?.version ?? '';
  if (seen === state.trustSeen) return { trust: state.trust, changed: false, findings: [] };
  if (observed === undefined) {
    const reason = state.trust === undefined ? `no ConfigMap ${where}` : `no ConfigMap ${where}; the keys last read from it stay trusted`;
    return { trust: state.trust, changed: false, findings: [{ kind: 'waiting', reason }] };
  }
  try {
    const keys = await parseTrust(observed.data, where);
    return { trust: { version: observed.version, keys }, changed: true, findings: [] };
  } catch (error) {
    if (!(error instanceof TrustInvalidError)) throw error;
    const kept = state.trust === undefined ? '' : '; the keys last read from it stay trusted';
    return { trust: state.trust, changed: false, findings: [{ kind: 'refused', code: error.code, message: `${error.message}${kept}`, keeping: state.loaded?.policy.revision }] };
  }
}

/**
 * The tenant's minimum revision from its ConfigMap; undefined when there is none. An invalid one
 * (the operator's namespace is not the tenant's to write) is reported once and counts as none.
 */
function judgeMinimum(state: BundleState, observed: ObservedConfigMap | undefined, where: string): { minimum: string | undefined; findings: Finding[] } {
  if (observed === undefined) return { minimum: undefined, findings: [] };
  const text = observed.data?.[MINIMUM_REVISION_KEY];
  const problem = text === undefined ? `has no ${MINIMUM_REVISION_KEY}` : revisionProblem(text);
  if (problem === undefined) return { minimum: text, findings: [] };
  if (observed.version === state.minimumSeen) return { minimum: undefined, findings: [] };
  return { minimum: undefined, findings: [{ kind: 'refused', code: 'minimum_revision_invalid', message: `${where} ${problem}; no minimum revision applies`, keeping: state.loaded?.policy.revision }] };
}

/** Why a text is no revision, or undefined when it is one. */
function revisionProblem(text: string): string | undefined {
  try {
    parseRevision(text);
    return undefined;
  } catch (error) {
    if (error instanceof BundleError) return `holds no revision: ${error.message}`;
    throw error;
  }
}

/**
 * The sidecar's next state after a change of any ConfigMap it follows, and what to
 * report. In order: the trust ConfigMap is judged (a valid one replaces the
 * keys; a missing or invalid one leaves the last valid keys in force); when
 * the keys changed, the loaded bundle is verified again and unloaded if it no
 * longer verifies — then no revision floor remains, so the bundle ConfigMap
 * loads if it verifies, even at a lower revision; last, the bundle ConfigMap
 * is judged against the keys in force, the revision of a bundle that
 * verified under them, and the tenant's minimum revision (which refuses an
 * older bundle even when none is loaded, and never unloads one). Never throws
 * for anything a ConfigMap holds.
 */
export async function judge(state: BundleState, observed: Observed, options: JudgeOptions): Promise<Judgement> {
  const where = `${options.trustNamespace}/${TRUST_CONFIGMAP}`;
  const trust = await judgeTrust(state, observed.trust, where);
  const minimum = judgeMinimum(state, observed.minimum, `${options.trustNamespace}/${minimumRevisionConfigMap(options.tenant)}`);
  const findings = [...trust.findings, ...minimum.findings];
  let loaded = state.loaded;
  let refused = trust.changed ? undefined : state.refused;
  if (trust.changed && trust.trust !== undefined && loaded !== undefined) {
    const error = await distrusted(loaded, trust.trust.keys, options.tenant);
    if (error !== undefined) {
      findings.push({ kind: 'unloaded', revision: loaded.policy.revision, code: error.code, message: `revision ${loaded.policy.revision} in force no longer verifies under ${where}: ${error.message}` });
      // Its ConfigMap, if still there as it was, was just refused under the new keys.
      refused = loaded.source.version;
      loaded = undefined;
    }
  }
  const next = (): BundleState => ({
    ...(trust.trust === undefined ? {} : { trust: trust.trust }),
    trustSeen: observed.trust?.version ?? '',
    minimumSeen: observed.minimum?.version ?? '',
    ...(loaded === undefined ? {} : { loaded }),
    ...(refused === undefined ? {} : { refused }),
  });
  if (trust.trust === undefined) return { state: next(), findings };
  const bundle = observed.bundle;
  if (bundle === undefined) return { state: next(), findings: [...findings, { kind: 'waiting', reason: `no ConfigMap ${BUNDLE_CONFIGMAP}` }] };
  // The ConfigMap as loaded (verified under the keys in force), or as refused under them: nothing new to judge.
  if (bundle.version === loaded?.source.version || bundle.version === refused) return { state: next(), findings };
  refused = undefined;
  const verdict = await judgeBundle(bundle, {
    tenant: options.tenant,
    publicKeys: trust.trust.keys,
    ...(loaded === undefined ? {} : { loaded: loaded.policy.revision }),
    ...(minimum.minimum === undefined ? {} : { minimum: minimum.minimum }),
    ...(options.load === undefined ? {} : { load: options.load }),
  });
  switch (verdict.kind) {
    case 'load':
      findings.push({ kind: 'loaded', policy: verdict.policy, previous: loaded?.policy.revision });
      loaded = { policy: verdict.policy, source: bundle };
      break;
    case 'unchanged':
      // The same revision, signed again (a new key): verified again from now on in this form.
      if (loaded !== undefined) loaded = { policy: loaded.policy, source: bundle };
      break;
    case 'reject':
      findings.push({ kind: 'refused', code: verdict.code, message: verdict.message, keeping: loaded?.policy.revision });
      refused = bundle.version;
      break;
  }
  return { state: next(), findings };
}
