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
    readInputBytes: async (path) => (path === '-' ? Buffer.from(stdin) : readFile(path)),
  };
  const code = await run(args, io);
  return { code, stdout, stderr };
}

let dir: string;
let log: string;
let lines: string[];
/** The log of another run of a sidecar with the same key, in a file of its own: genuine, but not this log's. */
let otherRun: string[];
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
  for (let i = 0; i < 7; i++) audit.record(decisionRecord({ decision: { ...decisionRecord().decision, decision: i % 2 === 0 ? 'allow' : 'deny', decisionId: `d-${i}` } }));
  await audit.close();
  lines = (await readFile(log, 'utf8')).split('\n').filter((line) => line !== '');
  const other = await AuditLog.open({
    tenant: 'finance',
    namespace: 'finance',
    agent: 'finance-agent',
    signer: await loadSigner(join(dir, 'keys', 'audit-key.pem')),
    stream: { write: () => undefined },
    file: join(dir, 'other-run.log'),
    log: pino({ level: 'silent' }),
  });
  other.record(decisionRecord({ decision: { ...decisionRecord().decision, decisionId: 'other-run' } }));
  await other.close();
  otherRun = (await readFile(join(dir, 'other-run.log'), 'utf8')).split('\n').filter((line) => line !== '');
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

describe('portcullis audit verify refuses what is not the trail as written', () => {
  it.each([
    { attack: 'a genuine chain of another run spliced in before the log', content: (): string[] => [...otherRun, ...lines], finding: /^spliced: line \d+: chain \w+ names no entry it was opened after/m },
    { attack: 'a genuine chain of another run spliced in inside the log', content: (): string[] => [...lines.slice(0, 4), ...otherRun, ...lines.slice(4)], finding: /^spliced: lines? [\d–]+: records of chain \w+ after chain \w+ opened/m },
    {
      attack: 'an entry with a duplicated decision key, the first saying allow',
      content: (): string[] => lines.map((line) => line.replace('"decision":"deny"', '"decision":"allow","decision":"deny"')),
      finding: /^malformed: line \d+: audit entry is malformed: the line is not strict JSON \(duplicate key "decision"/m,
    },
    { attack: 'a junk top-level object', content: (): string[] => [...lines, '{"decision":"allow","tool":"stripe-payments"}'], finding: /^foreign: line \d+: not an audit entry, nor a log line of the sidecar/m },
  ])('$attack: exit 1', async ({ attack, content, finding }) => {
    const { code, stdout } = await verifyLines(`${attack.replaceAll(' ', '-')}.log`, content());
    expect(stdout).toMatch(finding);
    expect(stdout).toMatch(/^TAMPERED: /m);
    expect(code).toBe(1);
  });

  it('an empty log: exit 4, saying it is empty and proves nothing', async () => {
    await writeFile(join(dir, 'empty.log'), '');
    const { code, stdout } = await portcullis(['audit', 'verify', join(dir, 'empty.log'), '--key', publicKey()]);
    expect(stdout).toContain('no-records: the input is empty: it proves nothing');
    expect(stdout).toMatch(/^EMPTY: no audit entry to verify, so nothing is proven/m);
    expect(code).toBe(4);
  });

  it('an empty standard input: exit 4', async () => {
    const { code, stdout } = await portcullis(['audit', 'verify', '-'], '');
    expect(stdout).toMatch(/^EMPTY: /m);
    expect(code).toBe(4);
  });

  it('a line that a lone carriage return would split: one line, read as a whole', async () => {
    const { code, stdout } = await verifyLines('carriage-return.log', [`${lines[0] ?? ''}\r{"junk":true}`, ...lines.slice(1)]);
    expect(stdout).toMatch(/^unreadable: line 1: an audit line that is not valid JSON/m);
    expect(stdout).toMatch(/: lines 2–\d+, seq 1–\d+, /);
    expect(code).toBe(1);
  });
});

describe('portcullis audit verify reads bytes as strict UTF-8', () => {
  /** The log with one line's bytes changed: a replacement character's UTF-8 bytes, or others. */
  async function verifyBytes(name: string, edit: (bytes: Buffer) => Buffer): Promise<Outcome> {
    const path = join(dir, name);
    await writeFile(path, edit(Buffer.from(`${lines.join('\n')}\n`)));
    return portcullis(['audit', 'verify', path, '--key', publicKey()]);
  }

  it('an audit line with a byte that is not UTF-8: unreadable, not read as a replacement character', async () => {
    const { code, stdout } = await verifyBytes('not-utf8.log', (bytes) => {
      const at = bytes.indexOf('"decision":"deny"') + '"decision":"'.length;
      bytes[at] = 0xff;
      return bytes;
    });
    expect(stdout).toMatch(/^unreadable: line \d+: an audit line that is not valid JSON/m);
    expect(code).toBe(1);
  });

  it('a line of other bytes that are not UTF-8: foreign', async () => {
    const { code, stdout } = await verifyBytes('foreign-bytes.log', (bytes) => Buffer.concat([bytes, Buffer.from([0x6f, 0x6b, 0xc0, 0xaf, 0x0a])]));
    expect(stdout).toMatch(/^foreign: line \d+: .*text that is not UTF-8/m);
    expect(code).toBe(1);
  });

  it('the same from standard input', async () => {
    const stdin = `${lines.join('\n')}\n`;
    const outcome = await portcullis(['audit', 'verify', '-', '--key', publicKey()], stdin);
    expect(outcome.code).toBe(0);
  });
});

describe('portcullis audit --help', () => {
  it.each([
    { args: ['audit', '--help'], usage: 'Usage: portcullis audit SUBCOMMAND' },
    { args: ['audit', 'verify', '--help'], usage: 'Usage: portcullis audit verify FILE|-' },
    { args: ['audit', 'verify', 'audit.log', '-h'], usage: 'Usage: portcullis audit verify FILE|-' },
    { args: ['audit', 'keygen', '--help'], usage: 'Usage: portcullis audit keygen --out DIR' },
    { args: ['help', 'audit', 'verify'], usage: 'Usage: portcullis audit verify FILE|-' },
  ])('$args: the usage on standard output, exit 0', async ({ args, usage }) => {
    const { code, stdout, stderr } = await portcullis(args);
    expect(stdout.startsWith(usage)).toBe(true);
    expect(stderr).toBe('');
    expect(code).toBe(0);
  });

  it("a usage error of a subcommand shows that subcommand's usage", async () => {
    const { code, stderr } = await portcullis(['audit', 'verify', '--frobnicate', 'x.log']);
    expect(stderr).toMatch(/^portcullis: Unknown option '--frobnicate'/);
    expect(stderr).toContain('Usage: portcullis audit verify FILE|-');
    expect(code).toBe(2);
  });

  it('no subcommand: exit 2 with the usage', async () => {
    const { code, stderr } = await portcullis(['audit']);
    expect(stderr).toContain('audit needs a subcommand');
    expect(stderr).toContain('Usage: portcullis audit SUBCOMMAND');
    expect(code).toBe(2);
  });
});
