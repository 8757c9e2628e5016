import { execFile, spawn } from 'node:child_process';
import { createPublicKey } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditLog, loadSigner } from '../audit/index.ts';
import { decisionRecord } from '../audit/test-support.ts';
import { keyIdOf, toJwks } from '../bundle/index.ts';
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
    readInput: async (path) => inputs[path] ?? readFile(path, 'utf8'),
    readInputBytes: async (path) => (inputs[path] === undefined ? readFile(path) : Buffer.from(inputs[path])),
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

  const EHR = 'input: { namespace: finance, agent: finance-agent, tool: ehr, action: read_record, params: { patient: p-1, ssn: "123-45-6789", notes: private } }';
  const OVER_LIMIT = 'input: { namespace: finance, agent: finance-agent, tool: stripe-payments, action: create_payment, params: { amount: 50000, currency: USD, account: "1234567890" } }';
  const casesFile = async (name: string, cases: { name: string; input: string; expect: string }[]): Promise<string> => {
    const path = join(dir, name);
    await writeFile(path, `cases:\n${cases.map((c) => `  - name: ${c.name}\n    ${c.input}\n    expect: ${c.expect}\n`).join('')}`);
    return path;
  };

  it('passes cases that assert reasons (exactly or by a part), sanitized params, what was redacted and the approval key', async () => {
    const path = await casesFile('answers.yaml', [
      { name: 'health record', input: EHR, expect: '{ decision: sanitize, reasons: [{ contains: "has no conditions" }, "redacted notes:param, ssn:ssn"], params: { patient: p-1, ssn: "[REDACTED:ssn]", notes: "[REDACTED]" }, redacted: ["ssn:ssn", "notes:param"] }' },
      { name: 'over the limit', input: OVER_LIMIT, expect: '{ decision: approval_needed, reasons: ["params.amount 50000 > gt 5000"], approval: true }' },
      { name: 'the approval key itself', input: OVER_LIMIT, expect: '{ decision: approval_needed, approval: "94d27721e7d48c327ff92794b4eca85b38c484834b4e6caa594615d23a955265" }' },
      { name: 'no approval key on a sanitize', input: EHR, expect: '{ decision: sanitize, approval: false }' },
    ]);
    const { code, stdout } = await runInProcess(['test', '-f', SAMPLES, path]);
    expect(stdout).toMatch(/^4 passed, 0 failed$/m);
    expect(code).toBe(0);
  });

  it.each([
    { name: 'a reason that is not in the answer', expect: '{ decision: approval_needed, reasons: ["params.amount 50000 > max 5000"] }', input: OVER_LIMIT, message: 'reasons: reason 0: expected "params.amount 50000 > max 5000", got ["params.amount 50000 > gt 5000"]' },
    { name: 'fewer reasons than the answer gives', expect: '{ decision: sanitize, reasons: [{ contains: redacted }] }', input: EHR, message: 'reasons: 2 reasons, not 1' },
    { name: 'a reason by a part it does not contain', expect: '{ decision: approval_needed, reasons: [{ contains: "> max" }] }', input: OVER_LIMIT, message: 'reason 0: expected one containing "> max"' },
    { name: 'sanitized params that differ', expect: '{ decision: sanitize, params: { patient: p-1, ssn: "123-45-6789", notes: "[REDACTED]" } }', input: EHR, message: 'params: expected {"notes":"[REDACTED]","patient":"p-1","ssn":"123-45-6789"}, got {"notes":"[REDACTED]","patient":"p-1","ssn":"[REDACTED:ssn]"}' },
    { name: 'params on an answer that has none', expect: '{ decision: approval_needed, params: {} }', input: OVER_LIMIT, message: 'params: expected {}, got none' },
    { name: 'less redacted than expected', expect: '{ decision: sanitize, redacted: ["ssn:ssn"] }', input: EHR, message: 'redacted: expected ["ssn:ssn"], got ["notes:param","ssn:ssn"]' },
    { name: 'another approval key', expect: '{ decision: approval_needed, approval: "0000" }', input: OVER_LIMIT, message: 'approval: expected 0000, got 94d27721' },
    { name: 'no approval key where one is expected', expect: '{ decision: sanitize, approval: true }', input: EHR, message: 'approval: expected an approval key, got none' },
  ])('fails a case that expects $name, saying what differs', async ({ name, expect: expectation, input, message }) => {
    const path = await casesFile(`${name.replaceAll(' ', '-')}.yaml`, [{ name, input, expect: expectation }]);
    const { code, stdout } = await runInProcess(['test', '-f', SAMPLES, path]);
    expect(stdout).toContain(`FAIL ${name}`);
    expect(stdout).toContain(message);
    expect(code).toBe(1);
  });

  it.each([
    { name: 'reasons that are not a list', expect: '{ decision: allow, reasons: "x" }', message: 'expect.reasons must be a list' },
    { name: 'a reason of another shape', expect: '{ decision: allow, reasons: [{ contain: x }] }', message: 'each of expect.reasons must be a string, or {contains: TEXT}' },
    { name: 'redacted that is not a list of strings', expect: '{ decision: allow, redacted: [1] }', message: 'expect.redacted must be a list of PATH:DETECTOR' },
    { name: 'an approval that is a number', expect: '{ decision: allow, approval: 1 }', message: 'expect.approval must be the approval key, or true or false' },
  ])('refuses a cases file with $name: exit 2', async ({ name, expect: expectation, message }) => {
    const path = await casesFile(`bad-${name.replaceAll(' ', '-')}.yaml`, [{ name, input: OVER_LIMIT, expect: expectation }]);
    const { code, stderr } = await runInProcess(['test', '-f', SAMPLES, path]);
    expect(stderr).toContain(message);
    expect(code).toBe(2);
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

  it.each([
    ['eval', '--help'],
    ['test', '--help'],
    ['bundle', '--help'],
    ['bundle', 'build', '--help'],
    ['bundle', 'inspect', '--help'],
    ['bundle', 'verify', '--help'],
    ['bundle', 'keygen', '--help'],
    ['audit', '--help'],
    ['audit', 'verify', '--help'],
    ['audit', 'keygen', '--help'],
  ].map((args) => ({ args, command: args.filter((arg) => arg !== '--help').join(' ') })))('$command --help: its own usage on standard output, exit 0 (the real binary)', async ({ args, command }) => {
    const { code, stdout, stderr } = await portcullis(args);
    expect(stdout.startsWith(`Usage: portcullis ${command}`)).toBe(true);
    expect(stdout).toContain('-h, --help');
    expect(stderr).toBe('');
    expect(code).toBe(0);
  }, 30_000);

  it.each([
    { name: 'help for a subcommand that does not exist', args: ['help', 'audit', 'frobnicate'], message: 'no help for audit frobnicate' },
    { name: 'a bundle subcommand with a flag it does not know', args: ['bundle', 'inspect', '--frobnicate', 'b'], message: 'Usage: portcullis bundle inspect BUNDLE' },
    { name: 'eval with manifests and a bundle', args: ['eval', '-f', SAMPLES, '--bundle', 'b', '--input', 'x.json'], message: 'not both' },
    { name: 'eval with a bundle key but no bundle', args: ['eval', '-f', SAMPLES, '--public-key', 'k.pem', '--input', 'x.json'], message: '--public-key goes with --bundle' },
  ])('exits 2 for $name', async ({ args, message }) => {
    const { code, stderr } = await runInProcess(args, { 'x.json': '{}' });
    expect(stderr).toContain(message);
    expect(code).toBe(2);
  });

  it('exits 2 naming the file that cannot be read, without a stack trace', async () => {
    const { code, stderr } = await portcullis(['bundle', 'inspect', '/nonexistent/bundle']);
    expect(stderr).toMatch(/^portcullis: cannot read \/nonexistent\/bundle: ENOENT/);
    expect(stderr).not.toMatch(/\n\s+at /);
    expect(code).toBe(2);
  }, 30_000);
});

