// Counters the agent cannot reset. The application shares the pod's network
// with its sidecar, so it reaches the counters' Redis too. Against a real
// redis-server set up as docs/counters.md says (the default user off, one ACL
// user per agent printed by `portcullis redis acl`) and a real `portcullis
// sidecar --counters redis --redis-password-file`, these are tried as the
// application would: with no credential, with another agent's, and with the
// sidecar's own (leaked) one.
import { randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { stringify } from 'yaml';
import { agent, toolPolicy, withRoles } from '../../src/compiler/test-support.ts';
import type { Operator } from '../../src/operator/operator.ts';
import { counterAclUser, counterKeyPrefix } from '../../src/sidecar/counters/acl.ts';
import { createCounterStore } from '../../src/sidecar/counters/index.ts';
import { createSidecarMetrics } from '../../src/sidecar/metrics.ts';
import { RESERVE_SCRIPT } from '../../src/sidecar/counters/redis-scripts.ts';
import type { TrackedProcess } from '../harness/cluster.ts';
import { eventually, spawnTracked } from '../harness/cluster.ts';
import { ensureNamespace, freePort, kubectl, REPO_ROOT } from '../harness/control-plane.ts';
import { agentKubeconfigFile, startScopedOperator } from '../harness/local-parts.ts';
import type { RedisServer } from '../harness/redis.ts';
import { startRedis } from '../harness/redis.ts';

const exec = promisify(execFile);
const plane = inject('controlPlane');
const OPERATOR_NS = 'attack-counters-system';
const NS = 'attack-counters';
const AGENT = 'payments-agent';
const OTHER = 'research-agent';
const SCOPE = { tenant: NS, namespace: NS, agent: AGENT };
const OTHER_SCOPE = { tenant: NS, namespace: NS, agent: OTHER };
const PREFIX = counterKeyPrefix(SCOPE);
/** The payments' token bucket, which the sidecar keeps under the agent's prefix. */
const BUCKET = `${PREFIX}rate:0.01:3:stripe-payments`;
/** How Redis refuses what an ACL user may not do: by command, or inside a script. */
const ACL_REFUSAL = /^(NOPERM |ERR The user executing the script can't)/;

/** Three payments, then none for a long while: rps 0.01 refills one token in 100 s. */
const POLICY = toolPolicy(NS, 'payments', [
  { name: 'payments', tool: 'stripe-payments', actions: ['create_payment'], decision: 'allow' },
], (p) => {
  p.spec.subjects = { agents: [AGENT], roles: ['payments'] };
  p.spec.mode = 'enforce';
  p.spec.rateLimits = [{ tool: 'stripe-payments', rps: 0.01, burst: 3, onExceed: 'deny' }];
});
const IDENTITY = agent(NS, AGENT, withRoles('payments'));
const payment = { tool: 'stripe-payments', action: 'create_payment', params: { amount: 100 } };

interface Answer { decision: string; rule: string }

let redis: RedisServer;
let admin: Redis;
const passwordFile = { agent: '', other: '' };
const passwords = { agent: '', other: '' };
const clients: Redis[] = [];

/** A client that never retries, so each refusal is seen as it is. */
function client(login?: { username: string; password: string }): Redis {
  const c = new Redis({ host: '127.0.0.1', port: redis.port, lazyConnect: true, enableReadyCheck: false, maxRetriesPerRequest: 0, retryStrategy: () => null, ...login });
  c.on('error', () => undefined);
  clients.push(c);
  return c;
}

/** What Redis answers a command: the error's message, or OK with the reply. */
async function answer(c: Redis, command: string, ...args: (string | number)[]): Promise<string> {
  try {
    return `OK ${JSON.stringify(await c.call(command, ...args))}`;
  } catch (error) {
    return error instanceof Error ? error.message : String(error);
  }
}

/**
 * What Redis answers a command sent by a bare client that never logs in, as an
 * application could (one connection per command): the first line of the reply.
 */
function bareAnswer(...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port: redis.port });
    let reply = '';
    socket.setTimeout(5000, () => { socket.destroy(); reject(new Error(`no answer to ${args[0] ?? ''}`)); });
    socket.on('error', reject);
    socket.on('connect', () => socket.write(`*${String(args.length)}\r\n${args.map((a) => `$${String(Buffer.byteLength(a))}\r\n${a}\r\n`).join('')}`));
    socket.on('data', (data: Buffer) => {
      reply += data.toString();
      const end = reply.indexOf('\r\n');
      if (end >= 0) {
        socket.destroy();
        resolve(reply.slice(0, end));
      }
    });
  });
}

