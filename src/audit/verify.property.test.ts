// Property: any single change to a valid log's audit lines is found. A log is
// one to three chains written one after the other to a file (the last closed,
// the others closed or crashed), amid ordinary log lines; a change is one line
// deleted, repeated, moved or edited (any member, at any depth), the log cut
// short after the last chain opened, or a genuine chain of another log (signed
// with the same key) spliced in before, inside or after the chains. Changes to ordinary lines, or to the
// pino envelope around an entry, are not the audit trail's to find; nor is
// the removal of whole chains from the end, which leaves nothing behind to
// tell (docs/audit.md: what the chain cannot show).
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { canonicalJson } from '../compiler/index.ts';
import type { ChainSpec } from './test-support.ts';
import { entryOf, joined, logOf, testKey } from './test-support.ts';
import { verifyAuditLog } from './verify.ts';

const KEY = testKey();

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type Path = (string | number)[];

const chainSpec = (prefix: string, index: number, last: boolean): fc.Arbitrary<Omit<ChainSpec, 'after'>> =>
  fc.record({
    id: fc.constant(`${prefix}-${index}`),
    key: fc.constant(KEY),
    decisions: fc.integer({ min: 0, max: 8 }),
    checkpointEvery: fc.integer({ min: 1, max: 5 }),
    closed: last ? fc.constant(true) : fc.boolean(),
  });

/** A log as one writer leaves it; chains are named PREFIX-0, PREFIX-1, ... */
const logNamed = (prefix: string): fc.Arbitrary<string[]> =>
  fc
    .integer({ min: 1, max: 3 })
    .chain((count) => fc.tuple(...Array.from({ length: count }, (_, i) => chainSpec(prefix, i, i === count - 1))))
    .chain((specs) => fc.record({ specs: fc.constant(specs), ordinaryEvery: fc.integer({ min: 0, max: 4 }) }))
    .map(({ specs, ordinaryEvery }) => logOf(specs, ordinaryEvery));

const logArbitrary = logNamed('chain');

const isAudit = (line: string): boolean => line.includes('"audit"');

/** Every path to a member of a JSON value, the value itself excluded. */
function pathsOf(value: Json, prefix: Path = []): Path[] {
  if (value === null || typeof value !== 'object') return [];
  const keys: (string | number)[] = Array.isArray(value) ? value.map((_, i) => i) : Object.keys(value);
  return keys.flatMap((key) => {
    const path = [...prefix, key];
    return [path, ...pathsOf((value as Record<string | number, Json>)[key] ?? null, path)];
  });
}

function parentOf(root: Json, path: Path): Record<string | number, Json> {
  let node = root as Record<string | number, Json>;
  for (const key of path.slice(0, -1)) node = node[key] as Record<string | number, Json>;
  return node;
}

type Mutation =
  | { op: 'delete'; line: number }
  | { op: 'repeat'; line: number; to: number }
  | { op: 'swap'; line: number; other: number }
  | { op: 'edit'; line: number; path: number; change: 'replace' | 'remove' | 'add'; value: Json }
  | { op: 'truncate'; at: number }
  /** One chain of another log, its lines kept together, put before line `at`. */
  | { op: 'splice'; other: string[]; chain: number; at: number };

const mutationArbitrary: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ op: fc.constant('delete' as const), line: fc.nat() }),
  fc.record({ op: fc.constant('repeat' as const), line: fc.nat(), to: fc.nat() }),
  fc.record({ op: fc.constant('swap' as const), line: fc.nat(), other: fc.nat() }),
  fc.record({ op: fc.constant('edit' as const), line: fc.nat(), path: fc.nat(), change: fc.constantFrom('replace' as const, 'remove' as const, 'add' as const), value: fc.jsonValue() as fc.Arbitrary<Json> }),
  fc.record({ op: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ op: fc.constant('splice' as const), other: logNamed('other'), chain: fc.nat(), at: fc.nat() }),
);

