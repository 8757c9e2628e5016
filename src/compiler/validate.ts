// Offline validation of Portcullis resources: the CRD's OpenAPI schema (with
// unknown fields rejected, as the API server prunes and kubectl --validate=strict
// rejects them), then the rules the CRDs state in CEL and the ones CEL cannot
// express, re-implemented here, plus RE2 syntax of every regex.
import type { ErrorObject, ValidateFunction } from 'ajv';
import { Ajv } from 'ajv';
import { RE2JS } from 're2js';
import { CRDS } from '../api/crds.ts';
import { REDACTION_DETECTORS } from '../api/index.ts';
import { renderCrd } from '../api/render.ts';
import type { Schema } from '../api/openapi.ts';
import { parseDuration } from './durations.ts';
import type { CompileErrorCode } from './errors.ts';
import { CompileError } from './errors.ts';
import { clockMinutes, isKnownTimeZone } from './time-zones.ts';

export const RESOURCE_KINDS = ['AgentIdentity', 'ToolPolicy', 'EgressRule', 'ApprovalRequest'] as const;
export type ResourceKind = (typeof RESOURCE_KINDS)[number];

type Path = readonly (string | number)[];
type Json = Record<string, unknown>;

/** Renders a path as users read it: spec.rules[0].when[1].max. */
export function fieldPath(path: Path): string {
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? p : `.${p}`)).join('');
}

/** The OpenAPI schema as JSON Schema for ajv: unknown fields rejected, sets unique, Kubernetes extensions dropped. */
function toJsonSchema(schema: Schema): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(schema)) {
    if (key.startsWith('x-kubernetes-') || key === 'format' || key === 'title' || key === 'tsType') continue;
    if (key === 'properties' && value !== undefined) {
      out.properties = Object.fromEntries(Object.entries(value as Record<string, Schema>).map(([k, v]) => [k, toJsonSchema(v)]));
    } else if (key === 'items' && value !== undefined) {
      out.items = toJsonSchema(value as Schema);
    } else if (key === 'additionalProperties' && typeof value === 'object') {
      out.additionalProperties = toJsonSchema(value as Schema);
    } else if (key === 'exclusiveMinimum' && value === true) {
      out.exclusiveMinimum = schema.minimum;
    } else if (key !== 'minimum' || schema.exclusiveMinimum !== true) {
      out[key] = value;
    }
  }
  if (schema.properties !== undefined && schema['x-kubernetes-preserve-unknown-fields'] !== true) {
    out.additionalProperties = false;
  }
  if (schema['x-kubernetes-list-type'] === 'set') out.uniqueItems = true;
  return out;
}

const ajv = new Ajv({ allErrors: true, strict: false, validateFormats: false });
const validators = new Map<string, ValidateFunction>();

function validatorFor(kind: ResourceKind): ValidateFunction {
  let validate = validators.get(kind);
  if (validate === undefined) {
    const source = CRDS.find((crd) => crd.kind === kind);
    if (source === undefined) throw new Error(`no CRD for kind ${kind}`);
    const [version] = renderCrd(source).spec.versions;
    if (version === undefined) throw new Error(`CRD ${kind} has no version`);
    validate = ajv.compile(toJsonSchema(version.schema.openAPIV3Schema));
    validators.set(kind, validate);
  }
  return validate;
}

function pathOf(error: ErrorObject): (string | number)[] {
  const segments = error.instancePath
    .split('/')
    .slice(1)
    .map((s) => s.replaceAll('~1', '/').replaceAll('~0', '~'))
    .map((s) => (/^[0-9]+$/.test(s) ? Number(s) : s));
  if (error.keyword === 'additionalProperties') {
    const extra = (error.params as { additionalProperty?: string }).additionalProperty;
    if (extra !== undefined) segments.push(extra);
  }
  return segments;
}

function messageOf(error: ErrorObject): string {
  if (error.keyword === 'additionalProperties') return 'unknown field';
  if (error.keyword === 'uniqueItems') return 'items must be unique';
  return error.message ?? error.keyword;
}

/** Collects problems of one resource, each with its field and (inside spec.rules) its rule name. */
class Problems {
  readonly list: CompileError[] = [];
  /** The RE2 instructions of the resource's regexes so far. */
  regexInstructions = 0;
  private readonly resource: string;
  private readonly object: Json;

  constructor(resource: string, object: Json) {
    this.resource = resource;
    this.object = object;
  }

  add(path: Path, detail: string, code: CompileErrorCode = 'schema_error'): void {
    this.list.push(new CompileError(code, detail, { resource: this.resource, rule: this.ruleAt(path), field: fieldPath(path) }));
  }

