// kubectl portcullis status: per tenant, its resources, whether they are
// Ready, the bundle revision in force in each of its namespaces, and why
// anything is not Ready, as the operator reported it. What is read from the
// cluster is gathered first; the summary and its table are computed purely.
import { CoreV1Api, CustomObjectsApi } from '@kubernetes/client-node';
import type { V1ConfigMap } from '@kubernetes/client-node';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import type { Condition } from '../api/index.ts';
import { GROUP, VERSION } from '../api/index.ts';
import type { BundleKey } from '../bundle/index.ts';
import { BundleError, fromConfigMapData, MANIFEST_FILE, verifyBundle } from '../bundle/index.ts';
import type { ResourceKind } from '../operator/plan.ts';
import { BUNDLE_CONFIGMAP, takesBundle, tenantOfNamespace } from '../operator/plan.ts';
import { parseTrust, TRUST_CONFIGMAP, TrustInvalidError } from '../sidecar/bundle-verdict.ts';
import type { CliIo } from './io.ts';
import { UsageError } from './io.ts';
import type { Connection } from './kube.ts';
import { ask, askOptional, ClusterError, connect, CONNECTION_FLAGS, CONNECTION_OPTIONS, DEFAULT_OPERATOR_NAMESPACE, withClusterErrors } from './kube.ts';

export const STATUS_USAGE = `Usage: kubectl portcullis status [TENANT...] [-n NAMESPACE] [-o wide|json|yaml]

Shows each tenant as the operator reports it: how many AgentIdentities,
ToolPolicies and EgressRules it has, whether all of them are Ready, the bundle
revision in force (the ConfigMap ${BUNDLE_CONFIGMAP} of each of its namespaces,
verified with the keys of ${TRUST_CONFIGMAP} as the sidecars verify it), the
namespaces that hold it, and why anything is not Ready. Every tenant is shown
unless TENANTs or -n (the tenant of that namespace) say which. It reads
namespaces, the three kinds and the bundle ConfigMaps of the whole cluster.

Flags:
  -o, --output FORMAT      table (default), wide (a row per namespace too), json or yaml
  --operator-namespace NS  where the operator keeps ${TRUST_CONFIGMAP} (default ${DEFAULT_OPERATOR_NAMESPACE})
${CONNECTION_FLAGS}
  -h, --help               show this text

READY is True when every resource is Ready for its current generation and
every namespace holds a bundle that verifies, False when anything is not Ready
or a bundle is refused, Unknown while the operator has not reported the
current generation of everything or a namespace has no bundle yet. Without
the trust (not found, or not readable) the revisions are shown unverified,
and a warning says so.

Exit status: 0 shown, 1 the cluster cannot be asked, 2 the command was called wrong.
`;

const PLURALS: Readonly<Record<ResourceKind, string>> = { AgentIdentity: 'agentidentities', ToolPolicy: 'toolpolicies', EgressRule: 'egressrules' };
const KINDS: readonly ResourceKind[] = ['AgentIdentity', 'ToolPolicy', 'EgressRule'];

/** What status reads from the cluster. */
export interface Gathered {
  namespaces: readonly { name: string; labels: Readonly<Record<string, string>> }[];
  resources: readonly GatheredResource[];
  /** namespace → its bundle ConfigMap, as judged. */
  bundles: ReadonlyMap<string, SeenBundle>;
}

/** A bundle ConfigMap: the revision its manifest names ('' when none), and whether it verified. */
export interface SeenBundle {
  revision: string;
  /** Verified: true; refused: why; not checked (no trust): undefined. */
  verdict?: true | { code: string; message: string };
}

export interface GatheredResource {
  kind: ResourceKind;
  namespace: string;
  name: string;
  generation: number;
  status?: { observedGeneration?: number; conditions?: readonly Condition[] } | undefined;
}

export type Readiness = 'True' | 'False' | 'Unknown';

export interface Problem {
  /** Kind namespace/name, or Namespace name. */
  object: string;
  ready: Readiness;
  reason: string;
  message: string;
}

export interface TenantStatus {
  tenant: string;
  ready: Readiness;
  agents: number;
  toolPolicies: number;
  egressRules: number;
  /** The revisions in force in its namespaces, distinct, in order. */
  revisions: string[];
  /** The revision of each namespace's bundle; null when it has none, or it is refused. */
  namespaces: { name: string; revision: string | null; verified: boolean }[];
  notReady: Problem[];
}

/** A resource's Ready, as the operator reported it for its current generation. */
function readinessOf(resource: GatheredResource): Problem | undefined {
  const object = `${resource.kind} ${resource.namespace}/${resource.name}`;
  const ready = resource.status?.conditions?.find((c) => c.type === 'Ready');
  const observed = Math.min(resource.status?.observedGeneration ?? 0, ready?.observedGeneration ?? resource.generation);
  if (ready === undefined || observed < resource.generation) {
    return { object, ready: 'Unknown', reason: 'NotObserved', message: `the operator has not reported generation ${String(resource.generation)} yet` };
  }
  if (ready.status === 'True') return undefined;
  return { object, ready: ready.status, reason: ready.reason, message: ready.message };
}

