import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CliIo } from './io.ts';
import { run } from './run.ts';

const exec = promisify(execFile);
const SAMPLES = 'config/samples/finance.yaml';
const CASES = 'src/cli/testdata/finance.cases.yaml';

interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the real binary, as users do. */
async function portcullis(args: string[], stdin?: string): Promise<Outcome> {
  const child = exec(process.execPath, ['bin/portcullis.js', ...args], { env: process.env });
  if (stdin !== undefined) child.child.stdin?.end(stdin);
  try {
    const { stdout, stderr } = await child;
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failure = error as { code?: number; stdout?: string; stderr?: string };
    return { code: failure.code ?? -1, stdout: failure.stdout ?? '', stderr: failure.stderr ?? '' };
  }
}

/** Runs a command in-process with files read from a map (or the disk for other paths). */
async function runInProcess(args: string[], inputs: Record<string, string> = {}): Promise<Outcome> {
  let stdout = '';
  let stderr = '';
  const io: CliIo = {
    stdout: (text) => (stdout += text),
    stderr: (text) => (stderr += text),
    readInput: async (path) => inputs[path] ?? (await import('node:fs/promises')).readFile(path, 'utf8'),
  };
  const code = await run(args, io);
  return { code, stdout, stderr };
}

const designCall = {
  namespace: 'finance',
  agent: 'finance-agent',
  tool: 'stripe-payments',
  action: 'create_payment',
  params: { amount: 50000, currency: 'USD', account: '1234567890' },
  user: { id: 'alice', attributes: { region: 'eu' } },
  time: '2026-11-23T14:00:00Z',
};

describe('portcullis eval (the real binary)', () => {
  it('answers the design example with approval_needed, naming rule, revision, reason and approval key', async () => {
    const { code, stdout, stderr } = await portcullis(['eval', '-f', SAMPLES, '--input', '-'], JSON.stringify(designCall));
    expect(stderr).toBe('');
    expect(code).toBe(0);
    const answer = JSON.parse(stdout) as Record<string, unknown>;
    expect(Object.keys(answer).sort()).toEqual(['approval', 'decision', 'enforced', 'policy', 'reasons', 'revision', 'rule']);
    expect(answer).toMatchObject({ decision: 'approval_needed', enforced: true, policy: 'payments', rule: 'over-limit', reasons: ['params.amount 50000 > gt 5000'] });
    expect(answer.revision).toMatch(/^[0-9a-f]{64}$/);
    expect(answer.approval).toMatch(/^[0-9a-f]{64}$/);
  }, 30_000);

  it('returns sanitized params for the health record example', async () => {
    const call = { namespace: 'finance', agent: 'finance-agent', tool: 'ehr', action: 'read_record', params: { ssn: '123-45-6789', contact: 'dana@example.com', notes: 'private' } };
    const { stdout } = await portcullis(['eval', '-f', 'config/samples', '-i', '-'], JSON.stringify(call));
    expect(JSON.parse(stdout)).toMatchObject({
      decision: 'sanitize',
      rule: 'ehr-read',
      params: { ssn: '[REDACTED:ssn]', contact: '[REDACTED:email]', notes: '[REDACTED]' },
    });
  }, 30_000);

  it('fails a call of the wrong shape with an error, not a decision', async () => {
    const { code, stdout, stderr } = await portcullis(['eval', '-f', SAMPLES, '--input', '-'], JSON.stringify({ ...designCall, params: [1] }));
    expect(code).toBe(1);
    expect(stdout).toBe('');
    expect(stderr).toContain('invalid input: params: must be a JSON object');
  }, 30_000);
});

describe('portcullis test (the real binary)', () => {
  it('passes every design example case', async () => {
    const { code, stdout } = await portcullis(['test', '-f', SAMPLES, CASES]);
    expect(stdout).toMatch(/^17 passed, 0 failed$/m);
    expect(code).toBe(0);
  }, 30_000);
});

describe('portcullis test reports failures', () => {
  let dir = '';
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'portcullis-cli-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('exits 1 and names the case, what differs and the reasons', async () => {
    const cases = join(dir, 'wrong.yaml');
    await writeFile(
      cases,
      'cases:\n  - name: a big payment is wrongly expected to pass\n    input: { namespace: finance, agent: finance-agent, tool: stripe-payments, action: create_payment, params: { amount: 50000, currency: USD, account: "1234567890" } }\n    expect: { decision: allow }\n',
    );
    const { code, stdout } = await runInProcess(['test', '-f', SAMPLES, cases]);
    expect(code).toBe(1);
    expect(stdout).toContain('FAIL a big payment is wrongly expected to pass');
    expect(stdout).toContain('decision: expected allow, got approval_needed');
    expect(stdout).toContain('params.amount 50000 > gt 5000');
    expect(stdout).toContain('0 passed, 1 failed');
  });

  it('rejects a cases file with a misspelt field instead of passing it unchecked', async () => {
    const cases = join(dir, 'typo.yaml');
    await writeFile(cases, 'cases:\n  - name: typo\n    input: {}\n    expect: { decison: allow }\n');
    const { code, stderr } = await runInProcess(['test', '-f', SAMPLES, cases]);
    expect(code).toBe(2);
    expect(stderr).toContain('unknown field expect.decison');
  });
});

describe('usage', () => {
  it.each([
    { name: 'eval without manifests', args: ['eval', '--input', 'x.json'], message: 'eval needs manifests' },
    { name: 'eval without a call', args: ['eval', '-f', SAMPLES], message: 'eval needs the call' },
    { name: 'an unknown option', args: ['eval', '--frobnicate'], message: 'Unknown option' },
    { name: 'test without cases', args: ['test', '-f', SAMPLES], message: 'at least one cases file' },
    { name: 'an unknown command', args: ['frobnicate'], message: 'unknown command frobnicate' },
  ])('exits 2 with the usage for $name', async ({ args, message }) => {
    const { code, stderr } = await runInProcess(args);
    expect(code).toBe(2);
    expect(stderr).toContain(message);
    expect(stderr).toContain('Usage: portcullis');
  });

  it('exits 1 naming file, document, resource, rule and field for a bad manifest', async () => {
    const bad = 'apiVersion: portcullis.dev/v1alpha1\nkind: ToolPolicy\nmetadata: { name: p, namespace: finance }\nspec:\n  subjects: { agents: [a] }\n  rules:\n    - { name: r, tool: t, decision: allow, when: [ { param: x, regex: "(?<=a)b" } ] }\n';
    const dir = await mkdtemp(join(tmpdir(), 'portcullis-bad-'));
    try {
      await writeFile(join(dir, 'bad.yaml'), bad);
      const { code, stderr } = await runInProcess(['eval', '-f', join(dir, 'bad.yaml'), '--input', 'call.json'], { 'call.json': '{}' });
      expect(code).toBe(1);
      expect(stderr).toContain(`regex_error: ${join(dir, 'bad.yaml')} document 0, ToolPolicy finance/p, rule r, field spec.rules[0].when[0].regex`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('prints help', async () => {
    const { code, stdout } = await runInProcess(['help', 'eval']);
    expect(code).toBe(0);
    expect(stdout).toContain('Usage: portcullis eval');
  });
});