/** The line `portcullis redis acl` prints for an agent, from the real binary. */
async function aclLine(agentName: string, file: string): Promise<string> {
  const { stdout } = await exec(process.execPath, [join(REPO_ROOT, 'bin', 'portcullis.js'), 'redis', 'acl', '--tenant', NS, '--namespace', NS, '--agent', agentName, '--password-file', file]);
  return stdout.trim();
}

async function defaultUserOff(): Promise<string> {
  const { stdout } = await exec(process.execPath, [join(REPO_ROOT, 'bin', 'portcullis.js'), 'redis', 'acl', '--default-user-off']);
  return stdout.trim();
}

beforeAll(async () => {
  passwords.agent = randomBytes(24).toString('base64url');
  passwords.other = randomBytes(24).toString('base64url');
  passwordFile.agent = join(plane.runDir, 'attack-counters-agent.password');
  passwordFile.other = join(plane.runDir, 'attack-counters-other.password');
  // As a Secret's file is: the password and a line break.
  await writeFile(passwordFile.agent, `${passwords.agent}\n`, { mode: 0o600 });
  await writeFile(passwordFile.other, `${passwords.other}\n`, { mode: 0o600 });
  redis = await startRedis(plane, { acl: [await defaultUserOff(), await aclLine(AGENT, passwordFile.agent), await aclLine(OTHER, passwordFile.other)] });
  if (redis.admin === undefined) throw new Error('startRedis gave no admin user');
  admin = client(redis.admin);
  await admin.connect();
});

afterAll(async () => {
  for (const c of clients) c.disconnect();
  await redis.stop();
});

