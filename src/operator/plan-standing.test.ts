import { describe, expect, it } from 'vitest';
import type { CompileOutcome, ResourceKind, ResourceRef } from './plan.ts';
import { planStatuses, resourceKey } from './plan.ts';

const now = new Date('2026-12-05T10:00:00Z');
const blocked: CompileOutcome = { ok: false, problems: new Map([[resourceKey('ToolPolicy', 'finance', 'broken'), [{ code: 'regex_error', message: 'RE2 rejects (?<=x)y' }]]]), tenantProblems: [] };

const ref = (kind: ResourceKind, name: string): ResourceRef => ({ kind, namespace: 'finance', name, generation: 2, status: undefined });

function readyMessage(kind: ResourceKind, name: string, revision: string | undefined): string {
  const [update] = planStatuses([ref(kind, name)], 'finance', blocked, { revision, generations: {} }, now);
  const conditions = (update?.status.conditions ?? []) as { type: string; message: string }[];
  return conditions.find((c) => c.type === 'Ready')?.message ?? '';
}

describe('the status of a blocked tenant', () => {
  it.each([
    ['an agent says its standing is in force', 'AgentIdentity' as const, 'finance-agent', '7-abababababababab', 'its suspension and revokedBefore are in force at revision 7-abababababababab'],
    ['a policy says nothing of standing', 'ToolPolicy' as const, 'payments', '7-abababababababab', undefined],
    ['an agent of a tenant with no bundle yet says nothing of standing', 'AgentIdentity' as const, 'finance-agent', undefined, undefined],
  ])('%s', (_name, kind, name, revision, expected) => {
    const message = readyMessage(kind, name, revision);
    expect(message).toContain('cannot be rebuilt until ToolPolicy finance/broken is fixed');
    if (expected === undefined) expect(message).not.toContain('revokedBefore');
    else expect(message).toContain(expected);
  });
});
