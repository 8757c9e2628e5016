// The audit file: lines appended in order without blocking the caller, one
// write in flight at a time, fsync on demand; and a look at the end of an
// existing file, so a new chain can name the last entry before it.
import type { FileHandle } from 'node:fs/promises';
import { mkdir, open } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { ChainRef } from './entry.ts';
import { lastEntryRef } from './entry.ts';

const TAIL_CHUNK = 64 * 1024;
/** How far back to look for the last entry: an entry is well under 64 KiB, so this spans many. */
const TAIL_LIMIT = 4 * 1024 * 1024;

export interface FileTail {
  /** The last audit entry of the file, if one is within the last TAIL_LIMIT bytes. */
  last?: ChainRef;
  /** False when the file ends in a line cut short (a crash mid-write): the next line must start on its own. */
  endsWithNewline: boolean;
}

function isMissing(error: unknown): boolean {
  return (error as NodeJS.ErrnoException).code === 'ENOENT';
}

/** Reads backwards from the end of the file until an audit entry turns up. A missing file has no tail. */
export async function readTail(path: string): Promise<FileTail> {
  let handle: FileHandle;
  try {
    handle = await open(path, 'r');
  } catch (error) {
    if (isMissing(error)) return { endsWithNewline: true };
    throw error;
  }
  try {
    const { size } = await handle.stat();
    if (size === 0) return { endsWithNewline: true };
    const lastByte = Buffer.alloc(1);
    await handle.read(lastByte, 0, 1, size - 1);
    const endsWithNewline = lastByte[0] === 0x0a;
    let start = size;
    let tail = Buffer.alloc(0);
    while (start > 0 && size - start < TAIL_LIMIT) {
      const length = Math.min(TAIL_CHUNK, start);
      start -= length;
      const chunk = Buffer.alloc(length);
      await handle.read(chunk, 0, length, start);
      tail = Buffer.concat([chunk, tail]);
      const text = tail.toString('utf8');
      // Unless the file's start was reached, the first line may be a part of one.
      const whole = start === 0 ? text : text.slice(text.indexOf('\n') + 1);
      const last = lastEntryRef(whole);
      if (last !== undefined) return { last, endsWithNewline };
    }
    return { endsWithNewline };
  } finally {
    await handle.close();
  }
}

export class AppendFile {
  readonly path: string;
  private readonly handle: FileHandle;
  private queue: string[] = [];
  private pumping: Promise<void> | undefined;
  /** The last write error, to say why lines are left when sync gives up. */
  private error: Error | undefined;
  private closed = false;

  private constructor(path: string, handle: FileHandle) {
    this.path = path;
    this.handle = handle;
  }

  static async open(path: string): Promise<AppendFile> {
    await mkdir(dirname(path), { recursive: true });
    return new AppendFile(path, await open(path, 'a', 0o640));
  }

  /** Queues text to be written after everything queued before it. */
  append(text: string): void {
    if (this.closed) throw new Error(`audit file ${this.path} is closed`);
    this.queue.push(text);
    this.pumping ??= this.pump();
  }

  /** Writes everything queued so far (trying again what a failed write left), then fsyncs. */
  async sync(): Promise<void> {
    await this.drain();
    if (this.queue.length > 0) {
      this.pumping = this.pump();
      await this.drain();
    }
    if (this.queue.length > 0) throw this.error ?? new Error(`audit file ${this.path}: lines are left unwritten`);
    await this.handle.sync();
  }

  /** Writes everything queued, fsyncs and closes; rejects when that fails. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.sync();
    } finally {
      await this.handle.close();
    }
  }

  private async drain(): Promise<void> {
    while (this.pumping !== undefined) await this.pumping;
  }

  private async pump(): Promise<void> {
    try {
      while (this.queue.length > 0) {
        const chunk = this.queue.join('');
        this.queue = [];
        try {
          await this.handle.appendFile(chunk, 'utf8');
        } catch (error) {
          // Kept, in order, for the next write to try again.
          this.queue.unshift(chunk);
          throw error;
        }
      }
    } catch (error) {
      this.error = error as Error;
    } finally {
      this.pumping = undefined;
    }
  }
}
