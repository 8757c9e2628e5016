// Local calendar days in IANA time zones, as UTC milliseconds: a budget's day
// runs from one local midnight to the next in the budget's zone, 23 or 25 hours
// long on DST days. Computed with the runtime's ICU data and cached per zone,
// so a call pays for ICU only on the first call of a day.

export interface LocalDay {
  /** The first instant of the local day (local midnight, or the first local time after it when midnight is skipped). */
  start: number;
  /** The first instant of the next local day. */
  end: number;
}

interface WallClock {
  year: number;
  month: number;
  day: number;
  hour: number;
  minute: number;
  second: number;
}

const formatters = new Map<string, Intl.DateTimeFormat>();

function formatter(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone);
  if (f === undefined) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone,
      year: 'numeric',
      month: '2-digit',
      day: '2-digit',
      hour: '2-digit',
      minute: '2-digit',
      second: '2-digit',
      hourCycle: 'h23',
    });
    formatters.set(timeZone, f);
  }
  return f;
}

function wallClock(instant: number, timeZone: string): WallClock {
  const clock: WallClock = { year: Number.NaN, month: Number.NaN, day: Number.NaN, hour: Number.NaN, minute: Number.NaN, second: Number.NaN };
  for (const part of formatter(timeZone).formatToParts(instant)) {
    if (part.type in clock) clock[part.type as keyof WallClock] = Number(part.value);
  }
  if (Object.values(clock).some((v) => !Number.isInteger(v))) throw new Error(`cannot read the local time in ${timeZone}`);
  return clock;
}

/** The local date as one comparable number, YYYYMMDD. */
function dateNumber(instant: number, timeZone: string): number {
  const { year, month, day } = wallClock(instant, timeZone);
  return year * 10_000 + month * 100 + day;
}

/** Local days last at most 25 hours, but a zone that skipped a date had a 48-hour one. */
const SEARCH_SPAN_MS = 50 * 3_600_000;

/** The first instant in [low, high] whose local date is after `date`; the local date never runs backwards across a day. */
function firstInstantAfter(date: number, timeZone: string, low: number, high: number): number {
  let lo = low;
  let hi = high;
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2);
    if (dateNumber(mid, timeZone) > date) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

function computeDay(instant: number, timeZone: string): LocalDay {
  const at = Math.floor(instant);
  const date = dateNumber(at, timeZone);
  const start = firstInstantAfter(date - 1, timeZone, at - SEARCH_SPAN_MS, at);
  const end = firstInstantAfter(date, timeZone, at, at + SEARCH_SPAN_MS);
  return { start, end };
}

const days = new Map<string, LocalDay[]>();
/** Days kept per zone: today and its neighbours, with room for a clock that moved. */
const DAYS_PER_ZONE = 8;

/** The local day of `timeZone` that holds `instant` (milliseconds since the epoch). Throws for an unknown zone. */
export function localDay(instant: number, timeZone: string): LocalDay {
  const cached = days.get(timeZone) ?? [];
  const hit = cached.find((d) => d.start <= instant && instant < d.end);
  if (hit !== undefined) return hit;
  const day = computeDay(instant, timeZone);
  days.set(timeZone, [day, ...cached].slice(0, DAYS_PER_ZONE));
  return day;
}

/** The day before, the day of, and the day after `instant`: a store with its own clock picks the one holding its time. */
export function daysAround(instant: number, timeZone: string): [LocalDay, LocalDay, LocalDay] {
  const today = localDay(instant, timeZone);
  return [localDay(today.start - 1, timeZone), today, localDay(today.end, timeZone)];
}

const pad = (n: number, width = 2): string => String(n).padStart(width, '0');

/** An instant as RFC 3339 local time with the zone's offset then, e.g. 2026-11-24T00:00:00-05:00. */
export function localRfc3339(instant: number, timeZone: string): string {
  const at = Math.floor(instant / 1000) * 1000;
  const c = wallClock(at, timeZone);
  const offsetMinutes = Math.round((Date.UTC(c.year, c.month - 1, c.day, c.hour, c.minute, c.second) - at) / 60_000);
  const sign = offsetMinutes < 0 ? '-' : '+';
  const abs = Math.abs(offsetMinutes);
  const offset = offsetMinutes === 0 ? 'Z' : `${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
  return `${pad(c.year, 4)}-${pad(c.month)}-${pad(c.day)}T${pad(c.hour)}:${pad(c.minute)}:${pad(c.second)}${offset}`;
}