  private ruleAt(path: Path): string | undefined {
    if (path[0] !== 'spec' || path[1] !== 'rules' || typeof path[2] !== 'number') return undefined;
    const rules = (this.object.spec as Json | undefined)?.rules;
    const rule: unknown = Array.isArray(rules) ? rules[path[2]] : undefined;
    const name = isObject(rule) ? rule.name : undefined;
    return typeof name === 'string' ? name : `#${path[2]}`;
  }
}

function isObject(value: unknown): value is Json {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function isScalar(value: unknown): value is string | number | boolean {
  return typeof value === 'string' || (typeof value === 'number' && Number.isFinite(value)) || typeof value === 'boolean';
}

function list(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [];
}

function objects(value: unknown): [number, Json][] {
  return list(value).flatMap((item, i): [number, Json][] => (isObject(item) ? [[i, item]] : []));
}

/**
 * How large a regex may compile. RE2 bounds repetition counts, but a bounded
 * repetition of a large class (`[\p{L}\p{N}]{1000}`) still compiles to a
 * thousand instructions, and every sidecar of the tenant holds every regex
 * compiled: about 80 bytes an instruction, and time to compile at every
 * bundle load. So one regex may compile to at most 10,000 RE2 instructions
 * (`.{1,1000}` is 2,001), and one policy's regexes to at most 250,000 (about
 * 20 MB and half a second), as RE2's own max_mem bounds a program.
 */
export const MAX_REGEX_INSTRUCTIONS = 10_000;
export const MAX_POLICY_REGEX_INSTRUCTIONS = 250_000;

/** The size of the RE2 program of a pattern, or RE2's complaint when it rejects it. */
export function re2Program(pattern: string): { instructions: number } | { complaint: string } {
  try {
    return { instructions: RE2JS.compile(pattern).programSize() };
  } catch (error) {
    return { complaint: error instanceof Error ? error.message : String(error) };
  }
}

function checkDuration(problems: Problems, path: Path, value: unknown, min: string, max: string): void {
  if (typeof value !== 'string') return;
  const ms = parseDuration(value);
  const lo = parseDuration(min) ?? 0;
  const hi = parseDuration(max) ?? Number.POSITIVE_INFINITY;
  if (ms === undefined || ms < lo || ms > hi) problems.add(path, `must be a duration (such as 90s, 10m or 1h30m) between ${min} and ${max}`);
}

function checkTimeZone(problems: Problems, path: Path, value: unknown): void {
  if (typeof value === 'string' && !isKnownTimeZone(value)) {
    problems.add(path, `unknown time zone ${JSON.stringify(value)}: must be an IANA time zone name such as UTC or America/New_York`);
  }
}

function checkUniqueBy(problems: Problems, path: Path, items: unknown, key: string): void {
  const seen = new Set<unknown>();
  for (const [i, item] of objects(items)) {
    const value = item[key];
    if (seen.has(value)) problems.add([...path, i, key], `duplicate ${key} ${JSON.stringify(value)}`);
    seen.add(value);
  }
}

function checkSubjects(problems: Problems, spec: Json): void {
  const subjects = spec.subjects;
  if (!isObject(subjects)) return;
  if (list(subjects.agents).length === 0 && list(subjects.roles).length === 0) {
    problems.add(['spec', 'subjects'], 'must name at least one agent or role');
  }
}

const CONDITION_KINDS = ['param', 'time', 'callsOver', 'delegatedBy', 'delegationDepth', 'userAttribute', 'autonomyLevel', 'threat'];
export const PARAM_OPERATORS = ['equals', 'oneOf', 'notOneOf', 'regex', 'min', 'max', 'gt', 'lt', 'exists'] as const;

function checkParamCondition(problems: Problems, path: Path, condition: Json): void {
  const operators = PARAM_OPERATORS.filter((op) => op in condition);
  if (condition.param !== undefined && operators.length === 0) {
    problems.add(path, `param needs an operator: one or more of ${PARAM_OPERATORS.join(', ')}`);
  }
  if (condition.param === undefined && operators.length > 0) {
    problems.add([...path, operators[0] ?? ''], `${operators.join(', ')} go only with param`);
  }
  if ('equals' in condition && !isScalar(condition.equals)) problems.add([...path, 'equals'], 'must be a string, a number or a boolean');
  for (const op of ['oneOf', 'notOneOf'] as const) {
    for (const [i, item] of list(condition[op]).entries()) {
      if (!isScalar(item)) problems.add([...path, op, i], 'must be a string, a number or a boolean');
    }
  }
  const { min, max, gt, lt, regex } = condition;
  if (typeof min === 'number' && typeof max === 'number' && min > max) problems.add([...path, 'min'], 'min must not be greater than max');
  if (typeof gt === 'number' && typeof lt === 'number' && gt >= lt) problems.add([...path, 'gt'], 'gt must be less than lt');
  if (typeof regex === 'string') checkRegex(problems, [...path, 'regex'], regex);
}

function checkRegex(problems: Problems, path: Path, regex: string): void {
  const program = re2Program(regex);
  if ('complaint' in program) {
    problems.add(path, `RE2 rejects ${JSON.stringify(regex)}: ${program.complaint}`, 'regex_error');
  } else if (program.instructions > MAX_REGEX_INSTRUCTIONS) {
    problems.add(path, `${JSON.stringify(regex)} compiles to ${program.instructions} RE2 instructions, more than the ${MAX_REGEX_INSTRUCTIONS} one regex may (a large class repeated many times: bound it lower)`, 'regex_error');
  } else {
    problems.regexInstructions += program.instructions;
  }
}

function checkCondition(problems: Problems, path: Path, condition: Json): void {
  const kinds = CONDITION_KINDS.filter((k) => k in condition);
  if (kinds.length !== 1) problems.add(path, `must state exactly one of: ${CONDITION_KINDS.join(', ')} (found ${kinds.length === 0 ? 'none' : kinds.join(', ')})`);
  if (('userAttribute' in condition) !== ('equalsParam' in condition)) problems.add(path, 'userAttribute and equalsParam go together');
  checkParamCondition(problems, path, condition);
  const time = condition.time;
  if (isObject(time)) {
    const start = typeof time.start === 'string' ? clockMinutes(time.start) : undefined;
    const end = typeof time.end === 'string' ? clockMinutes(time.end) : undefined;
    if (start !== undefined && end !== undefined && start >= end) problems.add([...path, 'time'], 'start must be before end');
    checkTimeZone(problems, [...path, 'time', 'timeZone'], time.timeZone);
  }
  if (isObject(condition.callsOver)) checkDuration(problems, [...path, 'callsOver', 'window'], condition.callsOver.window, '1s', '744h');
}

function checkRedaction(problems: Problems, path: Path, item: unknown): void {
  if (typeof item === 'string' && (REDACTION_DETECTORS as readonly string[]).includes(item)) return;
  if (isObject(item) && Object.keys(item).length === 1 && typeof item.param === 'string' && /^[^.]+(\.[^.]+)*$/.test(item.param) && item.param.length <= 256) return;
  problems.add(path, `must be one of ${REDACTION_DETECTORS.join(', ')}, or {param: PATH}`);
}

function checkRule(problems: Problems, path: Path, rule: Json): void {
  if ('approval' in rule && rule.decision !== 'approval_needed') problems.add([...path, 'approval'], 'approval goes only with decision approval_needed');
  if (rule.decision === 'sanitize' && list(rule.redact).length === 0) problems.add([...path, 'redact'], 'sanitize needs at least one redact entry');
  if ('redact' in rule && rule.decision !== 'sanitize') problems.add([...path, 'redact'], 'redact goes only with decision sanitize');
  for (const [i, item] of list(rule.redact).entries()) checkRedaction(problems, [...path, 'redact', i], item);
  if ('redactResponse' in rule && rule.decision !== 'allow' && rule.decision !== 'sanitize') problems.add([...path, 'redactResponse'], 'redactResponse goes only with decision allow or sanitize');
  if (isObject(rule.approval)) checkDuration(problems, [...path, 'approval', 'ttl'], rule.approval.ttl, '1m', '168h');
  for (const [i, condition] of objects(rule.when)) checkCondition(problems, [...path, 'when', i], condition);
}

function checkFailOpen(problems: Problems, path: Path, action: Json): void {
  if ('failOpen' in action && action.readOnly !== true) problems.add([...path, 'failOpen'], 'failOpen goes only with readOnly: true');
}

function checkToolDeclaration(problems: Problems, path: Path, tool: Json): void {
  if (('http' in tool) === ('mcp' in tool)) problems.add(path, 'must declare exactly one of http or mcp');
  for (const kind of ['http', 'mcp'] as const) {
    const declared = tool[kind];
    if (!isObject(declared)) continue;
    checkUniqueBy(problems, [...path, kind, 'actions'], declared.actions, 'name');
    for (const [j, action] of objects(declared.actions)) checkFailOpen(problems, [...path, kind, 'actions', j], action);
  }
}

/** JWK members that only a private or symmetric key has: a JWKS that trusts tokens must hold none. */
const SECRET_JWK_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];
const PUBLIC_JWK_MEMBERS: Readonly<Record<string, readonly string[]>> = { RSA: ['n', 'e'], EC: ['crv', 'x', 'y'], OKP: ['crv', 'x'] };