function worst(problems: readonly Problem[]): Readiness {
  if (problems.some((p) => p.ready === 'False')) return 'False';
  return problems.length > 0 ? 'Unknown' : 'True';
}

/** Every tenant that has a namespace taking its bundle, in name order. */
export function summarize(gathered: Gathered): TenantStatus[] {
  const holding = new Set(gathered.resources.map((r) => r.namespace));
  const tenants = new Map<string, TenantStatus>();
  const tenantOfNs = new Map<string, string>();
  for (const ns of [...gathered.namespaces].sort((a, b) => a.name.localeCompare(b.name))) {
    if (!takesBundle(ns, holding.has(ns.name))) continue;
    const tenant = tenantOfNamespace(ns);
    tenantOfNs.set(ns.name, tenant);
    const entry = tenants.get(tenant) ?? { tenant, ready: 'True', agents: 0, toolPolicies: 0, egressRules: 0, revisions: [], namespaces: [], notReady: [] };
    const bundle = gathered.bundles.get(ns.name);
    const refused = bundle?.verdict !== undefined && bundle.verdict !== true ? bundle.verdict : undefined;
    const revision = bundle === undefined || refused !== undefined ? null : bundle.revision;
    entry.namespaces.push({ name: ns.name, revision, verified: bundle?.verdict === true });
    if (bundle === undefined) entry.notReady.push({ object: `Namespace ${ns.name}`, ready: 'Unknown', reason: 'NoBundle', message: `no ConfigMap ${BUNDLE_CONFIGMAP} yet` });
    if (refused !== undefined) entry.notReady.push({ object: `Namespace ${ns.name}`, ready: 'False', reason: 'BundleRefused', message: `its ${BUNDLE_CONFIGMAP} does not verify (${refused.code}): ${refused.message}` });
    if (revision !== null && !entry.revisions.includes(revision)) entry.revisions.push(revision);
    tenants.set(tenant, entry);
  }
  for (const resource of [...gathered.resources].sort((a, b) => `${a.namespace}/${a.name}`.localeCompare(`${b.namespace}/${b.name}`))) {
    const entry = tenants.get(tenantOfNs.get(resource.namespace) ?? '');
    if (entry === undefined) continue;
    if (resource.kind === 'AgentIdentity') entry.agents += 1;
    else if (resource.kind === 'ToolPolicy') entry.toolPolicies += 1;
    else entry.egressRules += 1;
    const problem = readinessOf(resource);
    if (problem !== undefined) entry.notReady.push(problem);
  }
  return [...tenants.values()].sort((a, b) => a.tenant.localeCompare(b.tenant)).map((t) => ({ ...t, ready: worst(t.notReady) }));
}

/** Columns as kubectl prints them: upper-case headers, left-aligned, three spaces apart. */
export function table(rows: readonly (readonly string[])[]): string {
  const widths = rows.reduce<number[]>((w, row) => row.map((cell, i) => Math.max(w[i] ?? 0, cell.length)), []);
  return rows.map((row) => row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd((widths[i] ?? 0) + 3))).join('').trimEnd()).join('\n') + '\n';
}

/** The table of `kubectl portcullis status`, then why each tenant that is not Ready is not. */
export function formatStatus(tenants: readonly TenantStatus[], wide: boolean): string {
  if (tenants.length === 0) return 'No tenants found.\n';
  const header = ['TENANT', 'READY', 'AGENTS', 'POLICIES', 'EGRESS', 'REVISION', 'NAMESPACES'];
  const rows = tenants.map((t) => [t.tenant, t.ready, String(t.agents), String(t.toolPolicies), String(t.egressRules), t.revisions.length === 0 ? '<none>' : t.revisions.join(','), t.namespaces.map((n) => n.name).join(',')]);
  let text = table([header, ...rows]);
  if (wide) {
    text += `\n${table([['TENANT', 'NAMESPACE', 'REVISION', 'VERIFIED'], ...tenants.flatMap((t) => t.namespaces.map((n) => [t.tenant, n.name, n.revision ?? '<none>', String(n.verified)]))])}`;
  }
  for (const t of tenants.filter((x) => x.notReady.length > 0)) {
    text += `\nTenant ${t.tenant} is not Ready:\n${t.notReady.map((p) => `  ${p.object}: Ready=${p.ready} ${p.reason}: ${p.message}\n`).join('')}`;
  }
  return text;
}

/** The revision a bundle ConfigMap's manifest names; '' when it names none. */
function revisionOf(data: Readonly<Record<string, string>> | undefined): string {
  try {
    const revision = (JSON.parse(data?.[MANIFEST_FILE] ?? '{}') as { revision?: unknown }).revision;
    return typeof revision === 'string' ? revision : '';
  } catch {
    return '';
  }
}

