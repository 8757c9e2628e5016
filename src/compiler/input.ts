// The authorization call (DESIGN.md, "The authorization contract"): its shape,
// checked strictly. A call that does not have this shape is an error, never a
// call that some default lets through.
import { InputError } from './errors.ts';
import type { Scalar } from './ir.ts';

export interface CallCounters {
  /** tool → window as written in callsOver (e.g. "1h") → calls in that window before this one. */
  calls: Record<string, Record<string, number>>;
  /** Rate-limit bucket key (tool, or tool/action) → tokens left before this call. */
  rate: Record<string, number>;
  /** tool → US dollars spent today before this call. */
  spentUSD: Record<string, number>;
}

export interface AuthorizationInput {
  namespace: string;
  agent: string;
  tool?: string;
  action?: string;
  params?: Record<string, unknown>;
  user?: { id?: string; attributes?: Record<string, Scalar> };
  delegation?: string[];
  /** RFC 3339. */
  time?: string;
  egress?: { host: string; port: number };
  counters?: Partial<CallCounters>;
}

/** The call with every optional part filled in, as the decision program reads it. */
export interface NormalizedCall {
  namespace: string;
  agent: string;
  tool?: string;
  action?: string;
  params: Record<string, unknown>;
  user: { id?: string; attributes: Record<string, Scalar> };
  delegation: string[];
  time: string;
  egress?: { host: string; port: number };
  counters: CallCounters;
}

const TOP_LEVEL = new Set(['namespace', 'agent', 'tool', 'action', 'params', 'user', 'delegation', 'time', 'egress', 'counters']);
const MAX_DEPTH = 64;
const NAME = /^[A-Za-z0-9][A-Za-z0-9_.:/-]*$/;
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const HOST = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;

function isObject(value: unknown): value is Record<string, unknown> {
  if (value === null || typeof value !== 'object') return false;
  const prototype: unknown = Object.getPrototypeOf(value);
  return prototype === Object.prototype || prototype === null;
}

function fail(field: string, detail: string): never {
  throw new InputError(field, detail);
}

function checkKeys(value: Record<string, unknown>, allowed: ReadonlySet<string>, field: string): void {
  for (const key of Object.keys(value)) {
    if (!allowed.has(key)) fail(field === '' ? key : `${field}.${key}`, `unknown field (expected one of: ${[...allowed].join(', ')})`);
  }
}

/** JSON values only (what the wire can carry): no undefined, functions, NaN or cycles; bounded depth. */
function checkJson(value: unknown, field: string, depth: number): void {
  if (depth > MAX_DEPTH) fail(field, `nested deeper than ${MAX_DEPTH}`);
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return;
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) fail(field, 'numbers must be finite');
    return;
  }
  if (Array.isArray(value)) {
    value.forEach((item, i) => {
      checkJson(item, `${field}[${i}]`, depth + 1);
    });
    return;
  }
  if (isObject(value)) {
    for (const [k, v] of Object.entries(value)) checkJson(v, `${field}.${k}`, depth + 1);
    return;
  }
  fail(field, `${typeof value} is not a JSON value`);
}

function requireString(value: unknown, field: string, pattern: RegExp, what: string): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > 253 || !pattern.test(value)) fail(field, `must be ${what}`);
  return value;
}

function optionalString(value: unknown, field: string, pattern: RegExp, what: string): string | undefined {
  return value === undefined ? undefined : requireString(value, field, pattern, what);
}

function numberMap(value: unknown, field: string): Record<string, number> {
  if (value === undefined) return {};
  if (!isObject(value)) fail(field, 'must be an object of numbers');
  for (const [k, v] of Object.entries(value)) {
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) fail(`${field}.${k}`, 'must be a number >= 0');
  }
  return value as Record<string, number>;
}

