import { describe, expect, it } from 'vitest';
import { daysAround, localDay, localRfc3339 } from './calendar.ts';
import { fromMicros, toMicros } from './money.ts';

const at = (iso: string): number => Date.parse(iso);
const iso = (ms: number): string => new Date(ms).toISOString();

describe('localDay', () => {
  it.each([
    ['a UTC day is 24 hours from midnight to midnight', '2026-03-08T12:00:00Z', 'UTC', '2026-03-08T00:00:00.000Z', '2026-03-09T00:00:00.000Z'],
    ['the day New York springs forward is 23 hours long', '2026-03-08T12:00:00Z', 'America/New_York', '2026-03-08T05:00:00.000Z', '2026-03-09T04:00:00.000Z'],
    ['the day New York falls back is 25 hours long', '2026-11-01T12:00:00Z', 'America/New_York', '2026-11-01T04:00:00.000Z', '2026-11-02T05:00:00.000Z'],
    ['a Santiago day whose midnight is skipped starts at 01:00', '2026-09-06T12:00:00Z', 'America/Santiago', '2026-09-06T04:00:00.000Z', '2026-09-07T03:00:00.000Z'],
    ['late evening in New York is still the local day, though UTC has moved on', '2026-11-24T03:30:00Z', 'America/New_York', '2026-11-23T05:00:00.000Z', '2026-11-24T05:00:00.000Z'],
  ])('%s', (_, instant, zone, start, end) => {
    const day = localDay(at(instant), zone);
    expect([iso(day.start), iso(day.end)]).toEqual([start, end]);
  });

  it('puts the first instant of a day in that day and the last instant in the day before', () => {
    const day = localDay(at('2026-03-08T12:00:00Z'), 'America/New_York');
    expect(localDay(day.start, 'America/New_York')).toEqual(day);
    expect(localDay(day.start - 1, 'America/New_York').end).toBe(day.start);
  });

  it('gives the day before, of and after an instant, end to end', () => {
    const [before, today, after] = daysAround(at('2026-03-08T12:00:00Z'), 'Europe/Berlin');
    expect(before.end).toBe(today.start);
    expect(today.end).toBe(after.start);
    expect(iso(today.start)).toBe('2026-03-07T23:00:00.000Z');
  });

  it('throws for a zone the runtime does not know', () => {
    expect(() => localDay(0, 'Mars/Olympus_Mons')).toThrow(RangeError);
  });
});

describe('localRfc3339', () => {
  it.each([
    ['2026-03-09T04:00:00Z', 'America/New_York', '2026-03-09T00:00:00-04:00'],
    ['2026-03-08T12:00:00Z', 'Asia/Kolkata', '2026-03-08T17:30:00+05:30'],
    ['2026-03-08T12:00:00Z', 'UTC', '2026-03-08T12:00:00Z'],
  ])('writes %s in %s as %s', (instant, zone, expected) => {
    expect(localRfc3339(at(instant), zone)).toBe(expected);
    expect(Date.parse(expected)).toBe(at(instant));
  });
});

describe('toMicros', () => {
  it.each([
    [0.1, 'up', 100_000],
    [19.999999, 'down', 19_999_999],
    [0.0000001, 'up', 1],
    [0.0000001, 'down', 0],
    [1e-7, 'up', 1],
    [20, 'down', 20_000_000],
    [1.5e21, 'up', Number.MAX_SAFE_INTEGER],
    [0, 'up', 0],
  ] as const)('%s rounded %s is %s micro-dollars', (dollars, rounding, micros) => {
    expect(toMicros(dollars, rounding)).toBe(micros);
  });

  it('sums exactly where doubles do not: 0.1 two hundred times is 20', () => {
    let micros = 0;
    for (let i = 0; i < 200; i++) micros += toMicros(0.1, 'up');
    expect(fromMicros(micros)).toBe(20);
  });

  it('refuses a negative or non-finite amount', () => {
    expect(() => toMicros(-1, 'up')).toThrow(RangeError);
    expect(() => toMicros(Number.NaN, 'up')).toThrow(RangeError);
  });
});
