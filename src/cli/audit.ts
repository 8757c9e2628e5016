// portcullis audit verify | keygen: checks an audit log the sidecar wrote
// (its --audit-file, or its stdout), and makes the key its checkpoints are
// signed with. The chain and its verification are src/audit's; this file
// reads the input, prints the report and picks the exit code.
import type { KeyObject } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { ChainSummary, Verdict, VerifyReport } from '../audit/index.ts';
import { AuditKeyError, AuditVerifier, generateAuditKey, loadPublicKeys } from '../audit/index.ts';
import type { CliIo } from './io.ts';
import { UsageError } from './io.ts';
import type { Subcommand } from './subcommands.ts';
import { runSubcommand } from './subcommands.ts';

export const AUDIT_USAGE = `Usage: portcullis audit SUBCOMMAND [flags]

Checks the audit trail a sidecar writes, and makes the key it is signed with.

Subcommands:
  verify FILE|-     check an audit log: every entry in place and signed, every
                    chain closed and joined where its after link says
  keygen --out DIR  write a new Ed25519 key pair for the audit checkpoints

Flags:
  -h, --help  show this text (portcullis audit SUBCOMMAND --help: the flags of a subcommand)
`;

export const AUDIT_VERIFY_USAGE = `Usage: portcullis audit verify FILE|- [--key PUBLIC_KEY]... [--json]

Checks an audit log: the sidecar's --audit-file, or its standard output
(kubectl logs POD -c portcullis-sidecar | portcullis audit verify -). Finds
every entry changed, dropped, inserted or reordered; every chain joined to
another where no after link says so; every checkpoint whose signature does
not verify; the entries no checkpoint signs; and every line that is neither
an audit entry nor a log line of the sidecar. Audit lines are read as strict
JSON: a line with a key twice is refused, as request bodies are.

Flags:
  --key FILE   a public key the checkpoints may be signed with (SPKI PEM, JWK or
               JWK set; repeat for the keys of a rotation); without it each chain
               is checked against the key it names itself, which proves it was not
               changed after signing, not who signed it
  --json       print the report as JSON
  -h, --help   show this text

Exit status:
  0  verified: every entry in place and signed, every chain closed
  1  tampered: an entry changed, dropped, inserted or reordered, chains spliced,
     a bad signature, a key that is not pinned, a line that is not the trail's
  2  the command could not run: usage, an unreadable file or key file
  3  incomplete: nothing changed, but the log is not whole: entries after the
     last checkpoint, a chain not closed, a line cut short, or a log that
     begins in an older (rotated) file
  4  empty: no audit entry to verify, which proves nothing
`;

export const AUDIT_KEYGEN_USAGE = `Usage: portcullis audit keygen --out DIR

Writes a new Ed25519 key pair for signing audit checkpoints: DIR/audit-key.pem
(private, mode 600, for the sidecar's --audit-key) and DIR/audit-key.pub.pem
(public, for portcullis audit verify --key). An existing key is not overwritten.

Flags:
  -o, --out DIR  the directory to write the keys to (made if missing)
  -h, --help     show this text
`;

const EXIT_CODES: Readonly<Record<Verdict, number>> = { verified: 0, tampered: 1, incomplete: 3, empty: 4 };

async function pinnedKeys(paths: string[]): Promise<Map<string, KeyObject> | undefined> {
  if (paths.length === 0) return undefined;
  const pinned = new Map<string, KeyObject>();
  for (const path of paths) for (const [kid, key] of await loadPublicKeys(path)) pinned.set(kid, key);
  return pinned;
}

const NEWLINE = 0x0a;

/**
 * Feeds the verifier line by line, as bytes it decodes itself: a file is
 * streamed, so its size is not bounded by memory for text. Lines end at "\n"
 * only, for a file as for standard input: a lone "\r" ends no line.
 */
async function readInto(verifier: AuditVerifier, path: string, io: CliIo): Promise<void> {
  let rest: Buffer = Buffer.alloc(0);
  const chunks: AsyncIterable<Buffer> | Uint8Array[] = path === '-' ? [await io.readInputBytes('-')] : (createReadStream(path) as AsyncIterable<Buffer>);
  for await (const chunk of chunks) {
    const data = rest.length === 0 ? Buffer.from(chunk) : Buffer.concat([rest, chunk]);
    let start = 0;
    for (let end = data.indexOf(NEWLINE); end >= 0; end = data.indexOf(NEWLINE, start)) {
      verifier.pushBytes(data.subarray(start, end));
      start = end + 1;
    }
    rest = data.subarray(start);
  }
  // A final newline ends the last line; it does not start another.
  if (rest.length > 0) verifier.pushBytes(rest);
}

const counted = (n: number, noun: string): string => `${n} ${noun}${n === 1 ? '' : 's'}`;

function describeChain(chain: ChainSummary, pinned: boolean): string {
  const who = chain.namespace === undefined ? '' : ` ${chain.namespace}/${chain.agent ?? ''}`;
  const state = chain.closed ? 'closed' : 'not closed';
  const signed = chain.signedThrough === chain.lastSeq ? 'all signed' : chain.signedThrough < 0 ? 'none signed' : `signed through seq ${chain.signedThrough}`;
  const key = chain.kid === undefined ? '' : `, key ${chain.kid}${chain.ephemeral === true ? ' (ephemeral)' : ''}${pinned ? '' : ' (not pinned)'}`;
  return `chain ${chain.chain}${who}: lines ${chain.firstLine}–${chain.lastLine}, seq ${chain.firstSeq}–${chain.lastSeq}, ${counted(chain.decisions, 'decision')}, ${counted(chain.checkpoints, 'checkpoint')}, ${signed}, ${state}${key}\n`;
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

export const AUDIT_SUBCOMMANDS: Readonly<Record<string, Subcommand>> = {
  verify: { usage: AUDIT_VERIFY_USAGE, run: verifyCommand },
  keygen: { usage: AUDIT_KEYGEN_USAGE, run: keygenCommand },
};

export function auditCommand(args: string[], io: CliIo): Promise<number> {
  return runSubcommand('audit', AUDIT_USAGE, AUDIT_SUBCOMMANDS, args, io);
}
