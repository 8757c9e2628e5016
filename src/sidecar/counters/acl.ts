// Who may touch an agent's counters in Redis. Every key of an agent starts with
// one prefix (tenant, namespace and agent in a Redis Cluster hash tag), which
// one Redis ACL user owns: the agent's sidecar logs in as it, and its rule
// allows the counter scripts and nothing else, on those keys and no others.
// The application shares the pod's network and can reach Redis too; without
// the user's password it is the default user, which the documented setup turns
// off (docs/counters.md, Redis security).
import { createHash } from 'node:crypto';

/** Whose counters: one agent of one namespace of one tenant. */
export interface CounterScope {
  tenant: string;
  namespace: string;
  agent: string;
}

/**
 * One component of a scope: Kubernetes names and label values fit it. It holds
 * none of Redis' glob characters (`*`, `?`, `[`, `]`, `\`) nor the separators
 * of the prefix (`{`, `}`, `/`, `:`), so the ACL pattern of one agent matches
 * exactly its keys and never another agent's.
 */
const COMPONENT = /^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$/;

/** Throws an Error naming the component that cannot be part of a counter key. */
export function checkCounterScope(scope: CounterScope): CounterScope {
  for (const part of ['tenant', 'namespace', 'agent'] as const) {
    const value = scope[part];
    if (!COMPONENT.test(value)) {
      throw new Error(`the ${part} ${JSON.stringify(value)} cannot name counters: it must be 1 to 253 letters, digits, '.', '_' or '-', beginning and ending with a letter or digit`);
    }
  }
  return scope;
}

/** The start of every key of the agent's counters; the braces keep all of them in one Redis Cluster slot. */
export function counterKeyPrefix(scope: CounterScope): string {
  const { tenant, namespace, agent } = checkCounterScope(scope);
  return `portcullis:{${tenant}/${namespace}/${agent}}:`;
}

/** The Redis ACL user of the agent's sidecar. */
export function counterAclUser(scope: CounterScope): string {
  const { tenant, namespace, agent } = checkCounterScope(scope);
  return `portcullis/${tenant}/${namespace}/${agent}`;
}

/** The commands the counter scripts (redis-scripts.ts) call on the server; ACLs check each of them. */
export const SCRIPT_COMMANDS = ['time', 'hmget', 'hset', 'pexpire', 'pexpireat', 'zremrangebyscore', 'zcard', 'zadd', 'zrem', 'zrange'] as const;

/**
 * What the sidecar's client sends itself: the scripts by hash, by text when the
 * server lacks them (after a restart), and SELECT for a database in the URL.
 */
export const CLIENT_COMMANDS = ['evalsha', 'eval', 'select'] as const;

/** SHA-256 of the password, in hex: what an ACL rule may hold instead of the password (`#HASH`). */
export function aclPasswordHash(password: string): string {
  return createHash('sha256').update(password, 'utf8').digest('hex');
}

/**
 * The rules of the agent's ACL user, from nothing (`reset`): on, the password
 * given by its hash, its own keys, no Pub/Sub channel, and only the commands of
 * the counters. No DEL, FLUSHALL, KEYS, SCAN, CONFIG, SCRIPT, ACL, MONITOR or
 * CLIENT: a leaked password reaches this agent's counters and nothing else.
 */
export function counterAclRules(scope: CounterScope, passwordHash: string): string[] {
  if (!/^[0-9a-f]{64}$/.test(passwordHash)) throw new Error('the password hash must be 64 lowercase hex digits (SHA-256)');
  return [
    'reset',
    'on',
    `#${passwordHash}`,
    `~${counterKeyPrefix(scope)}*`,
    'resetchannels',
    '-@all',
    ...[...CLIENT_COMMANDS, ...SCRIPT_COMMANDS].map((command) => `+${command}`),
  ];
}

/** The user's line in a Redis ACL file (`aclfile`): `user NAME RULES...`. */
export function counterAclFileLine(scope: CounterScope, passwordHash: string): string {
  return ['user', counterAclUser(scope), ...counterAclRules(scope, passwordHash)].join(' ');
}

/** The same as a command: ACL SETUSER NAME RULES... */
export function counterAclSetUser(scope: CounterScope, passwordHash: string): string[] {
  return ['ACL', 'SETUSER', counterAclUser(scope), ...counterAclRules(scope, passwordHash)];
}

/** The first line of the documented ACL file: nobody reaches Redis without a user and password. */
export const DEFAULT_USER_OFF = 'user default off resetpass resetkeys resetchannels -@all';
