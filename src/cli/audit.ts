// portcullis audit verify | keygen: checks an audit log the sidecar wrote
// (its --audit-file, or its stdout), and makes the key its checkpoints are
// signed with. The chain and its verification are src/audit's; this file
// reads the input, prints the report and picks the exit code.
import type { KeyObject } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import type { ChainSummary, Verdict, VerifyReport } from '../audit/index.ts';
import { AuditKeyError, AuditVerifier, generateAuditKey, loadPublicKeys } from '../audit/index.ts';
import type { CliIo } from './io.ts';
import { UsageError } from './io.ts';

export const AUDIT_USAGE = `Usage: portcullis audit SUBCOMMAND [options]

  verify FILE|- [--key PUBLIC_KEY]... [--json]
         check an audit log: the sidecar's --audit-file, or its standard output
         (kubectl logs POD -c portcullis-sidecar | portcullis audit verify -);
         ordinary log lines are skipped. Finds every entry changed, dropped,
         inserted or reordered, every checkpoint whose signature does not
         verify, and the entries no checkpoint signs.
         --key   the public key checkpoints must be signed with (SPKI PEM, JWK
                 or JWK set; repeat for several); without it each chain is
                 checked against the key it names itself
         --json  print the report as JSON
         exit 0  verified: every entry in place and signed, every chain closed
              1  tampered: an entry changed, dropped, inserted or reordered, a
                 bad signature, or a key that is not pinned
              3  incomplete: nothing changed, but entries after the last
                 checkpoint, a chain not closed, or a log that begins in an
                 older file (rotated)
              2  the command could not run (usage, unreadable file or key)
  keygen --out DIR
         write a new Ed25519 key pair: audit-key.pem (private, for the
         sidecar's --audit-key) and audit-key.pub.pem (public, for --key)
`;

const EXIT_CODES: Readonly<Record<Verdict, number>> = { verified: 0, tampered: 1, incomplete: 3, empty: 4 };

async function pinnedKeys(paths: string[]): Promise<Map<string, KeyObject> | undefined> {
  if (paths.length === 0) return undefined;
  const pinned = new Map<string, KeyObject>();
  for (const path of paths) for (const [kid, key] of await loadPublicKeys(path)) pinned.set(kid, key);
  return pinned;
}

/** Feeds the verifier line by line: a file is streamed, so its size is not bounded by memory for text. */
async function readInto(verifier: AuditVerifier, path: string, io: CliIo): Promise<void> {
  if (path === '-') {
    const text = await io.readInput('-');
    const lines = text.split('\n');
    if (lines.at(-1) === '') lines.pop();
    for (const line of lines) verifier.push(line);
    return;
  }
  const lines = createInterface({ input: createReadStream(path, { encoding: 'utf8' }), crlfDelay: Infinity });
  for await (const line of lines) verifier.push(line);
}

const counted = (n: number, noun: string): string => `${n} ${noun}${n === 1 ? '' : 's'}`;

function describeChain(chain: ChainSummary, pinned: boolean): string {
  const who = chain.namespace === undefined ? '' : ` ${chain.namespace}/${chain.agent ?? ''}`;
  const state = chain.closed ? 'closed' : 'not closed';
  const signed = chain.signedThrough === chain.lastSeq ? 'all signed' : chain.signedThrough < 0 ? 'none signed' : `signed through seq ${chain.signedThrough}`;
  const key = chain.kid === undefined ? '' : `, key ${chain.kid}${chain.ephemeral === true ? ' (ephemeral)' : ''}${pinned ? '' : ' (not pinned)'}`;
  return `chain ${chain.chain}${who}: lines ${chain.firstLine}–${chain.lastLine}, seq 0–${chain.lastSeq}, ${counted(chain.decisions, 'decision')}, ${counted(chain.checkpoints, 'checkpoint')}, ${signed}, ${state}${key}\n`;
}

