// Fixture builders for the compiler's tests: resources as users write them,
// with modifiers, turned into a tenant through the same YAML path as -f files.
import { stringify } from 'yaml';
import type { AgentIdentity, EgressAllow, EgressRule, PolicyRule, RuleCondition, ToolPolicy } from '../api/index.ts';
import { API_VERSION } from '../api/index.ts';
import type { CompiledTenant } from './compile.ts';
import { compileTenant } from './compile.ts';
import type { EvaluatorOptions } from './evaluate.ts';
import { PolicyEvaluator } from './evaluate.ts';
import type { ManifestSet, TenantResources } from './manifests.ts';
import { parseManifests, tenantResources } from './manifests.ts';

export type Modifier<T> = (resource: T) => void;
type Resource = AgentIdentity | ToolPolicy | EgressRule;

export function agent(namespace: string, name: string, ...modifiers: Modifier<AgentIdentity>[]): AgentIdentity {
  const out: AgentIdentity = {
    apiVersion: API_VERSION,
    kind: 'AgentIdentity',
    metadata: { name, namespace },
    spec: { serviceAccountName: name, owner: { name: 'Dana Ruiz', email: 'dana@example.com' }, autonomyLevel: 1 },
  };
  for (const modify of modifiers) modify(out);
  return out;
}

export const withRoles =
  (...roles: string[]): Modifier<AgentIdentity> =>
  (a) => {
    a.spec.roles = roles;
  };

export const suspended: Modifier<AgentIdentity> = (a) => {
  a.spec.suspended = true;
};

export const withAttributes =
  (attributes: Record<string, string>): Modifier<AgentIdentity> =>
  (a) => {
    a.spec.attributes = attributes;
  };

export function toolPolicy(namespace: string, name: string, rules: PolicyRule[], ...modifiers: Modifier<ToolPolicy>[]): ToolPolicy {
  const out: ToolPolicy = {
    apiVersion: API_VERSION,
    kind: 'ToolPolicy',
    metadata: { name, namespace },
    spec: { subjects: { agents: ['bot'] }, rules },
  };
  for (const modify of modifiers) modify(out);
  return out;
}

export const shadow: Modifier<ToolPolicy> = (p) => {
  p.spec.mode = 'shadow';
};

export const forSubjects =
  (subjects: { agents?: string[]; roles?: string[] }): Modifier<ToolPolicy> =>
  (p) => {
    p.spec.subjects = subjects;
  };

export function egressRule(namespace: string, name: string, allow: EgressAllow[], ...modifiers: Modifier<EgressRule>[]): EgressRule {
  const [first, ...rest] = allow;
  if (first === undefined) throw new Error('an egress rule allows at least one destination');
  const out: EgressRule = {
    apiVersion: API_VERSION,
    kind: 'EgressRule',
    metadata: { name, namespace },
    spec: { subjects: { agents: ['bot'] }, allow: [first, ...rest] },
  };
  for (const modify of modifiers) modify(out);
  return out;
}

export function namespace(name: string, tenant?: string): Record<string, unknown> {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels: tenant === undefined ? {} : { 'portcullis.dev/tenant': tenant } } };
}

/** The objects as one multi-document YAML file. */
export function yamlOf(objects: readonly (Resource | Record<string, unknown>)[]): string {
  return objects.map((o) => stringify(o)).join('---\n');
}

export function manifestSetOf(objects: readonly (Resource | Record<string, unknown>)[], file = 'fixtures.yaml'): ManifestSet {
  return parseManifests(yamlOf(objects), file);
}

export function tenantOf(objects: readonly (Resource | Record<string, unknown>)[], tenant: string): TenantResources {
  return tenantResources(manifestSetOf(objects), tenant);
}

export async function compiledEvaluator(
  objects: readonly (Resource | Record<string, unknown>)[],
  tenant: string,
  options?: EvaluatorOptions,
): Promise<{ compiled: CompiledTenant; evaluator: PolicyEvaluator }> {
  const compiled = await compileTenant(tenantOf(objects, tenant));
  return { compiled, evaluator: await PolicyEvaluator.load(compiled, options) };
}

/**
 * A tenant of one agent and `count` rules in policies of 100 rules, spread over
 * `tools` tools, one deny in seven; `when(r)` gives rule r its conditions.
 */
export function manyRules(
  namespace: string,
  count: number,
  options: { tools: number; actions: string[]; when: (r: number) => RuleCondition[] },
): Resource[] {
  const policies: Resource[] = [];
  for (let p = 0; p * 100 < count; p++) {
    const rules: PolicyRule[] = [];
    for (let r = p * 100; r < Math.min(count, (p + 1) * 100); r++) {
      rules.push({ name: `rule-${r}`, tool: `tool-${r % options.tools}`, actions: options.actions, decision: r % 7 === 0 ? 'deny' : 'allow', when: options.when(r) });
    }
    policies.push(toolPolicy(namespace, `policy-${p}`, rules));
  }
  return [agent(namespace, 'bot'), ...policies];
}