describe('the sidecar, logged in as its own ACL user', () => {
  let operator: Operator;
  let sidecar: TrackedProcess;
  let base = '';

  const decide = async (call: Record<string, unknown>): Promise<Answer> => {
    const response = await fetch(`${base}/v1/authorize`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(call) });
    return (await response.json()) as Answer;
  };

  const spawnSidecar = async (extra: string[]): Promise<{ process: TrackedProcess; base: string }> => {
    const kubeconfig = await agentKubeconfigFile(plane, NS, AGENT);
    const [httpPort, grpcPort] = [await freePort(), await freePort()];
    const process = await spawnTracked(plane, globalThis.process.execPath, [
      join(REPO_ROOT, 'bin', 'portcullis.js'), 'sidecar', '--kubeconfig', kubeconfig, '--agent', AGENT, '--namespace', NS, '--trust-namespace', OPERATOR_NS,
      '--http-address', `127.0.0.1:${String(httpPort)}`, '--grpc-address', `127.0.0.1:${String(grpcPort)}`, '--counters', 'redis', '--redis-url', redis.url, ...extra,
    ]);
    const at = `http://127.0.0.1:${String(httpPort)}`;
    await eventually(`sidecar ${at} to load the bundle`, async () => ((await fetch(`${at}/readyz`).catch(() => undefined))?.status === 200 ? true : undefined), 60_000)
      .catch((error: unknown) => { throw new Error(`${String(error)}\nsidecar output:\n${process.output()}`); });
    return { process, base: at };
  };

  beforeAll(async () => {
    operator = await startScopedOperator(plane, 'attack-counters', OPERATOR_NS);
    await ensureNamespace(plane, NS);
    await kubectl(plane, ['apply', '--validate=strict', '-f', '-'], { input: [IDENTITY, POLICY].map((d) => stringify(d)).join('---\n') });
    ({ process: sidecar, base } = await spawnSidecar(['--redis-password-file', passwordFile.agent]));
  });

  afterAll(async () => {
    await sidecar.kill('SIGTERM');
    await operator.stop();
  });

  it('still limits with the restricted user: 3 payments allowed, the 4th and 5th denied by the rate limit', async () => {
    const answers: Answer[] = [];
    for (let i = 0; i < 5; i++) answers.push(await decide(payment));
    expect(answers.map((a) => `${a.decision} ${a.rule}`)).toEqual(['allow payments', 'allow payments', 'allow payments', 'deny rateLimits[0]', 'deny rateLimits[0]']);
    // The sidecar is connected as the agent's user, and its counters are under the agent's prefix.
    const clientList = String(await admin.call('CLIENT', 'LIST'));
    expect(clientList).toContain(`user=${counterAclUser(SCOPE)} `);
    expect(await admin.keys('*')).toEqual([BUCKET]);
  });

  it('keeps the password out of its command line and environment, which the pod spec shows', async () => {
    const cmdline = await readFile(`/proc/${String(sidecar.pid)}/cmdline`, 'utf8');
    const environ = await readFile(`/proc/${String(sidecar.pid)}/environ`, 'utf8');
    expect(cmdline).toContain(passwordFile.agent);
    expect(cmdline).not.toContain(passwords.agent);
    expect(environ).not.toContain(passwords.agent);
    expect(sidecar.output()).not.toContain(passwords.agent);
  });

  it.each([
    ['read the spent bucket', ['HGETALL', BUCKET]],
    ['refill it', ['HSET', BUCKET, 'tokens', '3']],
    ['delete it', ['DEL', BUCKET]],
    ['flush everything', ['FLUSHALL']],
    ['list the keys', ['KEYS', '*']],
    ['delete it by script', ['EVAL', "return redis.call('DEL', KEYS[1])", '1', BUCKET]],
    ['log in as the default user with no password', ['AUTH', 'default', '']],
    ['log in as the default user with a guess', ['AUTH', 'default', 'redis']],
    ["log in as the agent's user with a guess", ['AUTH', counterAclUser(SCOPE), 'password']],
  ])('the application with no credential of its own cannot %s', async (_, command) => {
    expect(await bareAnswer(...command)).toMatch(/^-(NOAUTH|WRONGPASS) /);
    expect(await admin.hget(BUCKET, 'tokens')).not.toBe('3');
    expect(await decide(payment)).toMatchObject({ decision: 'deny', rule: 'rateLimits[0]' });
  });

  it("another agent's credential can neither read, reset nor spend this agent's counters, by command or by script", async () => {
    const other = client({ username: counterAclUser(OTHER_SCOPE), password: passwords.other });
    await other.connect();
    expect(await answer(other, 'HGETALL', BUCKET)).toMatch(ACL_REFUSAL);
    expect(await answer(other, 'HSET', BUCKET, 'tokens', '3')).toMatch(ACL_REFUSAL);
    // The counters' own reserve script, run on this agent's key: a bucket of rps 1000 and burst 1000 refilled.
    expect(await answer(other, 'EVAL', RESERVE_SCRIPT, 1, BUCKET, 1, 0, 0, 1000, 1000, 1_000_000)).toMatch(ACL_REFUSAL);
    // A script that builds the key name itself rather than declaring it: the ACL still checks the key.
    expect(await answer(other, 'EVAL', `return redis.call('HSET', '${BUCKET}', 'tokens', '3')`, 0)).toMatch(ACL_REFUSAL);
    expect(await admin.hget(BUCKET, 'tokens')).not.toBe('3');
    // Its own keys it may count.
    expect(await answer(other, 'EVAL', RESERVE_SCRIPT, 1, `${counterKeyPrefix(OTHER_SCOPE)}rate:1:1:t`, 1, 0, 0, 1, 1, 2000)).toMatch(/^OK /);
    expect(await decide(payment)).toMatchObject({ decision: 'deny', rule: 'rateLimits[0]' });
  });

  it.each<[string, (string | number)[]]>([
    ['DEL its own bucket', ['DEL', BUCKET]],
    ['UNLINK its own bucket', ['UNLINK', BUCKET]],
    ['EXPIRE its own bucket', ['EXPIRE', BUCKET, 0]],
    ['RENAME its own bucket away', ['RENAME', BUCKET, `${PREFIX}x`]],
    ['FLUSHALL', ['FLUSHALL']],
    ['FLUSHDB', ['FLUSHDB']],
    ['CONFIG SET', ['CONFIG', 'SET', 'maxmemory-policy', 'allkeys-random']],
    ['CONFIG GET', ['CONFIG', 'GET', '*']],
    ['SCRIPT FLUSH', ['SCRIPT', 'FLUSH']],
    ['FUNCTION FLUSH', ['FUNCTION', 'FLUSH']],
    ['ACL SETUSER', ['ACL', 'SETUSER', 'default', 'on', 'nopass', '+@all', '~*']],
    ['ACL LIST', ['ACL', 'LIST']],
    ['KEYS', ['KEYS', '*']],
    ['SCAN', ['SCAN', 0]],
    ['MONITOR', ['MONITOR']],
    ['CLIENT KILL', ['CLIENT', 'KILL', 'USER', 'test-admin']],
    ['REPLICAOF', ['REPLICAOF', '127.0.0.1', 1]],
    ['SWAPDB', ['SWAPDB', 0, 1]],
    ['MOVE its own bucket to another database', ['MOVE', BUCKET, 1]],
    ['SHUTDOWN', ['SHUTDOWN', 'NOSAVE']],
    ['SUBSCRIBE', ['SUBSCRIBE', 'x']],
    ['DEL in a script, on its own key', ['EVAL', "return redis.call('DEL', KEYS[1])", 1, BUCKET]],
  ])("the sidecar's own credential, leaked, may not %s", async (_, [command, ...args]) => {
    const leaked = client({ username: counterAclUser(SCOPE), password: passwords.agent });
    await leaked.connect();
    expect(await answer(leaked, String(command), ...args)).toMatch(ACL_REFUSAL);
    expect(await admin.exists(BUCKET)).toBe(1);
  });

  it("refuses to count with another agent's password: every limited call is denied, never counted under another user", async () => {
    const wrong = await spawnSidecarDenied(['--redis-password-file', passwordFile.other]);
    expect(wrong.answer).toMatchObject({ decision: 'deny', rule: 'portcullis:state-unavailable' });
  });

  /** A sidecar whose Redis login fails: it loads the bundle, then denies calls that need counters. */
  async function spawnSidecarDenied(extra: string[]): Promise<{ answer: Answer }> {
    const { process, base: at } = await spawnSidecar(extra);
    try {
      const response = await fetch(`${at}/v1/authorize`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(payment) });
      return { answer: (await response.json()) as Answer };
    } finally {
      await process.kill('SIGTERM');
    }
  }
});

