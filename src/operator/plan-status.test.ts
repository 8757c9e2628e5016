import { describe, expect, it } from 'vitest';
import type { CompileOutcome, ResourceProblem, ResourceRef } from './plan.ts';
import { planStatuses, resourceKey } from './plan.ts';

const now = new Date('2026-12-05T10:00:00Z');

function policy(name: string): ResourceRef {
  return { kind: 'ToolPolicy', namespace: 'finance', name, generation: 1, status: undefined };
}

function failed(problems: [string, ResourceProblem[]][]): CompileOutcome {
  return { ok: false, problems: new Map(problems), tenantProblems: [] };
}

const regexProblems = (count: number): ResourceProblem[] =>
  Array.from({ length: count }, (_, i) => ({ code: 'regex_error', message: `rule r${i}, field spec.rules[${i}].when[0].regex: RE2 rejects "${'('.repeat(200)}"` }));

function conditionOf(statusUpdate: { status: Record<string, unknown> }, type: string): { reason: string; message: string } | undefined {
  const conditions = statusUpdate.status.conditions as { type: string; reason: string; message: string }[];
  return conditions.find((c) => c.type === type);
}

describe('planStatuses', () => {
  it('gives a policy with a thousand invalid regexes a status message the API server accepts, with the first problems and a count', () => {
    const ref = policy('regexes');
    const [update] = planStatuses([ref], 'finance', failed([[resourceKey('ToolPolicy', 'finance', 'regexes'), regexProblems(1000)]]), { revision: undefined, generations: {} }, now);
    const ready = update === undefined ? undefined : conditionOf(update, 'Ready');
    expect(ready?.reason).toBe('RegexError');
    expect(ready?.message.length).toBeLessThan(32_768);
    expect(ready?.message).toContain('rule r0,');
    expect(ready?.message).toMatch(/and \d+ more problems/);
  });

  it('names at most ten blocking resources in the status of a valid resource of a blocked tenant', () => {
    const invalid = Array.from({ length: 500 }, (_, i): [string, ResourceProblem[]] => [resourceKey('ToolPolicy', 'finance', `bad-${i}`), regexProblems(1)]);
    const [update] = planStatuses([policy('good')], 'finance', failed(invalid), { revision: '1-abc', generations: {} }, now);
    const ready = update === undefined ? undefined : conditionOf(update, 'Ready');
    expect(ready?.reason).toBe('TenantBlocked');
    expect(ready?.message).toContain('ToolPolicy finance/bad-9 and 490 more');
    expect(ready?.message).not.toContain('bad-10');
  });
});