/** Edits one member of the entry on a line; undefined when the edit changes nothing. */
function edit(line: string, pathIndex: number, change: 'replace' | 'remove' | 'add', value: Json): string | undefined {
  const parsed = JSON.parse(line) as { audit: Json };
  const entry = parsed.audit;
  const before = canonicalJson(entry);
  const paths = pathsOf(entry);
  const path = paths[pathIndex % paths.length] ?? [];
  const parent = parentOf(entry, path);
  const key = path.at(-1) ?? '';
  if (change === 'replace') parent[key] = value;
  else if (change === 'add') (parentOf(entry, [...path.slice(0, -1), 'x']) as Record<string, Json>)[`extra-${String(key)}`] = value;
  else if (Array.isArray(parent)) parent.splice(Number(key), 1);
  else Reflect.deleteProperty(parent, key);
  return canonicalJson(entry) === before ? undefined : JSON.stringify(parsed);
}

/** The log with one change made; undefined when the drawn change is no change. */
function mutate(lines: string[], mutation: Mutation): string | undefined {
  const audit = lines.flatMap((line, i) => (isAudit(line) ? [i] : []));
  const pick = (n: number): number => audit[n % audit.length] ?? 0;
  const out = [...lines];
  switch (mutation.op) {
    case 'delete':
      out.splice(pick(mutation.line), 1);
      return joined(out);
    case 'repeat':
      out.splice(mutation.to % (out.length + 1), 0, out[pick(mutation.line)] ?? '');
      return joined(out);
    case 'swap': {
      const [a, b] = [pick(mutation.line), pick(mutation.other)];
      if (a === b) return undefined;
      [out[a], out[b]] = [out[b] ?? '', out[a] ?? ''];
      return joined(out);
    }
    case 'edit': {
      const at = pick(mutation.line);
      const edited = edit(out[at] ?? '', mutation.path, mutation.change, mutation.value);
      if (edited === undefined) return undefined;
      out[at] = edited;
      return joined(out);
    }
    case 'truncate': {
      // Cut somewhere after the opening entry of the last chain, and before the end of its last audit line.
      const text = joined(lines);
      const lastChain = entryOf(lines[audit.at(-1) ?? 0] ?? '').chain;
      const openOfLast = lines.findIndex((line) => isAudit(line) && entryOf(line).chain === lastChain);
      const start = joined(lines.slice(0, openOfLast + 1)).length;
      const end = joined(lines.slice(0, (audit.at(-1) ?? 0) + 1)).length - 1;
      return text.slice(0, start + (mutation.at % (end - start)));
    }
    case 'splice': {
      const chains = [...new Set(mutation.other.filter(isAudit).map((line) => entryOf(line).chain))];
      const chain = chains[mutation.chain % chains.length];
      const spliced = mutation.other.filter((line) => isAudit(line) && entryOf(line).chain === chain);
      out.splice(mutation.at % (out.length + 1), 0, ...spliced);
      return joined(out);
    }
  }
}

describe('audit verification (property)', () => {
  it('finds nothing in a log as written', () => {
    fc.assert(
      fc.property(logArbitrary, fc.boolean(), (lines, pin) => {
        const report = verifyAuditLog(joined(lines), pin ? { pinned: KEY.pinned } : {});
        expect(report.findings).toEqual([]);
      }),
    );
  });

  it('finds any single change to the audit lines, with or without a pinned key', () => {
    fc.assert(
      fc.property(logArbitrary, mutationArbitrary, fc.boolean(), (lines, mutation, pin) => {
        const changed = mutate(lines, mutation);
        fc.pre(changed !== undefined && changed !== joined(lines));
        const report = verifyAuditLog(changed, pin ? { pinned: KEY.pinned } : {});
        expect(report.verdict, `${mutation.op}: ${JSON.stringify(report.findings)}`).not.toBe('verified');
      }),
      { numRuns: 300 },
    );
  }, 30_000);
});
