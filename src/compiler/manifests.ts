// Manifests as users keep them: files or folders of multi-document YAML holding
// Portcullis resources and the Namespaces whose portcullis.dev/tenant label
// groups namespaces into tenants. Parsing is pure; readManifestPaths is the thin
// file reader around it.
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import type { AgentIdentity, EgressRule, ToolPolicy } from '../api/index.ts';
import { API_VERSION, GROUP, TENANT_LABEL } from '../api/index.ts';
import { CompileError, CompileErrors } from './errors.ts';
import type { ResourceKind } from './validate.ts';
import { RESOURCE_KINDS, validateResource } from './validate.ts';

export { TENANT_LABEL };
/** kubectl's namespace for objects that do not name one. */
export const DEFAULT_NAMESPACE = 'default';

export interface SourceRef {
  file: string;
  /** 0-based index of the YAML document in the file. */
  document: number;
}

export interface Loaded<T> {
  namespace: string;
  name: string;
  resource: T;
  source: SourceRef;
}

export interface ManifestSet {
  agents: Loaded<AgentIdentity>[];
  policies: Loaded<ToolPolicy>[];
  egressRules: Loaded<EgressRule>[];
  /** Namespace name → tenant, from Namespace manifests. */
  namespaceTenants: Map<string, string>;
}

/** The resources of one tenant: what one bundle is compiled from. */
export interface TenantResources {
  tenant: string;
  agents: Loaded<AgentIdentity>[];
  policies: Loaded<ToolPolicy>[];
  egressRules: Loaded<EgressRule>[];
}

