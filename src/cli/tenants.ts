// Compiles the tenants a command needs, once each, from the -f manifests.
import type { ManifestSet } from '../compiler/index.ts';
import { compileTenant, PolicyEvaluator, tenantOf, tenantResources } from '../compiler/index.ts';

export class TenantEvaluators {
  private readonly set: ManifestSet;
  private readonly evaluators = new Map<string, Promise<PolicyEvaluator>>();

  constructor(set: ManifestSet) {
    this.set = set;
  }

  /** The evaluator of the tenant that owns the namespace (a namespace without a Namespace manifest is its own tenant). */
  forNamespace(namespace: string): Promise<PolicyEvaluator> {
    const tenant = tenantOf(this.set, namespace);
    let evaluator = this.evaluators.get(tenant);
    if (evaluator === undefined) {
      evaluator = compileTenant(tenantResources(this.set, tenant)).then((compiled) => PolicyEvaluator.load(compiled));
      this.evaluators.set(tenant, evaluator);
    }
    return evaluator;
  }
}

/** The namespace a call names, read before the full check so the right tenant can check it. */
export function namespaceOf(input: unknown): string {
  if (input !== null && typeof input === 'object' && 'namespace' in input && typeof input.namespace === 'string') return input.namespace;
  return '';
}
