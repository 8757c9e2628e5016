// Shared by the sidecar's unit tests.
import type { AuthorizationDecision, PolicyArtifact } from '../compiler/index.ts';
import type { LoadedPolicy } from './bundle-verdict.ts';

/** A stand-in for PolicyEvaluator.load: the bundle logic, not the WASM, is under test where it is used. */
export const loadStandIn = (artifact: PolicyArtifact): Promise<LoadedPolicy> =>
  Promise.resolve({
    revision: artifact.revision,
    tenant: artifact.data.portcullis.tenant,
    authorize: (): AuthorizationDecision => ({ decision: 'allow', enforced: true, policy: 'p', rule: 'r', revision: artifact.revision, reasons: [] }),
    obligations: () => ({ calls: [], rate: [], spend: [] }), standing: () => undefined,
  });
