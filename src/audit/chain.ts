// One hash chain of audit entries, as its writer keeps it: the next seq, the
// hash of the last entry, and how many entries the last checkpoint left
// unsigned. Pure: it makes entries; writing them is the caller's.
import type { ChainRef, CheckpointEntry, DecisionEntry, DecisionFields, OpenEntry, PublicKeyJwk, ResponseEntry, ResponseOutcome } from './entry.ts';
import { AUDIT_FORMAT_VERSION, checkpointMessage, entryHash } from './entry.ts';

/** Signs checkpoints. Synchronous: a checkpoint takes its place in the chain at once. */
export interface ChainSigner {
  /** The RFC 7638 thumbprint of the public key. */
  kid: string;
  jwk: PublicKeyJwk;
  /** True when the key was made at start and is known nowhere else. */
  ephemeral: boolean;
  sign(message: Uint8Array): Uint8Array;
}

export interface ChainOpening {
  tenant: string;
  namespace: string;
  agent: string;
  /** The last entry already in the file this chain is appended to. */
  after?: ChainRef;
}

type Unhashed<T> = Omit<T, 'hash'>;

export class AuditChain {
  readonly id: string;
  private readonly signer: ChainSigner;
  private nextSeq = 0;
  private head: string | null = null;
  private unsignedCount = 0;
  private closed = false;

  constructor(id: string, signer: ChainSigner) {
    this.id = id;
    this.signer = signer;
  }

  /** Entries since the last checkpoint (the opening entry included, until the first). */
  get unsigned(): number {
    return this.unsignedCount;
  }

  /** The opening entry: always the first, seq 0. */
  open(opening: ChainOpening, time: Date): OpenEntry {
    if (this.nextSeq !== 0) throw new Error(`audit chain ${this.id} is already open`);
    const { kid, jwk, ephemeral } = this.signer;
    return this.seal<OpenEntry>({
      ...this.base('open', time),
      tenant: opening.tenant,
      namespace: opening.namespace,
      agent: opening.agent,
      key: { kid, jwk, ephemeral },
      ...(opening.after === undefined ? {} : { after: opening.after }),
    });
  }

  decision(fields: DecisionFields, time: Date): DecisionEntry {
    this.mustBeWritable();
    return this.seal<DecisionEntry>({ ...this.base('decision', time), ...fields });
  }

  /** The second entry of a decision whose answer was to be redacted: what became of the answer. */
  response(fields: DecisionFields, response: ResponseOutcome, time: Date): ResponseEntry {
    this.mustBeWritable();
    return this.seal<ResponseEntry>({ ...this.base('response', time), ...fields, response });
  }

  /** Signs everything so far. A final checkpoint closes the chain: nothing may follow it. */
  checkpoint(time: Date, final: boolean): CheckpointEntry {
    this.mustBeWritable();
    const unsigned: Unhashed<Omit<CheckpointEntry, 'sig'>> = { ...this.base('checkpoint', time), kid: this.signer.kid, final };
    const hash = entryHash(unsigned);
    const sig = Buffer.from(this.signer.sign(checkpointMessage(hash))).toString('base64url');
    this.advance(hash);
    this.unsignedCount = 0;
    this.closed = final;
    return { ...unsigned, sig, hash };
  }

  private mustBeWritable(): void {
    if (this.nextSeq === 0) throw new Error(`audit chain ${this.id} is not open`);
    if (this.closed) throw new Error(`audit chain ${this.id} is closed`);
  }

  private base<T extends OpenEntry['type'] | DecisionEntry['type'] | ResponseEntry['type'] | CheckpointEntry['type']>(type: T, time: Date): { v: typeof AUDIT_FORMAT_VERSION; type: T; chain: string; seq: number; time: string; prev: string | null } {
    return { v: AUDIT_FORMAT_VERSION, type, chain: this.id, seq: this.nextSeq, time: time.toISOString(), prev: this.head };
  }

  private seal<T extends OpenEntry | DecisionEntry | ResponseEntry>(entry: Unhashed<T>): T {
    const hash = entryHash(entry);
    this.advance(hash);
    this.unsignedCount++;
    return { ...entry, hash } as T;
  }

  private advance(hash: string): void {
    this.head = hash;
    this.nextSeq++;
  }
}
