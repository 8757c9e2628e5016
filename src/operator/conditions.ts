// Status conditions as every Kubernetes API writes them (metav1.Condition),
// computed purely: lastTransitionTime moves only when the status flips, so a
// reconcile that learns nothing new writes nothing.

import { isDeepStrictEqual } from 'node:util';
import type { Condition } from '../api/index.ts';

export type ConditionStatus = Condition['status'];

/** metav1.Condition's bound on a message, which the CRDs' schema enforces too. */
export const MAX_CONDITION_MESSAGE = 32_768;
/** How many problems a status or Event message lists before it counts the rest. */
export const LISTED_PROBLEMS = 10;
/** The length of a summary of problems, by default: short enough for kubectl describe to show whole. */
export const PROBLEM_SUMMARY_LENGTH = 4_096;

/** The text cut to `limit` characters, marked where it was cut. */
function bounded(text: string, limit: number): string {
  return text.length <= limit ? text : `${text.slice(0, limit - 1)}…`;
}

/**
 * Problems as one message of at most `limit` characters: the first ones
 * (at most LISTED_PROBLEMS), then how many more there are. A policy with a
 * thousand invalid regexes still gets a status the API server accepts.
 */
export function summarizeProblems(messages: readonly string[], limit = PROBLEM_SUMMARY_LENGTH): string {
  const listed: string[] = [];
  let length = 0;
  for (const message of messages.slice(0, LISTED_PROBLEMS)) {
    // Room for the separator and for the count of the rest.
    const room = limit - length - (listed.length === 0 ? 0 : 2) - 40;
    if (room < 16) break;
    const text = bounded(message, room);
    length += text.length + (listed.length === 0 ? 0 : 2);
    listed.push(text);
  }
  const rest = messages.length - listed.length;
  const summary = listed.join('; ');
  if (rest === 0) return summary;
  const more = `and ${rest} more ${rest === 1 ? 'problem' : 'problems'}`;
  return listed.length === 0 ? more : `${summary}; ${more}`;
}

export interface DesiredCondition {
  type: string;
  status: ConditionStatus;
  reason: string;
  message: string;
}

/** The conditions with `desired` set, for `generation`, at `now`. Returns a new list. */
export function setCondition(current: readonly Condition[] | undefined, desired: DesiredCondition, generation: number, now: Date): Condition[] {
  const list = [...(current ?? [])];
  const index = list.findIndex((c) => c.type === desired.type);
  const previous = index >= 0 ? list[index] : undefined;
  const next: Condition = {
    type: desired.type,
    status: desired.status,
    reason: desired.reason,
    message: bounded(desired.message, MAX_CONDITION_MESSAGE),
    observedGeneration: generation,
    lastTransitionTime: previous?.status === desired.status ? previous.lastTransitionTime : now.toISOString().replace(/\.\d{3}Z$/, 'Z'),
  };
  if (index >= 0) list[index] = next;
  else list.push(next);
  return list;
}

export function setConditions(current: readonly Condition[] | undefined, desired: readonly DesiredCondition[], generation: number, now: Date): Condition[] {
  return desired.reduce<Condition[]>((list, d) => setCondition(list, d, generation, now), [...(current ?? [])]);
}

export function findCondition(conditions: readonly Condition[] | undefined, type: string): Condition | undefined {
  return conditions?.find((c) => c.type === type);
}

/** Whether writing `next` would change anything the API server holds. */
export function statusChanged(current: unknown, next: unknown): boolean {
  return !isDeepStrictEqual(stripUndefined(current ?? {}), stripUndefined(next));
}

function stripUndefined(value: unknown): unknown {
  return JSON.parse(JSON.stringify(value)) as unknown;
}
