// Local wall-clock readings in IANA time zones, computed with the runtime's ICU
// data. The WASM policy has no time builtins, so the decision core reads the
// clock here and hands the policy a weekday and minute of the day per zone.
import { WEEKDAYS } from '../api/index.ts';

export type Weekday = (typeof WEEKDAYS)[number];

export interface LocalClock {
  day: Weekday;
  /** Minutes since local midnight, 0..1439. */
  minute: number;
}

const formatters = new Map<string, Intl.DateTimeFormat>();

function formatter(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone);
  if (f === undefined) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone,
      weekday: 'short',
      hour: '2-digit',
      minute: '2-digit',
      hourCycle: 'h23',
    });
    formatters.set(timeZone, f);
  }
  return f;
}

export function isKnownTimeZone(timeZone: string): boolean {
  try {
    formatter(timeZone);
    return true;
  } catch {
    return false;
  }
}

function isWeekday(text: string): text is Weekday {
  return (WEEKDAYS as readonly string[]).includes(text);
}

// Every call of a minute reads the same local clock: formatting with ICU costs
// microseconds, a map lookup does not. The last reading of each zone answers
// the calls of its minute; other minutes go through a bounded map, cleared
// when full.
const latest = new Map<string, { minute: number; reading: LocalClock }>();
const readings = new Map<string, LocalClock>();
const READINGS_LIMIT = 4096;

/** The weekday and minute of the day at `instant` (ms since the epoch) in `timeZone` (DST applied as the zone's rules say). */
export function localClock(instant: number, timeZone: string): LocalClock {
  const minute = Math.floor(instant / 60_000);
  const last = latest.get(timeZone);
  if (last?.minute === minute) return last.reading;
  const key = `${minute} ${timeZone}`;
  let reading = readings.get(key);
  if (reading === undefined) {
    reading = readLocalClock(new Date(instant), timeZone);
    if (readings.size >= READINGS_LIMIT) readings.clear();
    readings.set(key, reading);
  }
  if (latest.size >= READINGS_LIMIT) latest.clear();
  latest.set(timeZone, { minute, reading });
  return reading;
}

function readLocalClock(instant: Date, timeZone: string): LocalClock {
  let day: Weekday | undefined;
  let hour = Number.NaN;
  let minute = Number.NaN;
  for (const part of formatter(timeZone).formatToParts(instant)) {
    if (part.type === 'weekday' && isWeekday(part.value)) day = part.value;
    if (part.type === 'hour') hour = Number(part.value);
    if (part.type === 'minute') minute = Number(part.value);
  }
  if (day === undefined || !Number.isInteger(hour) || !Number.isInteger(minute)) {
    throw new Error(`cannot read the local time in ${timeZone}`);
  }
  return { day, minute: hour * 60 + minute };
}

/** Minutes since midnight of HH:MM; 24:00 is 1440, the end of the day. */
export function clockMinutes(text: string): number | undefined {
  const match = /^([01][0-9]|2[0-3]):([0-5][0-9])$|^24:00$/.exec(text);
  if (match === null) return undefined;
  if (text === '24:00') return 1440;
  return Number(match[1]) * 60 + Number(match[2]);
}
