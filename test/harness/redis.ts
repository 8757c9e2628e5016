// A real redis-server on a free loopback port, for tests and benchmarks of the
// sidecar's shared counters. The binary comes from hack/redis-server.sh
// (Debian's package, unpacked into the cache) unless TEST_ASSET_REDIS_SERVER
// names one. The process is recorded in the run's pid file (spawnTracked), so
// the control plane's reaper kills it if the run dies.

import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { TrackedProcess } from './cluster.ts';
import { eventually, spawnTracked } from './cluster.ts';
import type { ControlPlaneInfo } from './control-plane.ts';
import { freePort, REPO_ROOT } from './control-plane.ts';

const execFileAsync = promisify(execFile);

/** The redis-server to run: $TEST_ASSET_REDIS_SERVER, else what hack/redis-server.sh installs (fails loudly, never skips). */
export async function findRedisServer(): Promise<string> {
  const named = process.env.TEST_ASSET_REDIS_SERVER;
  if (named !== undefined && named !== '') return named;
  const { stdout } = await execFileAsync('bash', [join(REPO_ROOT, 'hack', 'redis-server.sh'), '--print-env']).catch((error: unknown) => {
    throw new Error(`hack/redis-server.sh could not provide redis-server: ${String(error)}`);
  });
  const path = /^TEST_ASSET_REDIS_SERVER=(.+)$/m.exec(stdout)?.[1];
  if (path === undefined) throw new Error(`hack/redis-server.sh printed no TEST_ASSET_REDIS_SERVER (got ${JSON.stringify(stdout)})`);
  return path;
}

export interface RedisServer {
  url: string;
  port: number;
  /** With the acl option: a user allowed everything, for tests to set up and inspect what the others may not. */
  admin?: { username: string; password: string };
  /** Kills the server at once (SIGKILL, as a crash would); it stays down until start(). */
  kill(): Promise<void>;
  /** Starts it again on the same port, empty (no persistence). */
  start(): Promise<void>;
  /** Stops it for good. */
  stop(): Promise<void>;
}

/** Answers true once the server replies to PING (or refuses it for want of a login, when its default user is off). */
function pings(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => { done(false); });
    socket.on('error', () => { done(false); });
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (data: Buffer) => { done(/^(?:\+PONG|-NOAUTH)/.test(data.toString())); });
  });
}

export interface RedisOptions {
  /**
   * Lines of the server's ACL file (`user NAME RULES...`), loaded at every
   * start; an admin user allowed everything is added. Without it Redis' default
   * user is on with no password, as Redis ships.
   */
  acl?: readonly string[];
}

export async function startRedis(plane: Pick<ControlPlaneInfo, 'runDir'>, options: RedisOptions = {}): Promise<RedisServer> {
  const binary = await findRedisServer();
  const port = await freePort();
  const dir = join(plane.runDir, `redis-${String(port)}`);
  await mkdir(dir, { recursive: true });
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--loglevel', 'warning'];
  let admin: { username: string; password: string } | undefined;
  if (options.acl !== undefined) {
    admin = { username: 'test-admin', password: randomBytes(16).toString('hex') };
    const file = join(dir, 'users.acl');
    await writeFile(file, [...options.acl, `user ${admin.username} on >${admin.password} ~* &* +@all`, ''].join('\n'), { mode: 0o600 });
    args.push('--aclfile', file);
  }
  let process: TrackedProcess | undefined;
  const start = async (): Promise<void> => {
    const started = await spawnTracked(plane, binary, args);
    process = started;
    let exited = false;
    void started.exited.then(() => { exited = true; });
    await eventually(`redis-server on port ${String(port)} to answer PING`, async () => {
      if (exited) throw new Error(`redis-server exited: ${started.output()}`);
      return (await pings(port)) ? true : undefined;
    }, 20_000, 50);
  };
  const kill = async (): Promise<void> => {
    await process?.kill('SIGKILL');
    process = undefined;
  };
  await start();
  return {
    url: `redis://127.0.0.1:${String(port)}`,
    port,
    ...(admin === undefined ? {} : { admin }),
    kill,
    start,
    stop: async () => {
      await process?.kill('SIGTERM');
      process = undefined;
    },
  };
}