function jwkProblem(key: Json): string | undefined {
  const secret = SECRET_JWK_MEMBERS.find((member) => member in key);
  if (secret !== undefined) return `holds ${secret}: only public keys may be written here, never a private or symmetric key`;
  const needed = typeof key.kty === 'string' && Object.hasOwn(PUBLIC_JWK_MEMBERS, key.kty) ? PUBLIC_JWK_MEMBERS[key.kty] : undefined;
  if (needed === undefined) return `kty ${JSON.stringify(key.kty)} is not RSA, EC or OKP`;
  const missing = needed.filter((member) => typeof key[member] !== 'string');
  if (missing.length > 0) return `a ${String(key.kty)} key needs ${missing.join(', ')} (strings)`;
  if (key.use !== undefined && key.use !== 'sig') return `use ${JSON.stringify(key.use)} is not sig`;
  return undefined;
}

function checkUserTokens(problems: Problems, spec: Json): void {
  const userTokens = spec.userTokens;
  if (!isObject(userTokens)) return;
  const path = ['spec', 'userTokens'];
  if (('jwksURL' in userTokens) === ('jwks' in userTokens)) problems.add(path, 'must state exactly one of jwksURL or jwks');
  const jwks = userTokens.jwks;
  if (!isObject(jwks)) return;
  for (const [i, key] of list(jwks.keys).entries()) {
    const problem = isObject(key) ? jwkProblem(key) : 'must be a JWK (an object)';
    if (problem !== undefined) problems.add([...path, 'jwks', 'keys', i], problem);
  }
}