function parseCounters(value: unknown): CallCounters {
  if (value === undefined) return { calls: {}, rate: {}, spentUSD: {} };
  if (!isObject(value)) fail('counters', 'must be an object');
  checkKeys(value, new Set(['calls', 'rate', 'spentUSD']), 'counters');
  const calls: Record<string, Record<string, number>> = {};
  if (value.calls !== undefined) {
    if (!isObject(value.calls)) fail('counters.calls', 'must map tools to {window: count}');
    for (const [tool, windows] of Object.entries(value.calls)) {
      Object.defineProperty(calls, tool, { value: numberMap(windows, `counters.calls.${tool}`), enumerable: true });
    }
  }
  return { calls, rate: numberMap(value.rate, 'counters.rate'), spentUSD: numberMap(value.spentUSD, 'counters.spentUSD') };
}

function parseUser(value: unknown): NormalizedCall['user'] {
  if (value === undefined) return { attributes: {} };
  if (!isObject(value)) fail('user', 'must be an object');
  checkKeys(value, new Set(['id', 'attributes']), 'user');
  if (value.id !== undefined && typeof value.id !== 'string') fail('user.id', 'must be a string');
  const attributes = value.attributes ?? {};
  if (!isObject(attributes)) fail('user.attributes', 'must be an object');
  for (const [k, v] of Object.entries(attributes)) {
    const ok = typeof v === 'string' || typeof v === 'boolean' || (typeof v === 'number' && Number.isFinite(v));
    if (!ok) fail(`user.attributes.${k}`, 'must be a string, a number or a boolean');
  }
  const user: NormalizedCall['user'] = { attributes: attributes as Record<string, Scalar> };
  if (typeof value.id === 'string') user.id = value.id;
  return user;
}

function parseEgress(value: unknown): { host: string; port: number } {
  if (!isObject(value)) fail('egress', 'must be an object {host, port}');
  checkKeys(value, new Set(['host', 'port']), 'egress');
  const raw = typeof value.host === 'string' ? value.host.toLowerCase().replace(/\.$/, '') : '';
  const host = requireString(raw, 'egress.host', HOST, 'a host name (no scheme, port or path)');
  const port = value.port;
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) fail('egress.port', 'must be an integer port 1..65535');
  return { host, port };
}

function parseTime(value: unknown, now: () => Date): string {
  if (value === undefined) return now().toISOString();
  if (typeof value !== 'string' || !RFC3339.test(value) || Number.isNaN(Date.parse(value.toUpperCase()))) {
    fail('time', 'must be an RFC 3339 time such as 2026-11-23T14:00:00Z');
  }
  return value;
}

/** Checks and normalizes a call. Throws InputError naming the field. */
export function normalizeInput(value: unknown, now: () => Date = () => new Date()): NormalizedCall {
  if (!isObject(value)) fail('', 'the call must be a JSON object');
  checkKeys(value, TOP_LEVEL, '');
  const namespace = requireString(value.namespace, 'namespace', DNS_LABEL, 'a namespace name');
  const agent = requireString(value.agent, 'agent', DNS_LABEL, 'an agent name');
  const call: NormalizedCall = {
    namespace,
    agent,
    params: {},
    user: parseUser(value.user),
    delegation: [],
    time: parseTime(value.time, now),
    counters: parseCounters(value.counters),
  };
  if (value.delegation !== undefined) {
    if (!Array.isArray(value.delegation) || value.delegation.some((a) => typeof a !== 'string')) fail('delegation', 'must be a list of agent names');
    if (value.delegation.length > 64) fail('delegation', 'must hold at most 64 agents');
    call.delegation = value.delegation as string[];
  }
  if (value.egress !== undefined) {
    for (const field of ['tool', 'action', 'params']) {
      if (value[field] !== undefined) fail(field, 'an egress check has egress in place of tool, action and params');
    }
    call.egress = parseEgress(value.egress);
    return call;
  }
  call.tool = requireString(value.tool, 'tool', NAME, 'a tool name (or give egress for an egress check)');
  const action = optionalString(value.action, 'action', NAME, 'an action name');
  if (action !== undefined) call.action = action;
  if (value.params !== undefined) {
    if (!isObject(value.params)) fail('params', 'must be a JSON object');
    checkJson(value.params, 'params', 0);
    call.params = value.params;
  }
  return call;
}
