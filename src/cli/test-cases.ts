// portcullis test: policy test cases, like opa test. A cases file is YAML:
//
//   cases:
//     - name: a small payment in USD is allowed
//       input: { namespace: finance, agent: finance-agent, tool: stripe-payments, ... }
//       expect: { decision: allow, rule: small-payments }   # and policy, enforced, reasons, params, redacted, approval
//
// Every case runs through the same decision core as eval and the sidecar.
import { isDeepStrictEqual, parseArgs } from 'node:util';
import { parse } from 'yaml';
import type { AuthorizationDecision } from '../compiler/index.ts';
import { canonicalJson, InputError, readManifestPaths } from '../compiler/index.ts';
import type { CliIo } from './io.ts';
import { UsageError } from './io.ts';
import { namespaceOf, TenantEvaluators } from './tenants.ts';

export const TEST_USAGE = `Usage: portcullis test -f FILE|DIR [-f ...] CASES.yaml [...]

Runs policy test cases: each case is a call and the answer it must get.

Flags:
  -f, --filename FILE|DIR   manifests: YAML files, or folders of them (repeatable)
  -v, --verbose             print passing cases too
  -h, --help                show this text

A cases file holds cases: [{name, input, expect}]. In expect, decision is
required; every other field given must match the answer:
  rule, policy, enforced   as in the answer
  reasons                  the answer's reasons, all of them, in order: each item
                           the reason itself, or {contains: TEXT} for a reason
                           that contains TEXT
  params                   the sanitized parameters, exactly
  redacted                 what was redacted, as PATH:DETECTOR, in any order
  approval                 the approval key, or true (there is one) or false (none)

Exit status: 0 every case passed, 1 a case failed, 2 a cases file or flag is wrong.
`;

const DECISIONS = ['allow', 'deny', 'sanitize', 'approval_needed'];
const EXPECT_FIELDS = ['decision', 'rule', 'policy', 'enforced', 'reasons', 'params', 'redacted', 'approval'];

/** One reason of the answer: exactly this text, or one that contains it. */
export type ReasonExpectation = string | { contains: string };

export interface Expectation {
  decision: AuthorizationDecision['decision'];
  rule?: string;
  policy?: string | null;
  enforced?: boolean;
  reasons?: ReasonExpectation[];
  params?: unknown;
  redacted?: string[];
  /** The approval key, or whether there is one. */
  approval?: string | boolean;
}