function checkToolPolicy(problems: Problems, spec: Json): void {
  checkSubjects(problems, spec);
  checkUniqueBy(problems, ['spec', 'rules'], spec.rules, 'name');
  checkUniqueBy(problems, ['spec', 'tools'], spec.tools, 'name');
  checkUniqueBy(problems, ['spec', 'rego'], spec.rego, 'name');
  for (const [i, rule] of objects(spec.rules)) checkRule(problems, ['spec', 'rules', i], rule);
  for (const [i, tool] of objects(spec.tools)) checkToolDeclaration(problems, ['spec', 'tools', i], tool);
  for (const [i, budget] of objects(spec.budgets)) {
    if (('costParam' in budget) === ('costPerCall' in budget)) problems.add(['spec', 'budgets', i], 'must state exactly one of costParam or costPerCall');
    checkTimeZone(problems, ['spec', 'budgets', i, 'timeZone'], budget.timeZone);
  }
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

function checkMetadata(problems: Problems, object: Json): void {
  const metadata = object.metadata;
  if (!isObject(metadata)) {
    problems.add(['metadata'], 'required');
    return;
  }
  if (typeof metadata.name !== 'string' || metadata.name.length > 63 || !DNS_LABEL.test(metadata.name)) {
    problems.add(['metadata', 'name'], 'must be a DNS label (lowercase letters, digits and -, at most 63 characters)');
  }
  if (metadata.namespace !== undefined && (typeof metadata.namespace !== 'string' || !DNS_LABEL.test(metadata.namespace))) {
    problems.add(['metadata', 'namespace'], 'must be a DNS label');
  }
}

/** Every problem of one resource, in the order a reader meets them. Empty when it is valid. */
export function validateResource(kind: ResourceKind, object: Json, resource: string): CompileError[] {
  const problems = new Problems(resource, object);
  checkMetadata(problems, object);
  const validate = validatorFor(kind);
  if (!validate(object)) {
    for (const error of validate.errors ?? []) problems.add(pathOf(error), messageOf(error));
    return problems.list;
  }
  const spec = object.spec as Json;
  if (kind === 'ToolPolicy') {
    checkToolPolicy(problems, spec);
    if (problems.regexInstructions > MAX_POLICY_REGEX_INSTRUCTIONS) {
      problems.add(['spec', 'rules'], `the policy's regexes compile to ${problems.regexInstructions} RE2 instructions, more than the ${MAX_POLICY_REGEX_INSTRUCTIONS} one policy may: every sidecar of the tenant holds them compiled`, 'regex_error');
    }
  }
  if (kind === 'EgressRule') checkSubjects(problems, spec);
  if (kind === 'AgentIdentity') {
    checkDuration(problems, ['spec', 'tokenTTL'], spec.tokenTTL, '1m', '24h');
    checkUserTokens(problems, spec);
  }
  return problems.list;
}
