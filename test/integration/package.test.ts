// The package as npm users get it: `npm pack` (which builds dist/ first), the tarball installed
// into an empty directory (its dependencies from the registry), and the installed `portcullis`
// command run under this Node: --help, eval on config/samples, audit keygen and audit verify.
// Node does not strip types under node_modules, so this passes only if the package ships JavaScript.

import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditLog, loadSigner } from '../../src/audit/index.ts';
import { decisionRecord } from '../../src/audit/test-support.ts';
import { REPO_ROOT } from '../harness/control-plane.ts';

const run = promisify(execFile);
let dir = '';
let portcullis = '';

interface Outcome { code: number; stdout: string; stderr: string }

/** The installed command under this Node, with the opa the tests use; never throws on a non-zero exit. */
async function installed(args: string[]): Promise<Outcome> {
  try {
    const { stdout, stderr } = await run(process.execPath, [portcullis, ...args], { cwd: dir, env: { ...process.env, PORTCULLIS_OPA: process.env.TEST_ASSET_OPA ?? 'opa' } });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code?: number; stdout?: string; stderr?: string };
    return { code: failed.code ?? -1, stdout: failed.stdout ?? '', stderr: failed.stderr ?? '' };
  }
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'portcullis-package-'));
  // prepack builds dist/ first, as it does before every npm publish.
  const { stdout } = await run('npm', ['pack', '--silent', '--pack-destination', dir], { cwd: REPO_ROOT, maxBuffer: 16 * 1024 * 1024 });
  const tarball = join(dir, stdout.trim().split('\n').pop() ?? '');
  const consumer = join(dir, 'consumer');
  await run('mkdir', [consumer]);
  await writeFile(join(consumer, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
  await run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error', tarball], { cwd: consumer, timeout: 240_000 });
  dir = consumer;
  portcullis = join(consumer, 'node_modules', '.bin', 'portcullis');
}, 300_000);

afterAll(async () => {
  await rm(join(dir, '..'), { recursive: true, force: true });
});

describe('the packed package, installed into an empty directory', () => {
  it('holds JavaScript, not the TypeScript sources', async () => {
    const root = join(dir, 'node_modules', 'portcullis');
    const entries = await readdir(root);
    expect(entries).toEqual(expect.arrayContaining(['bin', 'crds', 'dist', 'package.json']));
    expect(entries).not.toContain('src');
    expect(await readdir(join(root, 'dist', 'cli'))).toContain('main.js');
  });

  it('runs portcullis --help', async () => {
    const { code, stdout } = await installed(['--help']);
    expect(stdout).toMatch(/^Usage: portcullis COMMAND/);
    expect(code).toBe(0);
  });

  it.each([
    { call: 'a small payment in USD', currency: 'USD', decision: 'allow' },
    { call: 'a payment in GBP', currency: 'GBP', decision: 'deny' },
  ])('decides $call with eval on config/samples: $decision', async ({ currency, decision }) => {
    const input = join(dir, `call-${currency}.json`);
    await writeFile(input, JSON.stringify({ tool: 'stripe-payments', action: 'create_payment', namespace: 'finance', agent: 'finance-agent', params: { amount: 4200, currency, account: '1234567890' } }));
    const { code, stdout, stderr } = await installed(['eval', '-f', join(REPO_ROOT, 'config', 'samples'), '--input', input]);
    expect(stderr).toBe('');
    expect((JSON.parse(stdout) as { decision: string }).decision).toBe(decision);
    expect(code).toBe(0);
  }, 30_000);

  it('makes an audit key, and verifies a log signed with it', async () => {
    expect((await installed(['audit', 'keygen', '--out', join(dir, 'keys')])).code).toBe(0);
    const file = join(dir, 'audit.log');
    const audit = await AuditLog.open({ tenant: 'finance', namespace: 'finance', agent: 'finance-agent', signer: await loadSigner(join(dir, 'keys', 'audit-key.pem')), stream: { write: () => undefined }, file, log: pino({ level: 'silent' }) });
    for (let i = 0; i < 3; i++) audit.record(decisionRecord({ decision: { ...decisionRecord().decision, decisionId: `packaged-${i}` } }));
    await audit.close();
    expect((await readFile(file, 'utf8')).length).toBeGreaterThan(0);
    const { code, stdout } = await installed(['audit', 'verify', file, '--key', join(dir, 'keys', 'audit-key.pub.pem')]);
    expect(stdout).not.toMatch(/TAMPERED/);
    expect(code).toBe(0);
  }, 30_000);

  it('gives TypeScript users the API types through the exports map', async () => {
    await writeFile(join(dir, 'use-api.ts'), "import { GROUP } from 'portcullis/api';\nimport type { ToolPolicy } from 'portcullis/api';\nexport const group: string = GROUP;\nexport type Policy = ToolPolicy;\n");
    await writeFile(join(dir, 'tsconfig.json'), JSON.stringify({ compilerOptions: { module: 'nodenext', moduleResolution: 'nodenext', strict: true, noEmit: true, types: [], skipLibCheck: true }, files: ['use-api.ts'] }));
    await run(process.execPath, [join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(dir, 'tsconfig.json')], { cwd: dir });
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', "import { GROUP } from 'portcullis/api'; console.log(GROUP);"], { cwd: dir });
    expect(stdout.trim()).toBe('portcullis.dev');
  }, 30_000);
});