const allowedCall = { namespace: 'finance', agent: 'finance-agent', tool: 'stripe-payments', action: 'create_payment', params: { amount: 4200, currency: 'USD', account: '1234567890' } };
const healthRecordCall = { namespace: 'finance', agent: 'finance-agent', tool: 'ehr', action: 'read_record', params: { patient: 'p-1', ssn: '123-45-6789', notes: 'private' } };

describe('portcullis eval --exit-code (the real binary)', () => {
  it.each([
    { name: 'an allowed call exits 0', call: allowedCall, flags: ['--exit-code'], code: 0, decision: 'allow' },
    { name: 'a call that needs approval exits 3, the answer printed all the same', call: designCall, flags: ['--exit-code'], code: 3, decision: 'approval_needed' },
    { name: 'a sanitized call exits 3: it is not a plain allow', call: healthRecordCall, flags: ['--exit-code'], code: 3, decision: 'sanitize' },
    { name: 'a denied call exits 0 without --exit-code', call: { ...designCall, delegation: ['planner-agent'] }, flags: [], code: 0, decision: 'deny' },
  ])('$name', async ({ call, flags, code, decision }) => {
    const outcome = await portcullis(['eval', '-f', SAMPLES, '--input', '-', ...flags], JSON.stringify(call));
    expect(JSON.parse(outcome.stdout)).toMatchObject({ decision });
    expect(outcome.code).toBe(code);
  }, 30_000);

  it('a call that is not valid exits 1, not 3: no decision was made', async () => {
    const { code, stdout } = await portcullis(['eval', '-f', SAMPLES, '--input', '-', '--exit-code'], JSON.stringify({ ...designCall, params: [1] }));
    expect(stdout).toBe('');
    expect(code).toBe(1);
  }, 30_000);
});

