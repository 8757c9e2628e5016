// Which tool and action a request on the wire is: the tool declarations the
// loaded bundle carries (ToolPolicy spec.tools, DESIGN.md), so a changed
// declaration reaches the sidecar with the bundle. Pure.
import type { ToolData } from '../compiler/index.ts';
import { foldName } from './request-target.ts';

export class ToolTableError extends Error {
  override readonly name = 'ToolTableError';
}

interface ActionRoute {
  name: string;
  method: string;
  path: string;
}

export interface HttpRoute {
  tool: string;
  host: string;
  port?: number;
  /** Most specific first: exact paths, then /* prefixes from the longest. */
  actions: ActionRoute[];
}

export interface McpRoute {
  tool: string;
  host: string;
  port?: number;
  /** The endpoint path (a trailing /* matches any suffix); absent: every path of the host. */
  path?: string;
}

export interface ToolTable {
  /** Port-specific routes first, then the most specific endpoint path. */
  mcp: McpRoute[];
  /** Port-specific routes first. */
  http: HttpRoute[];
  /**
   * The parameter paths the policies read, and every prefix of them: by the
   * path folded (foldName of each name), the paths as written.
   */
  readPaths: ReadonlyMap<string, ReadonlySet<string>>;
}

export const NO_TOOLS: ToolTable = { mcp: [], http: [], readPaths: new Map() };

/** A parameter path as a map key: names may hold dots, so they are not joined with one. */
const pathKey = (path: readonly string[]): string => JSON.stringify(path);

function readPathsOf(paths: readonly (readonly string[])[]): Map<string, Set<string>> {
  const read = new Map<string, Set<string>>();
  for (const path of paths) {
    for (let end = 1; end <= path.length; end++) {
      const prefix = path.slice(0, end);
      const folded = pathKey(prefix.map(foldName));
      const written = read.get(folded) ?? new Set<string>();
      written.add(pathKey(prefix));
      read.set(folded, written);
    }
  }
  return read;
}

/**
 * How a parameter path is read: 'read' when the policies read it (or deeper)
 * as written, 'other' when they read nothing there; else the path the
 * policies read that it differs from only in letter case, which a tool that
 * matches names case-insensitively would take it for.
 */
export function readAs(table: ToolTable, path: readonly string[]): 'read' | 'other' | { caseOf: string } {
  const written = table.readPaths.get(pathKey(path.map(foldName)));
  if (written === undefined) return 'other';
  if (written.has(pathKey(path))) return 'read';
  const [first = '[]'] = written;
  return { caseOf: (JSON.parse(first) as string[]).join('.') };
}

/**
 * Why a call's params cannot be judged: a parameter whose path differs only in
 * letter case from one the policies read (`Name` where a rule reads `name`). A
 * tool that matches names case-insensitively would act on it, while the policy
 * judged its absence. Walks only along paths the policies read; undefined when
 * there is no such parameter.
 */
export function caseVariantReason(table: ToolTable, params: Record<string, unknown>, path: readonly string[] = []): string | undefined {
  for (const [name, value] of Object.entries(params)) {
    const at = [...path, name];
    const read = readAs(table, at);
    if (typeof read === 'object') return `the parameter ${at.join('.')} differs only in letter case from ${read.caseOf}, which the policy reads`;
    if (read === 'read' && value !== null && typeof value === 'object' && !Array.isArray(value)) {
      const inner = caseVariantReason(table, value as Record<string, unknown>, at);
      if (inner !== undefined) return inner;
    }
  }
  return undefined;
}

export type RouteMatch =
  /** A declared HTTP tool and, when the tool declares actions, the action. */
  | { kind: 'tool'; tool: string; action?: string }
  /** A declared MCP endpoint: the JSON-RPC message names the action. */
  | { kind: 'mcp'; tool: string }
  /** The tool is declared but declares no action for this method and path. */
  | { kind: 'unknown-action'; tool: string }
  /** The host declares tools, and this request is none of them unambiguously: refused with the reason. */
  | { kind: 'refused'; reason: string }
  /** No tool is declared at this host: an egress check. */
  | { kind: 'egress' };

/** Whether a host is a tool's: declared, named under another name of the same service, or neither. */
export type HostOwner = { kind: 'declared' } | { kind: 'alias'; declared: string } | { kind: 'none' };

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE']);
const HOST = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function checkHost(value: unknown, where: string): string {
  if (typeof value !== 'string' || !HOST.test(value)) throw new ToolTableError(`${where}.host: must be a lower-case host name`);
  return value;
}

function checkPort(value: unknown, where: string): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > 65535) throw new ToolTableError(`${where}.port: must be a port 1..65535`);
  return value;
}

