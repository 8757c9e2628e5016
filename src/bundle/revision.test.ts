import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { compareRevisions, formatRevision, MAX_REVISION_SEQUENCE, nextRevision, parseRevision } from './revision.ts';

const DIGEST = 'ab'.repeat(32);

describe('revisions', () => {
  it('formats a sequence and a digest prefix', () => {
    expect(formatRevision(42, DIGEST)).toBe('42-abababababababab');
    expect(parseRevision('42-abababababababab')).toEqual({ sequence: 42n, digest: 'abababababababab' });
  });

  it.each([
    ['a sequence one above the bound', `${(MAX_REVISION_SEQUENCE + 1n).toString()}-abababababababab`],
    ['a 20-digit sequence', '99999999999999999999-abababababababab'],
    ['a 21-digit sequence', '100000000000000000000-abababababababab'],
    ['a sequence of a thousand digits', `${'9'.repeat(1000)}-abababababababab`],
  ])('refuses %s as a revision no bundle can carry', (_name, revision) => {
    expect(() => parseRevision(revision)).toThrow(expect.objectContaining({ code: 'bundle_revision_invalid' }) as Error);
  });

  it('accepts the bound itself, and numbers nothing after it', () => {
    const highest = formatRevision(MAX_REVISION_SEQUENCE, DIGEST);
    expect(parseRevision(highest).sequence).toBe(MAX_REVISION_SEQUENCE);
    expect(nextRevision(highest, DIGEST)).toBe(highest);
    expect(() => nextRevision(highest, 'cd'.repeat(32))).toThrow(expect.objectContaining({ code: 'bundle_revision_invalid' }) as Error);
  });

  it('parses every sequence up to the bound exactly, and its successor is one more', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: 0n, max: MAX_REVISION_SEQUENCE - 1n }), (sequence) => {
        const revision = formatRevision(sequence, DIGEST);
        expect(parseRevision(revision).sequence).toBe(sequence);
        expect(Number(parseRevision(revision).sequence)).toBe(Number(sequence));
        expect(parseRevision(nextRevision(revision, 'cd'.repeat(32))).sequence).toBe(sequence + 1n);
      }),
    );
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
    ['sequences at the bound compare exactly', '9007199254740991-abababababababab', '9007199254740990-abababababababab', 1],
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