describe('portcullis eval --bundle (the real binary)', () => {
  let dir = '';
  const path = (name: string): string => join(dir, name);
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'portcullis-eval-bundle-'));
    expect((await runInProcess(['bundle', 'keygen', '--out', path('keys')])).code).toBe(0);
    expect((await runInProcess(['bundle', 'keygen', '--out', path('other-keys')])).code).toBe(0);
    expect((await runInProcess(['bundle', 'build', '-f', SAMPLES, '--tenant', 'finance', '--key', path('keys/private.pem'), '--out', path('finance.tar.gz')])).code).toBe(0);
    expect((await runInProcess(['bundle', 'build', '-f', SAMPLES, '--tenant', 'finance', '--key', path('keys/private.pem'), '--out', path('tampered')])).code).toBe(0);
    await writeFile(path('tampered/data.json'), (await readFile(path('tampered/data.json'), 'utf8')).replace('"approval_needed"', '"allow"'));
    const publicKey = createPublicKey(await readFile(path('keys/public.pem'), 'utf8'));
    await writeFile(path('jwks.json'), JSON.stringify(await toJwks(new Map([[await keyIdOf(publicKey), publicKey]]))));
  }, 60_000);
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('answers from a verified bundle as from its manifests, naming the bundle revision', async () => {
    const fromBundle = await portcullis(['eval', '--bundle', path('finance.tar.gz'), '--public-key', path('keys/public.pem'), '--input', '-'], JSON.stringify(designCall));
    const fromManifests = await portcullis(['eval', '-f', SAMPLES, '--input', '-'], JSON.stringify(designCall));
    expect(fromBundle.stderr).toBe('');
    expect(fromBundle.code).toBe(0);
    const { revision, ...answer } = JSON.parse(fromBundle.stdout) as Record<string, unknown>;
    const { revision: _compiled, ...expected } = JSON.parse(fromManifests.stdout) as Record<string, unknown>;
    expect(answer).toEqual(expected);
    expect(revision).toMatch(/^1-[0-9a-f]{16}$/);
  }, 30_000);

  it('takes the keys as a JWK set, and --exit-code with it', async () => {
    const { code, stdout } = await portcullis(['eval', '--bundle', path('finance.tar.gz'), '--jwks', path('jwks.json'), '--input', '-', '--exit-code'], JSON.stringify(designCall));
    expect(JSON.parse(stdout)).toMatchObject({ decision: 'approval_needed' });
    expect(code).toBe(3);
  }, 30_000);

  it.each([
    { name: 'a bundle whose data was changed after signing', bundle: 'tampered', key: 'keys/public.pem', args: [], message: /bundle refused \(bundle_digest_mismatch\)/ },
    { name: 'a bundle signed with another key than the one given', bundle: 'finance.tar.gz', key: 'other-keys/public.pem', args: [], message: /bundle refused \(bundle_\w+\)/ },
    { name: 'a bundle of another tenant than the one asked for', bundle: 'finance.tar.gz', key: 'keys/public.pem', args: ['--tenant', 'payroll'], message: /bundle refused \(bundle_tenant_mismatch\)/ },
  ])('refuses $name: exit 1, no answer', async ({ bundle, key, args, message }) => {
    const { code, stdout, stderr } = await portcullis(['eval', '--bundle', path(bundle), '--public-key', path(key), ...args, '--input', '-'], JSON.stringify(designCall));
    expect(stderr).toMatch(message);
    expect(stdout).toBe('');
    expect(code).toBe(1);
  }, 30_000);

  it('refuses a bundle given without a key: exit 2, naming the flags', async () => {
    const { code, stdout, stderr } = await portcullis(['eval', '--bundle', path('tampered'), '--input', '-'], JSON.stringify(designCall));
    expect(stderr).toContain('a bundle is used only once its signature is checked: give --public-key FILE or --jwks FILE');
    expect(stdout).toBe('');
    expect(code).toBe(2);
  }, 30_000);

  it('uses an unverified bundle only when told to, and warns that it did', async () => {
    const { code, stdout, stderr } = await portcullis(['eval', '--bundle', path('tampered'), '--insecure-skip-verify', '--input', '-'], JSON.stringify(designCall));
    expect(stderr).toMatch(/warning: the signature of .*tampered was not checked \(--insecure-skip-verify\)/);
    expect(JSON.parse(stdout)).toHaveProperty('decision');
    expect(code).toBe(0);
  }, 30_000);

  it('a key file that is not a key: exit 2', async () => {
    const { code, stderr } = await portcullis(['eval', '--bundle', path('finance.tar.gz'), '--public-key', SAMPLES, '--input', '-'], JSON.stringify(designCall));
    expect(stderr).toContain(`--public-key ${SAMPLES}: not an Ed25519 public key in PEM`);
    expect(code).toBe(2);
  }, 30_000);
});

