// Status conditions as every Kubernetes API writes them (metav1.Condition),
// computed purely: lastTransitionTime moves only when the status flips, so a
// reconcile that learns nothing new writes nothing.

import { isDeepStrictEqual } from 'node:util';
import type { Condition } from '../api/index.ts';

export type ConditionStatus = Condition['status'];

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
    message: desired.message,
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
