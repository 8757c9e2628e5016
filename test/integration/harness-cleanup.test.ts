// A run that fails, or is killed outright, leaves no etcd or kube-apiserver behind.

import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { access, mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../harness/control-plane.ts';

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function recordedPids(runDir: string): Promise<number[]> {
  const text = await readFile(join(runDir, 'pids'), 'utf8').catch(() => '');
  return text.split('\n').filter(Boolean).map(Number);
}

async function waitUntil(what: string, check: () => Promise<boolean> | boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

function nestedRun(fixture: string, runDir: string): { child: ChildProcess; output: () => string; exited: Promise<number | null> } {
  const vitest = join(REPO_ROOT, 'node_modules', 'vitest', 'vitest.mjs');
  const child = spawn(process.execPath, [vitest, 'run', '--config', join(REPO_ROOT, 'test', 'harness', 'fixtures', 'vitest.config.ts')], {
    env: { ...process.env, PORTCULLIS_TEST_RUN_DIR: runDir, PORTCULLIS_FIXTURE: fixture, CI: 'true' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (d: Buffer) => { output += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { output += d.toString(); });
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => { r(code); }));
  return { child, output: () => output, exited };
}

describe('the control-plane harness', () => {
  it('stops every process when a test fails', async () => {
    const runDir = await mkdtemp(join(tmpdir(), 'portcullis-nested-'));
    const run = nestedRun('failing.fixture.ts', runDir);
    const code = await run.exited;
    expect(code, run.output()).toBe(1);
    expect(run.output()).toContain('failing on purpose');
    const pids = await recordedPids(runDir);
    expect(pids).toHaveLength(2); // etcd and kube-apiserver
    await waitUntil('the nested run processes to exit', () => pids.every((pid) => !isAlive(pid)), 15_000);
  }, 120_000);

  it('stops every process when the run itself is killed', async () => {
    const runDir = await mkdtemp(join(tmpdir(), 'portcullis-nested-'));
    const run = nestedRun('hanging.fixture.ts', runDir);
    const ready = join(runDir, 'fixture-ready');
    await waitUntil('the nested run to use its control plane', () => access(ready).then(() => true, () => false), 90_000);
    const pids = await recordedPids(runDir);
    expect(pids).toHaveLength(2);
    expect(pids.every(isAlive)).toBe(true);
    run.child.kill('SIGKILL'); // no teardown runs: only the reaper can clean up
    await run.exited;
    await waitUntil('the reaper to stop the orphaned processes', () => pids.every((pid) => !isAlive(pid)), 15_000);
  }, 120_000);
});