/** Runs the real binary with its standard output closed by the reader before anything is written, as `| head -0` does. */
async function withClosedPipe(args: string[], stdin: string): Promise<Outcome> {
  const child = spawn(process.execPath, ['bin/portcullis.js', ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  child.stdout.destroy();
  child.stdin.end(stdin);
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  const code = await new Promise<number>((resolve) => {
    child.on('close', (exit: number | null) => {
      resolve(exit ?? -1);
    });
  });
  return { code, stdout: '', stderr };
}

describe('a reader that closes the pipe early (the real binary)', () => {
  it('eval ends quietly, with its own exit status', async () => {
    const { code, stderr } = await withClosedPipe(['eval', '-f', SAMPLES, '--input', '-', '--exit-code'], JSON.stringify(designCall));
    expect(stderr).toBe('');
    expect(code).toBe(3);
  }, 30_000);

  it('audit verify ends quietly, with its own exit status', async () => {
    const { code, stderr } = await withClosedPipe(['audit', 'verify', '-'], '{"junk":true}\n');
    expect(stderr).toBe('');
    expect(code).toBe(1);
  }, 30_000);
});

describe('portcullis audit verify refuses the trail rewritten (the real binary)', () => {
  let dir = '';
  /** The lines of a log written by one run of a sidecar, in a file of its own. */
  const run = async (name: string, decisions: number): Promise<string[]> => {
    const file = join(dir, name);
    const audit = await AuditLog.open({ tenant: 'finance', namespace: 'finance', agent: 'finance-agent', signer: await loadSigner(join(dir, 'keys', 'audit-key.pem')), stream: { write: () => undefined }, file, log: pino({ level: 'silent' }) });
    for (let i = 0; i < decisions; i++) audit.record(decisionRecord({ decision: { ...decisionRecord().decision, decision: 'deny', decisionId: `${name}-${i}` } }));
    await audit.close();
    return (await readFile(file, 'utf8')).split('\n').filter((line) => line !== '');
  };
  let log: string[] = [];
  let other: string[] = [];
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'portcullis-audit-attacks-'));
    expect((await runInProcess(['audit', 'keygen', '--out', join(dir, 'keys')])).code).toBe(0);
    log = await run('audit.log', 5);
    other = await run('other.log', 1);
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  const verify = (lines: string[]): Promise<Outcome> => portcullis(['audit', 'verify', '-', '--key', join(dir, 'keys', 'audit-key.pub.pem')], lines.length === 0 ? '' : `${lines.join('\n')}\n`);

  it('verifies the log as written: exit 0', async () => {
    expect((await verify(log)).code).toBe(0);
  }, 30_000);

  it.each([
    { attack: 'a second genuine chain spliced in before the log', lines: (): string[] => [...other, ...log], finding: /^spliced: /m },
    { attack: 'a second genuine chain spliced in inside the log', lines: (): string[] => [...log.slice(0, 3), ...other, ...log.slice(3)], finding: /^spliced: /m },
    { attack: 'an entry with a duplicated decision key, the first saying allow', lines: (): string[] => log.map((line) => line.replace('"decision":"deny"', '"decision":"allow","decision":"deny"')), finding: /^malformed: .*duplicate key "decision"/m },
    { attack: 'a junk top-level object', lines: (): string[] => [...log, '{"junk":{"decision":"allow"}}'], finding: /^foreign: /m },
  ])('$attack: TAMPERED, exit 1', async ({ lines, finding }) => {
    const { code, stdout } = await verify(lines());
    expect(stdout).toMatch(finding);
    expect(stdout).toMatch(/^TAMPERED: /m);
    expect(code).toBe(1);
  }, 30_000);

  it('an empty log: EMPTY, exit 4', async () => {
    const { code, stdout } = await verify([]);
    expect(stdout).toContain('the input is empty: it proves nothing');
    expect(code).toBe(4);
  }, 30_000);
});