function checkPath(value: unknown, where: string): string {
  if (typeof value !== 'string' || !value.startsWith('/')) throw new ToolTableError(`${where}: must be a path starting with /`);
  return value;
}

function checkAction(action: unknown, where: string): ActionRoute {
  if (!isRecord(action) || typeof action.name !== 'string' || action.name === '' || typeof action.method !== 'string' || !METHODS.has(action.method)) {
    throw new ToolTableError(`${where}: an action needs a name and a method (${[...METHODS].join(', ')})`);
  }
  return { name: action.name, method: action.method, path: checkPath(action.path, `${where}.path`) };
}

/** Exact paths before /* prefixes, longer prefixes before shorter: the most specific declaration wins. */
function specificity(path: string | undefined): number {
  if (path === undefined) return 0;
  return path.endsWith('/*') ? path.length : Number.MAX_SAFE_INTEGER;
}

const byPortThenPath = (a: { port?: number; path?: string }, b: { port?: number; path?: string }): number =>
  Number(a.port === undefined) - Number(b.port === undefined) || specificity(b.path) - specificity(a.path);

/**
 * The routing table of a bundle's tool declarations. The bundle is signed, but
 * its data is still read as outside input: a malformed declaration throws a
 * ToolTableError naming it, so the bundle is refused at load, not call by call.
 */
export function toolTable(declarations: readonly unknown[], paramPaths: readonly (readonly string[])[] = []): ToolTable {
  const table: ToolTable = { mcp: [], http: [], readPaths: readPathsOf(paramPaths) };
  const names = new Set<string>();
  declarations.forEach((declaration: unknown, i) => {
    const where = `tools[${i}]`;
    if (!isRecord(declaration) || typeof declaration.name !== 'string' || declaration.name === '') throw new ToolTableError(`${where}: a tool needs a name`);
    const tool = declaration.name;
    if (names.has(tool)) throw new ToolTableError(`${where}: the tool ${tool} is declared twice`);
    names.add(tool);
    const { http, mcp } = declaration;
    if ((http === undefined) === (mcp === undefined)) throw new ToolTableError(`${where}: must declare exactly one of http or mcp`);
    if (isRecord(http)) {
      const port = checkPort(http.port, `${where}.http`);
      if (http.actions !== undefined && !Array.isArray(http.actions)) throw new ToolTableError(`${where}.http.actions: must be a list`);
      const actions = ((http.actions ?? []) as unknown[]).map((a, j) => checkAction(a, `${where}.http.actions[${j}]`));
      actions.sort((a, b) => specificity(b.path) - specificity(a.path));
      table.http.push({ tool, host: checkHost(http.host, `${where}.http`), ...(port === undefined ? {} : { port }), actions });
    } else if (isRecord(mcp)) {
      const port = checkPort(mcp.port, `${where}.mcp`);
      const path = mcp.path === undefined ? undefined : checkPath(mcp.path, `${where}.mcp.path`);
      table.mcp.push({ tool, host: checkHost(mcp.host, `${where}.mcp`), ...(port === undefined ? {} : { port }), ...(path === undefined ? {} : { path }) });
    } else {
      throw new ToolTableError(`${where}: http or mcp must be an object`);
    }
  });
  table.http.sort(byPortThenPath);
  table.mcp.sort(byPortThenPath);
  return table;
}

/** What a loaded bundle says of its tools: their declarations, and the parameter paths its policies read. */
export interface ToolDeclarations {
  readonly tools?: readonly ToolData[];
  readonly paramPaths?: readonly (readonly string[])[];
}

const tables = new WeakMap<ToolDeclarations, ToolTable>();

/** The routing table of a loaded policy, built once per bundle; no tools without a policy. */
export function toolTableOf(policy: ToolDeclarations | undefined): ToolTable {
  if (policy === undefined) return NO_TOOLS;
  let table = tables.get(policy);
  if (table === undefined) {
    const declarations: readonly ToolData[] = policy.tools ?? [];
    table = toolTable(declarations, policy.paramPaths ?? []);
    tables.set(policy, table);
  }
  return table;
}

function pathMatches(pattern: string | undefined, path: string): boolean {
  if (pattern === undefined) return true;
  if (pattern.endsWith('/*')) return path.startsWith(pattern.slice(0, -1));
  return path === pattern;
}

/** Without letter case and a trailing slash, which many servers ignore when they route. */
function loose(path: string): string {
  const lower = path.toLowerCase();
  return lower.length > 1 && lower.endsWith('/') ? lower.slice(0, -1) : lower;
}

/** Whether a server that ignores letter case and a trailing slash could route this path to the pattern. */
function looselyMatches(pattern: string | undefined, path: string): boolean {
  if (pattern === undefined) return true;
  if (pattern.endsWith('/*')) return path.toLowerCase().startsWith(pattern.slice(0, -1).toLowerCase());
  return loose(path) === loose(pattern);
}

