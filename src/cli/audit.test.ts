import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditLog, loadSigner } from '../audit/index.ts';
import { decisionRecord, editLine, indexOfSeq } from '../audit/test-support.ts';
import type { CliIo } from './io.ts';
import { run } from './run.ts';

interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

async function portcullis(args: string[], stdin = ''): Promise<Outcome> {
  let stdout = '';
  let stderr = '';
  const io: CliIo = {
    stdout: (text) => (stdout += text),
    stderr: (text) => (stderr += text),
    readInput: (path) => (path === '-' ? Promise.resolve(stdin) : readFile(path, 'utf8')),
  };
  const code = await run(args, io);
  return { code, stdout, stderr };
}

let dir: string;
let log: string;
let lines: string[];
const publicKey = (): string => join(dir, 'keys', 'audit-key.pub.pem');

/** Writes `lines` to a file of its own and verifies it with the sidecar's key. */
async function verifyLines(name: string, content: string[], ...extra: string[]): Promise<Outcome> {
  const path = join(dir, name);
  await writeFile(path, `${content.join('\n')}\n`);
  return portcullis(['audit', 'verify', path, '--key', publicKey(), ...extra]);
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'portcullis-audit-cli-'));
  expect((await portcullis(['audit', 'keygen', '--out', join(dir, 'keys')])).code).toBe(0);
  log = join(dir, 'audit.log');
  const audit = await AuditLog.open({
    tenant: 'finance',
    namespace: 'finance',
    agent: 'finance-agent',
    signer: await loadSigner(join(dir, 'keys', 'audit-key.pem')),
    stream: { write: () => undefined },
    file: log,
    checkpointRecords: 3,
    log: pino({ level: 'silent' }),
  });
  for (let i = 0; i < 7; i++) audit.record(decisionRecord({ decision: { ...decisionRecord().decision, decisionId: `d-${i}` } }));
  await audit.close();
  lines = (await readFile(log, 'utf8')).split('\n').filter((line) => line !== '');
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('portcullis audit keygen', () => {
  it('writes a private key only its owner reads, and the public key', async () => {
    expect((await stat(join(dir, 'keys', 'audit-key.pem'))).mode & 0o777).toBe(0o600);
    expect(await readFile(publicKey(), 'utf8')).toMatch(/^-----BEGIN PUBLIC KEY-----/);
  });

  it('does not overwrite a key', async () => {
    const { code, stderr } = await portcullis(['audit', 'keygen', '--out', join(dir, 'keys')]);
    expect(code).toBe(2);
    expect(stderr).toMatch(/audit-key\.pem exists; keygen does not overwrite keys/);
  });
});

describe('portcullis audit verify', () => {
  it('verifies the log a sidecar wrote and closed: exit 0', async () => {
    const { code, stdout } = await portcullis(['audit', 'verify', log, '--key', publicKey()]);
    expect(code).toBe(0);
    expect(stdout).toMatch(/^chain [0-9a-f-]{36} finance\/finance-agent: lines 1–\d+, seq 0–\d+, 7 decisions, \d+ checkpoints, all signed, closed, key \S+\n/);
    expect(stdout).toMatch(/verified: 1 chain, \d+ entries, every one in place and signed, every chain closed/);
  });

  it('reads standard input for -', async () => {
    const { code } = await portcullis(['audit', 'verify', '-', '--key', publicKey()], `${lines.join('\n')}\n`);
    expect(code).toBe(0);
  });

  it('an edited record: exit 1, naming its seq and line', async () => {
    const tampered = [...lines];
    const at = indexOfSeq(tampered, 4);
    tampered[at] = editLine(tampered[at] ?? '', (entry) => (entry.decision = 'deny'));
    const { code, stdout } = await verifyLines('edited.log', tampered);
    expect(code).toBe(1);
    expect(stdout).toContain(`edited: line ${at + 1}: record seq 4 of chain`);
    expect(stdout).toMatch(/TAMPERED: 1 finding/);
  });

  it('a truncated log: exit 3, naming the unsigned records', async () => {
    const { code, stdout } = await verifyLines('truncated.log', lines.slice(0, -2));
    expect(code).toBe(3);
    expect(stdout).toMatch(/unsigned: lines? [\d–]+: records? seq [\d–]+ of chain \w+ (is|are) not signed/);
    expect(stdout).toMatch(/unclosed: chain \w+ ends at seq \d+/);
    expect(stdout).toMatch(/INCOMPLETE: nothing was changed/);
  });

  it('the wrong key: exit 1', async () => {
    await portcullis(['audit', 'keygen', '--out', join(dir, 'other')]);
    const { code, stdout } = await portcullis(['audit', 'verify', log, '--key', join(dir, 'other', 'audit-key.pub.pem')]);
    expect(code).toBe(1);
    expect(stdout).toMatch(/untrusted-key: line \d+: chain \w+ is signed with key \S+, which is not a pinned key/);
  });

  it('without --key: verified, and a note that the key was not pinned', async () => {
    const { code, stdout } = await portcullis(['audit', 'verify', log]);
    expect(code).toBe(0);
    expect(stdout).toMatch(/note: no key pinned/);
  });

  it('--json prints the report', async () => {
    const { code, stdout } = await portcullis(['audit', 'verify', log, '--key', publicKey(), '--json']);
    expect(code).toBe(0);
    expect(JSON.parse(stdout)).toMatchObject({ verdict: 'verified', findings: [], chains: [{ decisions: 7, closed: true }] });
  });

  it('a file that cannot be read, a bad key file, or no FILE: exit 2', async () => {
    expect(await portcullis(['audit', 'verify', join(dir, 'missing.log')])).toMatchObject({ code: 2, stderr: expect.stringMatching(/cannot read .*missing\.log: ENOENT/) as unknown });
    await writeFile(join(dir, 'bad.pem'), 'not a key');
    expect(await portcullis(['audit', 'verify', log, '--key', join(dir, 'bad.pem')])).toMatchObject({ code: 2, stderr: expect.stringMatching(/bad\.pem: not a PEM public key/) as unknown });
    expect(await portcullis(['audit', 'verify'])).toMatchObject({ code: 2, stderr: expect.stringMatching(/audit verify needs one FILE/) as unknown });
  });
});
