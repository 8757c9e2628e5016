import { describe, expect, it } from 'vitest';
import { compareRevisions, formatRevision, nextRevision, parseRevision } from './index.ts';

const DIGEST = 'ab'.repeat(32);

describe('revisions', () => {
  it('formats a sequence and a digest prefix', () => {
    expect(formatRevision(42, DIGEST)).toBe('42-abababababababab');
    expect(parseRevision('42-abababababababab')).toEqual({ sequence: 42n, digest: 'abababababababab' });
  });

  it.each(['', '1', 'v1-abababababababab', '01-abababababababab', '1-ABABABABABABABAB', '1-abab', '-1-abababababababab', '1-abababababababab '])(
    'refuses %j',
    (revision) => {
      expect(() => parseRevision(revision)).toThrow(expect.objectContaining({ code: 'bundle_revision_invalid' }) as Error);
    },
  );

  it.each([
    ['a higher sequence is later, however it sorts as text', '10-abababababababab', '9-abababababababab', 1],
    ['a lower sequence is earlier', '9-abababababababab', '10-abababababababab', -1],
    ['the same revision is equal', '9-abababababababab', '9-abababababababab', 0],
    ['sequences beyond 2^53 compare exactly', '18446744073709551616-abababababababab', '18446744073709551615-abababababababab', 1],
  ])('%s', (_name, a, b, expected) => {
    expect(Math.sign(compareRevisions(a, b))).toBe(expected);
  });

  it('keeps the revision for unchanged content and raises it for changed content', () => {
    const first = nextRevision(undefined, DIGEST);
    expect(first).toBe('1-abababababababab');
    expect(nextRevision(first, DIGEST)).toBe(first);
    expect(nextRevision(first, 'cd'.repeat(32))).toBe('2-cdcdcdcdcdcdcdcd');
  });
});
