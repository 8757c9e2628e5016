// Containment without compiling: the agents' standing (suspended, revokedBefore) is data in the
// bundle's data.json, which the policy and the sidecar read as they find it. While a tenant is
// blocked by an invalid resource, the operator takes the last good bundle it signed, sets the
// standing of its agents as their AgentIdentities say now, and signs that as the next revision:
// a kill switch waits for nothing a tenant editor can break. Pure.
import type { AgentData } from '../compiler/ir.ts';
import { normalizedTime } from '../compiler/ir.ts';

/** An agent's standing as its AgentIdentity says it, read from the spec even when the resource is otherwise invalid. */
export interface AgentStandingSpec {
  namespace: string;
  name: string;
  suspended: boolean;
  /** As written in the spec: an unreadable time revokes every token, as the compiler has it. */
  revokedBefore?: string;
}

/** What changed for one agent; for the log and the Event. */
export interface StandingChange {
  agent: string;
  change: 'suspended' | 'resumed' | 'revoked' | 'removed';
}

export interface Contained {
  /** The bundle data with the agents' standing as the specs say; the input is not changed. */
  data: unknown;
  changes: StandingChange[];
}

type AgentsByNamespace = Record<string, Record<string, AgentData>>;

function agentsOf(data: unknown): AgentsByNamespace | undefined {
  if (typeof data !== 'object' || data === null) return undefined;
  const tenant = (data as { portcullis?: unknown }).portcullis;
  if (typeof tenant !== 'object' || tenant === null) return undefined;
  const agents = (tenant as { agents?: unknown }).agents;
  return typeof agents === 'object' && agents !== null ? (agents as AgentsByNamespace) : undefined;
}

/** The standing of one agent as the spec says, and what changed from the bundle's. */
function standingOf(current: AgentData, spec: AgentStandingSpec): { standing: AgentData; changes: StandingChange['change'][] } {
  const revokedBefore = spec.revokedBefore === undefined ? undefined : normalizedTime(spec.revokedBefore);
  const { revokedBefore: _previous, ...rest } = current;
  const standing: AgentData = { ...rest, suspended: spec.suspended, ...(revokedBefore === undefined ? {} : { revokedBefore }) };
  const changes: StandingChange['change'][] = [];
  if (spec.suspended !== current.suspended) changes.push(spec.suspended ? 'suspended' : 'resumed');
  if (revokedBefore !== current.revokedBefore) changes.push('revoked');
  return { standing, changes };
}

/**
 * The bundle data with every agent's standing as its AgentIdentity says now: suspended or
 * resumed, tokens revoked from the time given, and an agent whose AgentIdentity is gone removed
 * (an unknown agent is denied). An agent the bundle does not hold yet is not added: that takes a
 * compile, as do roles, scopes and every other field. Agents are matched by namespace and name.
 */
export function withAgentStanding(data: unknown, specs: readonly AgentStandingSpec[]): Contained {
  const agents = agentsOf(data);
  if (agents === undefined) return { data, changes: [] };
  const wanted = new Map(specs.map((spec) => [`${spec.namespace}/${spec.name}`, spec]));
  const changes: StandingChange[] = [];
  const next: AgentsByNamespace = {};
  for (const namespace of Object.keys(agents).sort()) {
    const byName = agents[namespace] ?? {};
    const kept: Record<string, AgentData> = {};
    for (const name of Object.keys(byName).sort()) {
      const current = byName[name];
      if (current === undefined) continue;
      const agent = `${namespace}/${name}`;
      const spec = wanted.get(agent);
      if (spec === undefined) {
        changes.push({ agent, change: 'removed' });
        continue;
      }
      const { standing, changes: own } = standingOf(current, spec);
      kept[name] = standing;
      for (const change of own) changes.push({ agent, change });
    }
    if (Object.keys(kept).length > 0) next[namespace] = kept;
  }
  if (changes.length === 0) return { data, changes };
  const tenant = (data as { portcullis: Record<string, unknown> }).portcullis;
  return { data: { ...(data as Record<string, unknown>), portcullis: { ...tenant, agents: next } }, changes };
}

/** The standing an AgentIdentity's spec gives, whatever else in it is invalid. */
export function standingSpecOf(namespace: string, name: string, spec: unknown): AgentStandingSpec {
  const fields = typeof spec === 'object' && spec !== null ? (spec as { suspended?: unknown; revokedBefore?: unknown }) : {};
  return {
    namespace,
    name,
    // Not false is suspended: a spec the API server let through with anything else stops the agent.
    suspended: fields.suspended !== undefined && fields.suspended !== false,
    ...(typeof fields.revokedBefore === 'string' ? { revokedBefore: fields.revokedBefore } : {}),
  };
}