/** How a bundle ConfigMap is judged: verified with the trust's keys for the namespace's tenant, as a sidecar verifies it. */
async function judged(configMap: V1ConfigMap, tenant: string, keys: ReadonlyMap<string, BundleKey> | undefined): Promise<SeenBundle> {
  const revision = revisionOf(configMap.data);
  if (keys === undefined) return { revision };
  try {
    await verifyBundle(fromConfigMapData({ data: configMap.data ?? {}, binaryData: configMap.binaryData ?? {} }), { publicKeys: keys, tenant });
    return { revision, verdict: true };
  } catch (error) {
    if (!(error instanceof BundleError)) throw error;
    return { revision, verdict: { code: error.code, message: error.message } };
  }
}

/** The trust's keys; undefined, with a warning, when they cannot be read: the revisions are then shown unverified. */
async function trustKeys(core: CoreV1Api, connection: Connection, operatorNamespace: string, io: CliIo): Promise<ReadonlyMap<string, BundleKey> | undefined> {
  const where = `${operatorNamespace}/${TRUST_CONFIGMAP}`;
  try {
    const trust = await askOptional(connection, `read ConfigMap ${where}`, () => core.readNamespacedConfigMap({ name: TRUST_CONFIGMAP, namespace: operatorNamespace }));
    if (trust === undefined) throw new ClusterError(`no ConfigMap ${where} (see --operator-namespace)`);
    return await parseTrust(trust.data, where);
  } catch (error) {
    if (!(error instanceof ClusterError) && !(error instanceof TrustInvalidError)) throw error;
    io.stderr(`portcullis: warning: the bundles are not verified: ${error.message}\n`);
    return undefined;
  }
}

async function gather(connection: Connection, operatorNamespace: string, io: CliIo): Promise<Gathered> {
  const core = connection.kubeConfig.makeApiClient(CoreV1Api);
  const custom = connection.kubeConfig.makeApiClient(CustomObjectsApi);
  const namespaces = await ask(connection, 'list namespaces', () => core.listNamespace());
  const bundles = await ask(connection, `list the ConfigMaps ${BUNDLE_CONFIGMAP} of every namespace`, () => core.listConfigMapForAllNamespaces({ fieldSelector: `metadata.name=${BUNDLE_CONFIGMAP}` }));
  const resources: GatheredResource[] = [];
  for (const kind of KINDS) {
    const list = (await ask(connection, `list ${PLURALS[kind]}.${GROUP} in every namespace`, () => custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural: PLURALS[kind] }))) as {
      items?: { metadata?: { namespace?: string; name?: string; generation?: number }; status?: GatheredResource['status'] }[];
    };
    for (const item of list.items ?? []) {
      resources.push({ kind, namespace: item.metadata?.namespace ?? '', name: item.metadata?.name ?? '', generation: item.metadata?.generation ?? 0, status: item.status });
    }
  }
  const views = namespaces.items.map((ns) => ({ name: ns.metadata?.name ?? '', labels: ns.metadata?.labels ?? {} }));
  const tenantOf = new Map(views.map((ns) => [ns.name, tenantOfNamespace(ns)]));
  const keys = await trustKeys(core, connection, operatorNamespace, io);
  const seen = new Map<string, SeenBundle>();
  for (const cm of bundles.items) {
    const namespace = cm.metadata?.namespace ?? '';
    seen.set(namespace, await judged(cm, tenantOf.get(namespace) ?? namespace, keys));
  }
  return { namespaces: views, resources, bundles: seen };
}

const OUTPUTS = ['table', 'wide', 'json', 'yaml'] as const;
type Output = (typeof OUTPUTS)[number];

function outputOf(value: string | undefined): Output {
  const output = value ?? 'table';
  if (!(OUTPUTS as readonly string[]).includes(output)) throw new UsageError(`--output: ${JSON.stringify(output)} is not one of ${OUTPUTS.join(', ')}`);
  return output as Output;
}

export async function statusCommand(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: { ...CONNECTION_OPTIONS, output: { type: 'string', short: 'o' }, 'operator-namespace': { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    allowPositionals: true,
  });
  if (values.help === true) {
    io.stdout(STATUS_USAGE);
    return 0;
  }
  const output = outputOf(values.output);
  return withClusterErrors(io, async () => {
    const connection = connect(values);
    let tenants = summarize(await gather(connection, values['operator-namespace'] ?? DEFAULT_OPERATOR_NAMESPACE, io));
    if (positionals.length > 0) tenants = tenants.filter((t) => positionals.includes(t.tenant));
    if (connection.namespaceGiven) tenants = tenants.filter((t) => t.namespaces.some((n) => n.name === connection.namespace));
    if (output === 'json') io.stdout(`${JSON.stringify({ tenants }, null, 2)}\n`);
    else if (output === 'yaml') io.stdout(stringify({ tenants }));
    else io.stdout(formatStatus(tenants, output === 'wide'));
    return 0;
  });
}
