// Which tool and action a request on the wire is: the `spec.tools` declarations
// of the tenant's ToolPolicies (DESIGN.md). The compiled bundle does not carry
// them yet, so the sidecar reads the same declarations from a file given with
// --tools (a YAML or JSON list of ToolDeclaration). Pure.
import { parse } from 'yaml';
import type { ToolAction, ToolDeclaration } from '../api/index.ts';

export class ToolTableError extends Error {
  override readonly name = 'ToolTableError';
}

export interface HttpRoute {
  tool: string;
  host: string;
  port?: number;
  actions: ToolAction[];
}

export interface ToolTable {
  routes: HttpRoute[];
}

export type RouteMatch =
  /** A declared tool and, when the tool declares actions, the action. */
  | { kind: 'tool'; tool: string; action?: string }
  /** The tool is declared but declares no action for this method and path. */
  | { kind: 'unknown-action'; tool: string }
  /** No tool is declared at this host and port: an egress check. */
  | { kind: 'egress' };

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE']);

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function checkAction(action: unknown, where: string): ToolAction {
  if (!isRecord(action) || typeof action.name !== 'string' || typeof action.path !== 'string' || typeof action.method !== 'string' || !METHODS.has(action.method)) {
    throw new ToolTableError(`${where}: an action needs a name, a method (${[...METHODS].join(', ')}) and a path`);
  }
  if (!action.path.startsWith('/')) throw new ToolTableError(`${where}: the path ${action.path} must start with /`);
  return { name: action.name, method: action.method as ToolAction['method'], path: action.path };
}

/** Reads a tool table from the text of a --tools file. MCP declarations are kept out until the sidecar inspects MCP. */
export function parseToolTable(text: string): ToolTable {
  const declarations: unknown = parse(text);
  if (!Array.isArray(declarations)) throw new ToolTableError('the tools file must hold a list of tool declarations (the shape of ToolPolicy spec.tools)');
  const routes: HttpRoute[] = [];
  const names = new Set<string>();
  declarations.forEach((declaration: unknown, i) => {
    const where = `tools[${i}]`;
    if (!isRecord(declaration) || typeof declaration.name !== 'string') throw new ToolTableError(`${where}: a tool needs a name`);
    if (names.has(declaration.name)) throw new ToolTableError(`${where}: the tool ${declaration.name} is declared twice`);
    names.add(declaration.name);
    const http = (declaration as Partial<ToolDeclaration>).http;
    if (http === undefined) return;
    if (!isRecord(http) || typeof http.host !== 'string') throw new ToolTableError(`${where}.http: needs a host`);
    const actions = (http.actions ?? []).map((a, j) => checkAction(a, `${where}.http.actions[${j}]`));
    routes.push({ tool: declaration.name, host: http.host.toLowerCase(), ...(http.port === undefined ? {} : { port: http.port }), actions });
  });
  return { routes };
}

function pathMatches(pattern: string, path: string): boolean {
  if (pattern.endsWith('/*')) return path.startsWith(pattern.slice(0, -1));
  return path === pattern;
}

/** The tool and action of a request to host:port with this method and path (the path without its query). */
export function matchRoute(table: ToolTable, request: { host: string; port: number; method: string; path: string }): RouteMatch {
  const route = table.routes.find((r) => r.host === request.host && (r.port === undefined || r.port === request.port));
  if (route === undefined) return { kind: 'egress' };
  if (route.actions.length === 0) return { kind: 'tool', tool: route.tool };
  const action = route.actions.find((a) => a.method === request.method && pathMatches(a.path, request.path));
  return action === undefined ? { kind: 'unknown-action', tool: route.tool } : { kind: 'tool', tool: route.tool, action: action.name };
}