export interface TestCase {
  file: string;
  name: string;
  input: unknown;
  expect: Expectation;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function reasonExpectation(value: unknown, where: string): ReasonExpectation {
  if (typeof value === 'string') return value;
  if (isObject(value) && Object.keys(value).length === 1 && typeof value.contains === 'string') return { contains: value.contains };
  throw new UsageError(`${where}: each of expect.reasons must be a string, or {contains: TEXT}`);
}

/** The fields of expect beyond decision, rule, policy and enforced: what the answer carries. */
function answerExpectation(value: Record<string, unknown>, where: string): Pick<Expectation, 'reasons' | 'params' | 'redacted' | 'approval'> {
  const out: Pick<Expectation, 'reasons' | 'params' | 'redacted' | 'approval'> = {};
  const { reasons, params, redacted, approval } = value;
  if (reasons !== undefined) {
    if (!Array.isArray(reasons)) throw new UsageError(`${where}: expect.reasons must be a list`);
    out.reasons = reasons.map((reason: unknown) => reasonExpectation(reason, where));
  }
  if (params !== undefined) out.params = params;
  if (redacted !== undefined) {
    if (!Array.isArray(redacted) || !redacted.every((item) => typeof item === 'string')) throw new UsageError(`${where}: expect.redacted must be a list of PATH:DETECTOR`);
    out.redacted = redacted;
  }
  if (approval !== undefined) {
    if (typeof approval !== 'string' && typeof approval !== 'boolean') throw new UsageError(`${where}: expect.approval must be the approval key, or true or false`);
    out.approval = approval;
  }
  return out;
}

function expectation(value: unknown, where: string): Expectation {
  if (!isObject(value)) throw new UsageError(`${where}: expect must be an object {decision, rule?, policy?, enforced?, reasons?, params?, redacted?, approval?}`);
  for (const key of Object.keys(value)) {
    if (!EXPECT_FIELDS.includes(key)) throw new UsageError(`${where}: unknown field expect.${key}`);
  }
  const { decision, rule, policy, enforced } = value;
  if (typeof decision !== 'string' || !DECISIONS.includes(decision)) throw new UsageError(`${where}: expect.decision must be one of ${DECISIONS.join(', ')}`);
  const out: Expectation = { decision: decision as Expectation['decision'], ...answerExpectation(value, where) };
  if (rule !== undefined) {
    if (typeof rule !== 'string') throw new UsageError(`${where}: expect.rule must be a string`);
    out.rule = rule;
  }
  if (policy !== undefined) {
    if (typeof policy !== 'string' && policy !== null) throw new UsageError(`${where}: expect.policy must be a string or null`);
    out.policy = policy;
  }
  if (enforced !== undefined) {
    if (typeof enforced !== 'boolean') throw new UsageError(`${where}: expect.enforced must be true or false`);
    out.enforced = enforced;
  }
  return out;
}

/** Parses a cases file; the shape is checked strictly so a typo cannot make a case pass unchecked. */
export function parseCases(text: string, file: string): TestCase[] {
  let doc: unknown;
  try {
    doc = parse(text, { uniqueKeys: true });
  } catch (error) {
    throw new UsageError(`${file}: not YAML: ${error instanceof Error ? error.message : String(error)}`);
  }
  const cases = isObject(doc) ? doc.cases : undefined;
  if (!Array.isArray(cases)) throw new UsageError(`${file}: must hold cases: [...]`);
  return cases.map((item: unknown, index) => {
    const where = `${file} case ${index}`;
    if (!isObject(item)) throw new UsageError(`${where}: must be an object {name, input, expect}`);
    for (const key of Object.keys(item)) {
      if (!['name', 'input', 'expect'].includes(key)) throw new UsageError(`${where}: unknown field ${key}`);
    }
    if (typeof item.name !== 'string' || item.name === '') throw new UsageError(`${where}: name must be a non-empty string`);
    return { file, name: item.name, input: item.input, expect: expectation(item.expect, `${where} (${item.name})`) };
  });
}

const quoted = (reason: ReasonExpectation): string => (typeof reason === 'string' ? JSON.stringify(reason) : `one containing ${JSON.stringify(reason.contains)}`);

/** Whether the answer's reasons are the expected ones, one for one, in order. */
function reasonsMismatch(expected: ReasonExpectation[], reasons: readonly string[]): string | undefined {
  const matches = (want: ReasonExpectation, reason: string | undefined): boolean => reason !== undefined && (typeof want === 'string' ? reason === want : reason.includes(want.contains));
  const problem = expected.length !== reasons.length ? `${reasons.length} reasons, not ${expected.length}` : expected.map((want, i) => (matches(want, reasons[i]) ? undefined : `reason ${i}: expected ${quoted(want)}`)).find((p) => p !== undefined);
  return problem === undefined ? undefined : `reasons: ${problem}, got ${JSON.stringify(reasons)}`;
}

/** The expectations of what the answer carries beyond decision, rule, policy and enforced. */
function carriedMismatches(expect: Expectation, answer: AuthorizationDecision): string[] {
  const out: string[] = [];
  if (expect.reasons !== undefined) {
    const problem = reasonsMismatch(expect.reasons, answer.reasons);
    if (problem !== undefined) out.push(problem);
  }
  if (expect.params !== undefined && !isDeepStrictEqual(answer.params, expect.params)) out.push(`params: expected ${canonicalJson(expect.params)}, got ${answer.params === undefined ? 'none' : canonicalJson(answer.params)}`);
  if (expect.redacted !== undefined && !isDeepStrictEqual([...(answer.redacted ?? [])].sort(), [...expect.redacted].sort())) {
    out.push(`redacted: expected ${JSON.stringify(expect.redacted)}, got ${JSON.stringify(answer.redacted ?? [])}`);
  }
  if (expect.approval !== undefined) {
    const holds = typeof expect.approval === 'string' ? answer.approval === expect.approval : (answer.approval !== undefined) === expect.approval;
    if (!holds) out.push(`approval: expected ${typeof expect.approval === 'string' ? expect.approval : expect.approval ? 'an approval key' : 'none'}, got ${answer.approval ?? 'none'}`);
  }
  return out;
}

/** What differs between the expectation and the answer; empty when the case passes. */
export function mismatches(expect: Expectation, answer: AuthorizationDecision): string[] {
  const out: string[] = [];
  if (answer.decision !== expect.decision) out.push(`decision: expected ${expect.decision}, got ${answer.decision}`);
  if (expect.rule !== undefined && answer.rule !== expect.rule) out.push(`rule: expected ${expect.rule}, got ${answer.rule}`);
  if (expect.policy !== undefined && answer.policy !== expect.policy) out.push(`policy: expected ${String(expect.policy)}, got ${String(answer.policy)}`);
  if (expect.enforced !== undefined && answer.enforced !== expect.enforced) out.push(`enforced: expected ${expect.enforced}, got ${answer.enforced}`);
  return [...out, ...carriedMismatches(expect, answer)];
}

async function runCase(evaluators: TenantEvaluators, testCase: TestCase): Promise<string[]> {
  try {
    const answer = (await evaluators.forNamespace(namespaceOf(testCase.input))).authorize(testCase.input);
    const problems = mismatches(testCase.expect, answer);
    if (problems.length > 0) problems.push(`reasons: ${answer.reasons.join('; ')}`);
    return problems;
  } catch (error) {
    if (error instanceof InputError) return [error.message];
    throw error;
  }
}

export async function testCommand(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: {
      filename: { type: 'string', short: 'f', multiple: true },
      verbose: { type: 'boolean', short: 'v' },
      help: { type: 'boolean', short: 'h' },
    },
    allowPositionals: true,
  });
  if (values.help === true) {
    io.stdout(TEST_USAGE);
    return 0;
  }
  const files = values.filename ?? [];
  if (files.length === 0) throw new UsageError('test needs manifests: -f FILE|DIR');
  if (positionals.length === 0) throw new UsageError('test needs at least one cases file');
  const cases: TestCase[] = [];
  for (const file of positionals) cases.push(...parseCases(await io.readInput(file), file));
  const evaluators = new TenantEvaluators(await readManifestPaths(files));
  let failed = 0;
  for (const testCase of cases) {
    const problems = await runCase(evaluators, testCase);
    if (problems.length === 0) {
      if (values.verbose === true) io.stdout(`PASS ${testCase.name}\n`);
      continue;
    }
    failed++;
    io.stdout(`FAIL ${testCase.name} (${testCase.file})\n${problems.map((p) => `     ${p}\n`).join('')}`);
  }
  io.stdout(`${cases.length - failed} passed, ${failed} failed\n`);
  return failed === 0 ? 0 : 1;
}
