import { describe, expect, it } from 'vitest';
import { findCondition, MAX_CONDITION_MESSAGE, setCondition, setConditions, statusChanged, summarizeProblems } from './conditions.ts';

const t0 = new Date('2026-11-23T10:00:00.123Z');
const t1 = new Date('2026-11-23T11:00:00Z');

describe('setCondition', () => {
  it('adds a missing condition with the transition time truncated to seconds', () => {
    const list = setCondition(undefined, { type: 'Ready', status: 'True', reason: 'Distributed', message: 'ok' }, 3, t0);
    expect(list).toEqual([
      { type: 'Ready', status: 'True', reason: 'Distributed', message: 'ok', observedGeneration: 3, lastTransitionTime: '2026-11-23T10:00:00Z' },
    ]);
  });

  it('keeps the transition time when only the reason, message or generation change', () => {
    const first = setCondition(undefined, { type: 'Ready', status: 'False', reason: 'CompileFailed', message: 'a' }, 1, t0);
    const second = setCondition(first, { type: 'Ready', status: 'False', reason: 'RegexError', message: 'b' }, 2, t1);
    expect(second[0]?.lastTransitionTime).toBe('2026-11-23T10:00:00Z');
    expect(second[0]?.reason).toBe('RegexError');
    expect(second[0]?.observedGeneration).toBe(2);
  });

  it('moves the transition time when the status flips', () => {
    const first = setCondition(undefined, { type: 'Ready', status: 'False', reason: 'CompileFailed', message: 'a' }, 1, t0);
    const second = setCondition(first, { type: 'Ready', status: 'True', reason: 'Distributed', message: 'b' }, 2, t1);
    expect(second[0]?.lastTransitionTime).toBe('2026-11-23T11:00:00Z');
  });

  it('leaves other conditions alone and does not mutate its input', () => {
    const first = setConditions(undefined, [
      { type: 'Compiled', status: 'True', reason: 'Compiled', message: '' },
      { type: 'Ready', status: 'True', reason: 'Distributed', message: '' },
    ], 1, t0);
    const copy = structuredClone(first);
    const second = setCondition(first, { type: 'Ready', status: 'False', reason: 'X', message: '' }, 2, t1);
    expect(first).toEqual(copy);
    expect(findCondition(second, 'Compiled')).toEqual(first[0]);
    expect(second.map((c) => c.type)).toEqual(['Compiled', 'Ready']);
  });
});

describe('statusChanged', () => {
  it('sees no change when a reconcile recomputes the same status', () => {
    const status = { observedGeneration: 2, conditions: setCondition(undefined, { type: 'Ready', status: 'True', reason: 'R', message: 'm' }, 2, t0) };
    const again = { ...status, conditions: setCondition(status.conditions, { type: 'Ready', status: 'True', reason: 'R', message: 'm' }, 2, t1) };
    expect(statusChanged(status, again)).toBe(false);
  });

  it('sees a change in any field, and ignores undefined fields', () => {
    expect(statusChanged({ ruleCount: 1 }, { ruleCount: 2 })).toBe(true);
    expect(statusChanged(undefined, { ruleCount: 0 })).toBe(true);
    expect(statusChanged({ ruleCount: 1 }, { ruleCount: 1, bundleRevision: undefined })).toBe(false);
  });
});

describe('summarizeProblems', () => {
  it.each([
    ['lists every problem when there are few', ['a', 'b'], 'a; b'],
    ['says how many more there are past the listed ones', Array.from({ length: 12 }, (_, i) => `p${i}`), 'p0; p1; p2; p3; p4; p5; p6; p7; p8; p9; and 2 more problems'],
    ['counts a single problem left over in the singular', Array.from({ length: 11 }, (_, i) => `p${i}`), 'p0; p1; p2; p3; p4; p5; p6; p7; p8; p9; and 1 more problem'],
  ])('%s', (_name, messages, expected) => {
    expect(summarizeProblems(messages)).toBe(expected);
  });

  it('stays within its length for a thousand long problems, and still counts them', () => {
    const messages = Array.from({ length: 1000 }, (_, i) => `rule r${i}: RE2 rejects ${'x'.repeat(500)}`);
    const summary = summarizeProblems(messages, 1024);
    expect(summary.length).toBeLessThanOrEqual(1024);
    expect(summary).toMatch(/^rule r0: RE2 rejects x+; .*and \d+ more problems$/);
    const listed = summary.split('; ').length - 1;
    expect(summary.endsWith(`and ${1000 - listed} more problems`)).toBe(true);
  });

  it('cuts one problem too long to show whole, and marks the cut', () => {
    const summary = summarizeProblems(['y'.repeat(10_000)], 200);
    expect(summary.length).toBeLessThanOrEqual(200);
    expect(summary.endsWith('…')).toBe(true);
  });
});

describe('setCondition bounds', () => {
  it('cuts a message to metav1.Condition\'s 32,768 characters, which the API server would refuse past', () => {
    const [condition] = setCondition(undefined, { type: 'Ready', status: 'False', reason: 'X', message: 'z'.repeat(100_000) }, 1, t0);
    expect(condition?.message.length).toBe(MAX_CONDITION_MESSAGE);
  });
});
