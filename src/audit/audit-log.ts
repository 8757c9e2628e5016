// The audit log of a sidecar: one chain per run, an entry per decision as a
// pino JSON line on the sidecar's log stream and, optionally, in a file; a
// signed checkpoint every N entries or T seconds, and a final one on close.
import { randomUUID } from 'node:crypto';
import type { DestinationStream, Logger } from 'pino';
import { pino } from 'pino';
import type { DecisionObserver, DecisionRecord } from '../sidecar/authorizer.ts';
import { AppendFile, readTail } from './append-file.ts';
import type { ChainSigner } from './chain.ts';
import { AuditChain } from './chain.ts';
import type { AuditEntry, ChainRef } from './entry.ts';
import { AUDIT_LINE_KEY, decisionFields } from './entry.ts';
import { ephemeralSigner } from './keys.ts';

export const DEFAULT_CHECKPOINT_RECORDS = 1000;
export const DEFAULT_CHECKPOINT_INTERVAL_MS = 10_000;

/** The log's stream; flushSync, when it has one (pino's SonicBoom does), is called on close. */
export type AuditStream = DestinationStream & { flushSync?: () => void };

export interface AuditLogOptions {
  tenant: string;
  namespace: string;
  agent: string;
  /** Signs checkpoints. Without one, a key is made at start (ephemeral) and a warning logged. */
  signer?: ChainSigner;
  /** The stream the sidecar's logger writes to: one writer, so audit and log lines never interleave. */
  stream: AuditStream;
  /** A file to append the same lines to, fsynced at every checkpoint and on close. */
  file?: string;
  /** A checkpoint after this many entries... */
  checkpointRecords?: number;
  /** ...or after this long with entries unsigned, whichever comes first. */
  checkpointIntervalMs?: number;
  /** For what goes wrong with the audit log itself. */
  log: Logger;
  now?: () => Date;
  newChainId?: () => string;
}

/** A decision was made after the audit log closed: it cannot be recorded, so it must not stand. */
export class AuditLogClosedError extends Error {
  constructor() {
    super('the audit log is closed: the decision cannot be recorded');
    this.name = 'AuditLogClosedError';
  }
}

const MESSAGES: Readonly<Record<AuditEntry['type'], string>> = { open: 'audit chain opened', decision: 'audit decision', response: 'audit response', checkpoint: 'audit checkpoint' };

export class AuditLog {
  /** Records every decision; pass it to the Authorizer's observers. Throws once the log is closed. */
  readonly observer: DecisionObserver = (record) => {
    this.record(record);
  };

  private readonly chain: AuditChain;
  private readonly lines: Logger;
  private readonly stream: AuditStream;
  private readonly file: AppendFile | undefined;
  private readonly log: Logger;
  private readonly now: () => Date;
  private readonly checkpointRecords: number;
  private readonly timer: NodeJS.Timeout;
  private syncing: Promise<void> = Promise.resolve();
  private fileFailed = false;
  private closing: Promise<void> | undefined;

  private constructor(options: AuditLogOptions, chain: AuditChain, file: AppendFile | undefined) {
    this.chain = chain;
    this.file = file;
    this.stream = options.stream;
    this.log = options.log;
    this.now = options.now ?? ((): Date => new Date());
    this.checkpointRecords = options.checkpointRecords ?? DEFAULT_CHECKPOINT_RECORDS;
    // Its own logger, always at info: the sidecar's --log-level must not silence the audit trail.
    this.lines = pino({ level: 'info', base: { component: 'audit' } }, {
      write: (line: string): void => {
        this.stream.write(line);
        this.file?.append(line);
      },
    });
    this.timer = setInterval(() => {
      if (this.chain.unsigned > 0) this.checkpoint();
    }, options.checkpointIntervalMs ?? DEFAULT_CHECKPOINT_INTERVAL_MS);
    this.timer.unref();
  }

