// Whether the bundle the API holds should replace the loaded one: decode the two
// ConfigMaps, verify signature, tenant and revision order, and load the policy.
// No Kubernetes client here: the watch (bundle-source.ts) hands in what it saw.
import type { BundleJwks } from '../bundle/index.ts';
import { BundleError, fromConfigMapData, fromJwks, verifyBundle } from '../bundle/index.ts';
import type { AgentStanding, AuthorizationDecision, Obligations, PolicyArtifact, TenantData, ToolData } from '../compiler/index.ts';
import { PolicyEvaluator } from '../compiler/index.ts';
import { toolTableOf, ToolTableError } from './tools.ts';

export const BUNDLE_CONFIGMAP = 'portcullis-bundle';
export const TRUST_CONFIGMAP = 'portcullis-trust';
export const TRUST_JWKS_KEY = 'jwks.json';

/** What the sidecar reads of the two ConfigMaps; absent when the ConfigMap does not exist. */
export interface BundleSnapshot {
  bundle?: { data?: Record<string, string>; binaryData?: Record<string, string> };
  trust?: { data?: Record<string, string> };
}

/** Codes of refusals that are not the bundle's own (src/bundle/errors.ts has those). */
export type SidecarRejectionCode = 'trust_invalid' | 'policy_load_failed' | 'tools_invalid';

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
}

export type BundleVerdict =
  /** A bundle verified and loaded, to swap in. */
  | { kind: 'load'; policy: LoadedPolicy }
  /** The bundle is the loaded one: nothing to do. */
  | { kind: 'unchanged' }
  /** A ConfigMap is missing: wait for it (a loaded bundle stays). */
  | { kind: 'waiting'; reason: string }
  | { kind: 'reject'; code: string; message: string };

export interface VerdictOptions {
  tenant: string;
  /** The revision of the loaded bundle: an older one is refused, the same one is unchanged. */
  loaded?: string;
  /** Turns a verified artifact into a policy: PolicyEvaluator.load unless a test swaps it. */
  load?: (artifact: PolicyArtifact) => Promise<LoadedPolicy>;
}

function reject(code: string, message: string): BundleVerdict {
  return { kind: 'reject', code, message };
}

async function trustedKeys(trust: NonNullable<BundleSnapshot['trust']>): Promise<Awaited<ReturnType<typeof fromJwks>>> {
  const text = trust.data?.[TRUST_JWKS_KEY];
  if (text === undefined) throw new TrustInvalidError(`${TRUST_CONFIGMAP} has no ${TRUST_JWKS_KEY}`);
  let jwks: unknown;
  try {
    jwks = JSON.parse(text);
  } catch (error) {
    throw new TrustInvalidError(`${TRUST_CONFIGMAP}/${TRUST_JWKS_KEY} is not JSON: ${error instanceof Error ? error.message : String(error)}`);
  }
  if (typeof jwks !== 'object' || jwks === null || !Array.isArray((jwks as { keys?: unknown }).keys)) {
    throw new TrustInvalidError(`${TRUST_CONFIGMAP}/${TRUST_JWKS_KEY} is not a JWKS ({"keys": [...]})`);
  }
  return fromJwks(jwks as BundleJwks);
}

class TrustInvalidError extends Error {
  readonly code: SidecarRejectionCode = 'trust_invalid';
  override readonly name = 'TrustInvalidError';
}

/**
 * Judges the bundle of a snapshot against the loaded revision. Never throws:
 * every failure is a rejection with a stable code (a BundleError's code, or a
 * SidecarRejectionCode) that the caller counts and logs.
 */
export async function judgeBundle(snapshot: BundleSnapshot, options: VerdictOptions): Promise<BundleVerdict> {
  if (snapshot.bundle === undefined) return { kind: 'waiting', reason: `no ConfigMap ${BUNDLE_CONFIGMAP}` };
  if (snapshot.trust === undefined) return { kind: 'waiting', reason: `no ConfigMap ${TRUST_CONFIGMAP}` };
  let artifact: PolicyArtifact;
  try {
    const publicKeys = await trustedKeys(snapshot.trust);
    const signed = fromConfigMapData(snapshot.bundle);
    const trust = options.loaded === undefined ? { publicKeys, tenant: options.tenant } : { publicKeys, tenant: options.tenant, minRevision: options.loaded };
    const bundle = await verifyBundle(signed, trust);
    if (bundle.manifest.revision === options.loaded) return { kind: 'unchanged' };
    // verifyBundle checked data.json parses; the evaluator checks it is a compiled tenant.
    artifact = { wasm: bundle.wasm, data: bundle.data as { portcullis: TenantData }, revision: bundle.manifest.revision };
  } catch (error) {
    if (error instanceof BundleError || error instanceof TrustInvalidError) return reject(error.code, error.message);
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
