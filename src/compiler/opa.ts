// Runs the opa binary: `opa build -t wasm` and `opa check --strict`, in a
// temporary directory. The only I/O of compilation lives here.
import { execFile } from 'node:child_process';
import { mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { CompileError } from './errors.ts';

const run = promisify(execFile);

/** A Rego file to hand to opa: its path relative to the work directory, and its text. */
export interface RegoFile {
  path: string;
  text: string;
}

/** The opa binary: $PORTCULLIS_OPA, else $TEST_ASSET_OPA (hack/build-tools.sh), else opa on PATH. */
export function opaBinary(env: NodeJS.ProcessEnv = process.env): string {
  return env.PORTCULLIS_OPA ?? env.TEST_ASSET_OPA ?? 'opa';
}

interface RunFailure {
  code?: string | number;
  stderr?: string;
  stdout?: string;
}

function isRunFailure(error: unknown): error is RunFailure {
  return error !== null && typeof error === 'object';
}

async function runOpa(binary: string, args: string[], cwd: string): Promise<{ ok: true } | { ok: false; output: string }> {
  try {
    await run(binary, args, { cwd, maxBuffer: 16 * 1024 * 1024 });
    return { ok: true };
  } catch (error) {
    if (isRunFailure(error) && error.code === 'ENOENT') {
      throw new CompileError(
        'tool_error',
        `the opa binary was not found (tried ${binary}): set PORTCULLIS_OPA or TEST_ASSET_OPA to its path, or put opa on PATH (hack/build-tools.sh opa builds it)`,
      );
    }
    if (isRunFailure(error) && typeof error.code === 'number') {
      return { ok: false, output: `${error.stderr ?? ''}${error.stdout ?? ''}`.trim() };
    }
    throw error;
  }
}

async function withFiles<T>(files: readonly RegoFile[], work: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'portcullis-opa-'));
  try {
    for (const file of files) {
      const path = join(dir, 'src', file.path);
      await mkdir(dirname(path), { recursive: true });
      await writeFile(path, file.text);
    }
    return await work(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** OPA's messages with the temporary directory taken out, so they name the files as the compiler named them. */
function cleanOutput(output: string, dir: string): string {
  return output.replaceAll(`${join(dir, 'src')}/`, '').replace(/(^|[\s"])src\//gm, '$1');
}

/** Files of a tar archive (ustar, as opa writes bundles). */
export function untar(archive: Uint8Array): Map<string, Uint8Array> {
  const files = new Map<string, Uint8Array>();
  const text = new TextDecoder();
  let offset = 0;
  while (offset + 512 <= archive.length) {
    const header = archive.subarray(offset, offset + 512);
    if (header.every((b) => b === 0)) break;
    const name = text.decode(header.subarray(0, 100)).replace(/\0.*$/s, '');
    const prefix = text.decode(header.subarray(345, 500)).replace(/\0.*$/s, '');
    const size = Number.parseInt(text.decode(header.subarray(124, 136)).replace(/\0.*$/s, '').trim() || '0', 8);
    const type = String.fromCharCode(header[156] ?? 0);
    const body = archive.subarray(offset + 512, offset + 512 + size);
    if (type === '0' || type === '\0') files.set(`${prefix === '' ? '' : `${prefix}/`}${name}`.replace(/^\/+/, ''), body);
    offset += 512 + Math.ceil(size / 512) * 512;
  }
  return files;
}

/** Compiles the modules to WASM with the given entrypoints; returns policy.wasm. */
export async function buildWasm(files: readonly RegoFile[], entrypoints: readonly string[], binary = opaBinary()): Promise<Uint8Array> {
  return withFiles(files, async (dir) => {
    const args = ['build', '-t', 'wasm', ...entrypoints.flatMap((e) => ['-e', e]), '-o', 'bundle.tar.gz', 'src'];
    const result = await runOpa(binary, args, dir);
    if (!result.ok) throw new CompileError('rego_error', cleanOutput(result.output, dir));
    const files = untar(gunzipSync(await readFile(join(dir, 'bundle.tar.gz'))));
    const wasm = files.get('policy.wasm');
    if (wasm === undefined) throw new CompileError('tool_error', 'opa build wrote no policy.wasm');
    return new Uint8Array(wasm);
  });
}

/** `opa check --strict` over the modules; returns OPA's complaints, empty when there are none. */
export async function checkStrict(files: readonly RegoFile[], binary = opaBinary()): Promise<string> {
  return withFiles(files, async (dir) => {
    const result = await runOpa(binary, ['check', '--strict', 'src'], dir);
    return result.ok ? '' : cleanOutput(result.output, dir);
  });
}