  /** Opens a new chain, after the last entry of the file when there is one. */
  static async open(options: AuditLogOptions): Promise<AuditLog> {
    const checkpointRecords = options.checkpointRecords ?? DEFAULT_CHECKPOINT_RECORDS;
    const interval = options.checkpointIntervalMs ?? DEFAULT_CHECKPOINT_INTERVAL_MS;
    if (!Number.isSafeInteger(checkpointRecords) || checkpointRecords < 1) throw new RangeError(`checkpointRecords must be a whole number ≥ 1, not ${checkpointRecords}`);
    if (!Number.isFinite(interval) || interval <= 0) throw new RangeError(`checkpointIntervalMs must be a positive number, not ${interval}`);
    let signer = options.signer;
    if (signer === undefined) {
      signer = ephemeralSigner();
      options.log.warn(
        { kid: signer.kid },
        'audit checkpoints are signed with an ephemeral key (no audit key given): its public key is in the chain’s opening entry, so a verifier can check the chain but not who wrote it; give a key file (portcullis audit keygen) to make the trail provable',
      );
    }
    let after: ChainRef | undefined;
    let file: AppendFile | undefined;
    if (options.file !== undefined) {
      const tail = await readTail(options.file);
      after = tail.last;
      file = await AppendFile.open(options.file);
      if (!tail.endsWithNewline) file.append('\n');
    }
    const chain = new AuditChain(options.newChainId?.() ?? randomUUID(), signer);
    const audit = new AuditLog(options, chain, file);
    audit.write(chain.open({ tenant: options.tenant, namespace: options.namespace, agent: options.agent, ...(after === undefined ? {} : { after }) }, audit.now()));
    return audit;
  }

  get chainId(): string {
    return this.chain.id;
  }

  /** Records one decision (or what became of its answer), and signs when N entries are unsigned. */
  record(record: DecisionRecord): void {
    if (this.closing !== undefined) throw new AuditLogClosedError();
    const { time, fields, response } = decisionFields(record);
    this.write(response === undefined ? this.chain.decision(fields, time) : this.chain.response(fields, response, time));
    if (this.chain.unsigned >= this.checkpointRecords) this.checkpoint();
  }

  /** Signs every entry so far, and fsyncs the file behind it. */
  checkpoint(): void {
    if (this.closing !== undefined) return;
    this.write(this.chain.checkpoint(this.now(), false));
    this.syncFile();
  }

  /**
   * Writes the final checkpoint, so a clean stop shows as such, and waits until
   * every line is written: the file fsynced and closed, the stream flushed.
   * Rejects when the file could not be written.
   */
  close(): Promise<void> {
    this.closing ??= this.finish();
    return this.closing;
  }

  private async finish(): Promise<void> {
    clearInterval(this.timer);
    this.write(this.chain.checkpoint(this.now(), true));
    await this.syncing;
    try {
      await this.file?.close();
    } finally {
      this.flushStream();
    }
  }

  private flushStream(): void {
    try {
      this.stream.flushSync?.();
    } catch (error) {
      // A stream still opening (a file destination) keeps its lines and writes them once open.
      this.log.warn({ err: error }, 'the audit stream could not be flushed on close');
    }
  }

  private write(entry: AuditEntry): void {
    this.lines.info({ [AUDIT_LINE_KEY]: entry }, MESSAGES[entry.type]);
  }

  private syncFile(): void {
    const file = this.file;
    if (file === undefined) return;
    this.syncing = this.syncing
      .then(() => file.sync())
      .then(
        () => {
          if (this.fileFailed) this.log.info({ file: file.path }, 'audit file written again');
          this.fileFailed = false;
        },
        (error: unknown) => {
          if (!this.fileFailed) this.log.error({ err: error, file: file.path }, 'audit file cannot be written: entries wait in memory and are written on the next checkpoint');
          this.fileFailed = true;
        },
      );
  }
}