function describeReport(report: VerifyReport, pinned: boolean): string {
  const out = report.chains.map((chain) => describeChain(chain, pinned));
  out.push(...report.findings.map((finding) => `${finding.kind}: ${finding.message}\n`));
  out.push(...report.notices.map((notice) => `note: ${notice}\n`));
  const count = report.findings.length;
  const entries = report.chains.reduce((sum, chain) => sum + chain.entries, 0);
  const verdicts: Readonly<Record<Verdict, string>> = {
    verified: `verified: ${counted(report.chains.length, 'chain')}, ${entries} entries, every one in place and signed, every chain closed`,
    tampered: `TAMPERED: ${counted(count, 'finding')}`,
    incomplete: `INCOMPLETE: nothing was changed, but the log is not whole to its end (${counted(count, 'finding')})`,
    empty: 'EMPTY: no audit entry to verify, so nothing is proven: a sidecar writes its opening entry when it starts; check the path, or whether the entries were removed',
  };
  out.push(`${verdicts[report.verdict]} (${report.lines.audit} audit lines, ${report.lines.other} other lines)\n`);
  return out.join('');
}

async function verifyCommand(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseArgs({ args, options: { key: { type: 'string', multiple: true }, json: { type: 'boolean' } }, allowPositionals: true });
  const [path] = positionals;
  if (path === undefined || positionals.length > 1) throw new UsageError('audit verify needs one FILE, or - for standard input');
  const keyPaths = values.key ?? [];
  try {
    const pinned = await pinnedKeys(keyPaths);
    const verifier = new AuditVerifier(pinned === undefined ? {} : { pinned });
    await readInto(verifier, path, io);
    const report = verifier.finish();
    io.stdout(values.json === true ? `${JSON.stringify(report, null, 2)}\n` : describeReport(report, pinned !== undefined));
    return EXIT_CODES[report.verdict];
  } catch (error) {
    if (error instanceof AuditKeyError) {
      io.stderr(`portcullis: ${error.message}\n`);
      return 2;
    }
    const code = (error as NodeJS.ErrnoException).code;
    if (typeof code === 'string' && code.startsWith('E')) {
      io.stderr(`portcullis: cannot read ${path}: ${(error as Error).message}\n`);
      return 2;
    }
    throw error;
  }
}

async function keygenCommand(args: string[], io: CliIo): Promise<number> {
  const { values } = parseArgs({ args, options: { out: { type: 'string', short: 'o' } } });
  if (values.out === undefined) throw new UsageError('audit keygen needs --out DIR');
  const privatePath = join(values.out, 'audit-key.pem');
  const exists = await stat(privatePath).then(
    () => true,
    () => false,
  );
  if (exists) throw new UsageError(`${privatePath} exists; keygen does not overwrite keys`);
  const key = generateAuditKey();
  await mkdir(values.out, { recursive: true });
  await writeFile(privatePath, key.privateKeyPem, { mode: 0o600 });
  await writeFile(join(values.out, 'audit-key.pub.pem'), key.publicKeyPem);
  io.stdout(`key ${key.kid} written to ${values.out}: audit-key.pem for the sidecar's --audit-key, audit-key.pub.pem for portcullis audit verify --key\n`);
  return 0;
}

const SUBCOMMANDS: Readonly<Record<string, (args: string[], io: CliIo) => Promise<number>>> = {
  verify: verifyCommand,
  keygen: keygenCommand,
};

export async function auditCommand(args: string[], io: CliIo): Promise<number> {
  const [name, ...rest] = args;
  if (name === undefined || name === '--help' || name === '-h') {
    io.stdout(AUDIT_USAGE);
    return name === undefined ? 2 : 0;
  }
  const sub = Object.hasOwn(SUBCOMMANDS, name) ? SUBCOMMANDS[name] : undefined;
  if (sub === undefined) throw new UsageError(`unknown audit subcommand ${name}`);
  return sub(rest, io);
}
