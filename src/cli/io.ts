// What the commands touch of the outside world, passed in so tests can run a
// command in-process and read what it printed.
import { readFile } from 'node:fs/promises';

export interface CliIo {
  stdout(text: string): void;
  stderr(text: string): void;
  /** Reads a file, or standard input for "-". */
  readInput(path: string): Promise<string>;
  /** The same, as bytes: for a reader that decodes them itself. */
  readInputBytes(path: string): Promise<Uint8Array>;
}

async function readStdin(): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** Writes unless the stream is gone (its reader closed the pipe: see main.ts). */
function writeTo(stream: NodeJS.WriteStream, text: string): void {
  if (!stream.destroyed) stream.write(text);
}

export const processIo: CliIo = {
  stdout: (text) => {
    writeTo(process.stdout, text);
  },
  stderr: (text) => {
    writeTo(process.stderr, text);
  },
  readInput: async (path) => (path === '-' ? (await readStdin()).toString('utf8') : readFile(path, 'utf8')),
  readInputBytes: (path) => (path === '-' ? readStdin() : readFile(path)),
};

/** A mistake in how the command was called: printed with the usage, exit code 2. */
export class UsageError extends Error {
  /** The usage of the (sub)command that was called wrong, when it is not the command's own. */
  readonly usage: string | undefined;

  constructor(message: string, usage?: string) {
    super(message);
    this.name = 'UsageError';
    this.usage = usage;
  }
}