const atHost = (host: string, port: number) => (route: { host: string; port?: number }): boolean => route.host === host && (route.port === undefined || route.port === port);

/**
 * Whether a host (lower-case, without a trailing dot) belongs to a tool. A
 * name that extends a declared host by domains (payments.tools.svc.cluster.local)
 * or that a declared host extends (payments.tools, completed by the resolver's
 * search domains) reaches the same service under another name: it is an alias.
 */
export function hostOwner(table: ToolTable, host: string): HostOwner {
  const hosts = [...table.mcp, ...table.http].map((route) => route.host);
  if (hosts.includes(host)) return { kind: 'declared' };
  const declared = hosts.find((name) => host.startsWith(`${name}.`) || name.startsWith(`${host}.`));
  return declared === undefined ? { kind: 'none' } : { kind: 'alias', declared };
}

type Target = Exclude<RouteMatch, { kind: 'unknown-action' | 'refused' | 'egress' }>;

const sameTarget = (a: Target, b: Target): boolean => a.kind === b.kind && a.tool === b.tool && (a.kind === 'mcp' || b.kind === 'mcp' || a.action === b.action);
const targetName = (target: Target): string => (target.kind === 'tool' && target.action !== undefined ? `${target.tool}/${target.action}` : target.tool);

/**
 * A declared route the path does not match but a server that ignores letter
 * case and a trailing slash would take it for, leading elsewhere than the
 * route it matches: the reason to refuse it, or undefined.
 */
function looseConflict(table: ToolTable, request: { host: string; port: number; method: string; path: string }, matched: Target): string | undefined {
  const at = atHost(request.host, request.port);
  const candidates: { pattern: string | undefined; target: Target }[] = table.mcp.filter(at).map((r) => ({ pattern: r.path, target: { kind: 'mcp', tool: r.tool } }));
  for (const route of table.http.filter(at)) {
    for (const action of route.actions) {
      if (action.method === request.method) candidates.push({ pattern: action.path, target: { kind: 'tool', tool: route.tool, action: action.name } });
    }
  }
  const conflict = candidates.find(({ pattern, target }) => !pathMatches(pattern, request.path) && looselyMatches(pattern, request.path) && !sameTarget(target, matched));
  if (conflict === undefined) return undefined;
  return `the path ${request.path} differs from the declared ${conflict.pattern ?? ''} only in letter case or a trailing slash: a server that ignores those would run ${targetName(conflict.target)}, not ${targetName(matched)}`;
}

function strictMatch(table: ToolTable, request: { host: string; port: number; method: string; path: string }): RouteMatch {
  const at = atHost(request.host, request.port);
  const mcp = table.mcp.find((r) => at(r) && pathMatches(r.path, request.path));
  if (mcp !== undefined) return { kind: 'mcp', tool: mcp.tool };
  const route = table.http.find(at);
  if (route === undefined) {
    const endpoint = table.mcp.find(at);
    if (endpoint !== undefined) return { kind: 'unknown-action', tool: endpoint.tool };
    return { kind: 'refused', reason: `the host ${request.host} declares tools on other ports than ${request.port}` };
  }
  if (route.actions.length === 0) return { kind: 'tool', tool: route.tool };
  const action = route.actions.find((a) => a.method === request.method && pathMatches(a.path, request.path));
  return action === undefined ? { kind: 'unknown-action', tool: route.tool } : { kind: 'tool', tool: route.tool, action: action.name };
}

/**
 * The tool and action of a request to host:port with this method and path (the
 * path without its query, in normal form: request-target.ts). A host that
 * declares any tool never falls back to egress: a request to it is one of its
 * routes, or an unknown action, or refused. An MCP endpoint is matched before
 * an HTTP tool of the same host, on its exact path (or its /* prefix): /MCP,
 * /mcp/ are not /mcp. A path that differs from a declared route only in letter
 * case or a trailing slash, where that route leads elsewhere, is refused.
 */
export function matchRoute(table: ToolTable, request: { host: string; port: number; method: string; path: string }): RouteMatch {
  const owner = hostOwner(table, request.host);
  if (owner.kind === 'none') return { kind: 'egress' };
  if (owner.kind === 'alias') return { kind: 'refused', reason: `the host ${request.host} names the tool host ${owner.declared} under another name: call it as ${owner.declared}` };
  const match = strictMatch(table, request);
  if (match.kind !== 'tool' && match.kind !== 'mcp') return match;
  const conflict = looseConflict(table, request, match);
  return conflict === undefined ? match : { kind: 'refused', reason: conflict };
}