describe('the Redis URL', () => {
  it("may name a database: the agent's user counts there too, under its own prefix only", async () => {
    const store = createCounterStore({ kind: 'redis', url: `${redis.url}/3`, login: { username: counterAclUser(OTHER_SCOPE), password: passwords.other } }, { metrics: createSidecarMetrics(), log: pino({ level: 'silent' }) });
    try {
      await store.ready();
      const obligations = { calls: [], rate: [{ key: 'search', rps: 1, burst: 2 }], spend: [] };
      const reservation = await store.reserve(OTHER_SCOPE, { tool: 'search' }, obligations, new Date());
      expect(reservation.counters.rate).toEqual({ search: 2 });
      const inDb3 = client(redis.admin);
      await inDb3.connect();
      await inDb3.select(3);
      expect(await inDb3.keys('*')).toEqual([`${counterKeyPrefix(OTHER_SCOPE)}rate:1:2:search`]);
    } finally {
      await store.close();
    }
  });

  it.each([
    ['a password', (port: number, secret: string) => `redis://:${secret}@127.0.0.1:${String(port)}`],
    ['a password in the query', (port: number, secret: string) => `redis://127.0.0.1:${String(port)}?password=${secret}`],
  ])('with %s is refused at start, without repeating the password', async (_, url) => {
    const secret = randomBytes(12).toString('hex');
    const sidecar = await spawnTracked(plane, process.execPath, [
      join(REPO_ROOT, 'bin', 'portcullis.js'), 'sidecar', '--agent', AGENT, '--namespace', NS, '--trust-namespace', OPERATOR_NS, '--counters', 'redis', '--redis-url', url(redis.port, secret),
    ]);
    expect(await sidecar.exited).toBe(2);
    expect(sidecar.output()).toMatch(/the Redis URL redis:\/\/127\.0\.0\.1:\d+\S* (carries credentials|has a query or fragment)/);
    expect(sidecar.output()).not.toContain(secret);
  });
});