export function emptyManifestSet(): ManifestSet {
  return { agents: [], policies: [], egressRules: [], namespaceTenants: new Map() };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function isResourceKind(kind: unknown): kind is ResourceKind {
  return (RESOURCE_KINDS as readonly unknown[]).includes(kind);
}

function stringAt(object: Record<string, unknown>, key: string): string | undefined {
  const value = object[key];
  return typeof value === 'string' ? value : undefined;
}

function addNamespace(set: ManifestSet, object: Record<string, unknown>, source: SourceRef): void {
  const metadata = isObject(object.metadata) ? object.metadata : {};
  const name = stringAt(metadata, 'name');
  if (name === undefined) throw new CompileError('parse_error', 'Namespace without metadata.name', source);
  const labels = isObject(metadata.labels) ? metadata.labels : {};
  const tenant = stringAt(labels, TENANT_LABEL) ?? name;
  const known = set.namespaceTenants.get(name);
  if (known !== undefined && known !== tenant) {
    throw new CompileError('conflict_error', `Namespace ${name} is given to tenants ${known} and ${tenant}`, { ...source, resource: `Namespace ${name}` });
  }
  set.namespaceTenants.set(name, tenant);
}

function addResource(set: ManifestSet, kind: ResourceKind, object: Record<string, unknown>, source: SourceRef): CompileError[] {
  const metadata = isObject(object.metadata) ? object.metadata : {};
  const namespace = stringAt(metadata, 'namespace') ?? DEFAULT_NAMESPACE;
  const name = stringAt(metadata, 'name') ?? '';
  const resource = `${kind} ${namespace}/${name}`;
  if (object.apiVersion !== API_VERSION) {
    return [new CompileError('schema_error', `apiVersion must be ${API_VERSION}`, { ...source, resource, field: 'apiVersion' })];
  }
  const problems = validateResource(kind, object, resource).map((e) => e.within(source));
  if (problems.length > 0) return problems;
  // The schema has just checked the shape, so the object is the typed resource.
  if (kind === 'AgentIdentity') set.agents.push({ namespace, name, resource: object as unknown as AgentIdentity, source });
  if (kind === 'ToolPolicy') set.policies.push({ namespace, name, resource: object as unknown as ToolPolicy, source });
  if (kind === 'EgressRule') set.egressRules.push({ namespace, name, resource: object as unknown as EgressRule, source });
  return [];
}

function addObject(set: ManifestSet, object: unknown, source: SourceRef): CompileError[] {
  if (object === null || object === undefined) return [];
  if (!isObject(object)) return [new CompileError('parse_error', 'a document must be a Kubernetes object (a mapping)', source)];
  const kind = object.kind;
  const apiVersion = typeof object.apiVersion === 'string' ? object.apiVersion : '';
  if (kind === 'List' && Array.isArray(object.items)) {
    return object.items.flatMap((item) => addObject(set, item, source));
  }
  if (kind === 'Namespace' && apiVersion === 'v1') {
    addNamespace(set, object, source);
    return [];
  }
  if (apiVersion.startsWith(`${GROUP}/`)) {
    if (!isResourceKind(kind)) return [new CompileError('schema_error', `unknown kind ${String(kind)} in ${GROUP}`, { ...source, field: 'kind' })];
    return addResource(set, kind, object, source);
  }
  // Other objects (Deployments, ServiceAccounts...) share folders with ours; they are not ours to judge.
  return [];
}

/** Adds the objects of one YAML file to the set; throws CompileErrors naming every bad document. */
export function parseManifests(text: string, file: string, set: ManifestSet = emptyManifestSet()): ManifestSet {
  const errors: CompileError[] = [];
  for (const [document, doc] of parseAllDocuments(text, { uniqueKeys: true }).entries()) {
    const source = { file, document };
    const yamlError = doc.errors[0];
    if (yamlError !== undefined) {
      errors.push(new CompileError('parse_error', yamlError.message, source));
      continue;
    }
    try {
      errors.push(...addObject(set, doc.toJS({ maxAliasCount: 100 }), source));
    } catch (error) {
      if (!(error instanceof CompileError)) throw error;
      errors.push(error);
    }
  }
  if (errors.length > 0) throw new CompileErrors(errors);
  return set;
}

/** Names of every tenant that has resources or namespaces in the set, sorted. */
export function tenantsOf(set: ManifestSet): string[] {
  const tenants = new Set(set.namespaceTenants.values());
  for (const r of [...set.agents, ...set.policies, ...set.egressRules]) tenants.add(tenantOf(set, r.namespace));
  return [...tenants].sort();
}

export function tenantOf(set: ManifestSet, namespace: string): string {
  return set.namespaceTenants.get(namespace) ?? namespace;
}

/** The resources of one tenant, in a stable order (namespace, then name) whatever order the files gave. */
export function tenantResources(set: ManifestSet, tenant: string): TenantResources {
  const mine = <T>(items: Loaded<T>[]): Loaded<T>[] =>
    items
      .filter((r) => tenantOf(set, r.namespace) === tenant)
      .sort((a, b) => compare(a.namespace, b.namespace) || compare(a.name, b.name));
  return { tenant, agents: mine(set.agents), policies: mine(set.policies), egressRules: mine(set.egressRules) };
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

async function manifestFiles(path: string): Promise<string[]> {
  const info = await stat(path);
  if (!info.isDirectory()) return [path];
  const entries = await readdir(path, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile() && /\.(ya?ml|json)$/.test(e.name))
    .map((e) => join(e.parentPath, e.name))
    .sort();
}

/** Reads `-f` arguments: files, or folders searched for .yaml, .yml and .json files. */
export async function readManifestPaths(paths: readonly string[]): Promise<ManifestSet> {
  const set = emptyManifestSet();
  const errors: CompileError[] = [];
  for (const path of paths) {
    let files: string[];
    try {
      files = await manifestFiles(path);
    } catch (error) {
      throw new CompileError('parse_error', `cannot read: ${error instanceof Error ? error.message : String(error)}`, { file: path });
    }
    for (const file of files) {
      try {
        parseManifests(await readFile(file, 'utf8'), file, set);
      } catch (error) {
        if (!(error instanceof CompileErrors)) throw error;
        errors.push(...error.errors);
      }
    }
  }
  if (errors.length > 0) throw new CompileErrors(errors);
  return set;
}
