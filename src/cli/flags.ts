// Flag parsing shared by the long-running commands (operator, sidecar): each
// bad value is a UsageError naming the flag and what it expects.

import { parseDuration } from '../compiler/durations.ts';
import { UsageError } from './io.ts';

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** HOST:PORT; an empty host listens on every interface. */
export function listenAddress(value: string, flag: string): { host: string; port: number } {
  const match = /^(.*):(\d{1,5})$/.exec(value);
  const port = Number(match?.[2]);
  if (!match || port > 65535) throw new UsageError(`--${flag}: ${JSON.stringify(value)} is not HOST:PORT`);
  return { host: match[1] === '' ? '0.0.0.0' : (match[1] ?? '0.0.0.0'), port };
}

/** A positive Go-style duration (15s, 2m, 1h30m) in milliseconds, or the fallback when the flag is absent. */
export function durationFlag(value: string | undefined, flag: string, fallbackMs: number): number {
  if (value === undefined) return fallbackMs;
  const ms = parseDuration(value);
  if (ms === undefined || ms <= 0) throw new UsageError(`--${flag}: ${JSON.stringify(value)} is not a positive duration such as 15s or 2m`);
  return ms;
}

export function logLevel(value: string | undefined): LogLevel {
  const level = value ?? 'info';
  if (!(LOG_LEVELS as readonly string[]).includes(level)) throw new UsageError(`--log-level: ${JSON.stringify(level)} is not one of ${LOG_LEVELS.join(', ')}`);
  return level as LogLevel;
}
