// What a condition speaks of in a call, for the words of a reason: the value of
// a parameter, the local clock, a counter, the delegation chain. Whether the
// condition held is the WASM's answer (program.ts); this only reads the values
// it compared, the way the program's holds() reads them, so the reason can
// show them.
import type { AgentData, ConditionData } from './ir.ts';
import type { NormalizedCall } from './input.ts';
import type { Observed } from './reasons.ts';
import type { Signals } from './signals.ts';

function own(value: unknown, key: string): unknown {
  if (value === null || typeof value !== 'object' || Array.isArray(value) || !Object.hasOwn(value, key)) return undefined;
  return (value as Record<string, unknown>)[key];
}

/** A dotted path into the params: objects only (paths do not index lists); null is a present value. */
export function lookup(params: unknown, path: readonly string[]): Observed {
  let value = params;
  for (const key of path) {
    if (value === null || typeof value !== 'object' || Array.isArray(value) || !Object.hasOwn(value, key)) return { present: false };
    value = (value as Record<string, unknown>)[key];
  }
  return { present: true, value };
}

function observeUser(c: Extract<ConditionData, { op: 'userAttribute' }>, call: NormalizedCall): Observed {
  const user = own(call.user.attributes, c.attribute);
  if (user === undefined) return { present: false, user_missing: true };
  return { ...lookup(call.params, c.path), user };
}

export function observe(c: ConditionData, call: NormalizedCall, signals: Signals, agent: AgentData | undefined): Observed {
  switch (c.op) {
    case 'time':
      return { present: true, value: own(signals.clock, c.zone) };
    case 'callsOver': {
      const calls = own(own(call.counters.calls, call.tool ?? ''), c.window);
      return { present: true, value: calls ?? 0 };
    }
    case 'delegatedBy':
      return { present: true, value: call.delegation };
    case 'delegationDepth':
      return { present: true, value: call.delegation.length };
    case 'autonomyLevel':
      return { present: true, value: agent?.autonomyLevel };
    case 'threat':
      return { present: true, value: Object.fromEntries(c.threats.map((t) => [t, signals.threats[t]])) };
    case 'userAttribute':
      return observeUser(c, call);
    default:
      return lookup(call.params, c.path);
  }
}
