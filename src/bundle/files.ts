// A signed bundle on disk: as a directory of files, or as a gzipped tarball in OPA's layout
// (what `opa build` writes and `opa inspect`, `opa run --bundle` and bundle servers read).
import { lstat, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { promisify } from 'node:util';
import { constants, gunzip, gzip } from 'node:zlib';
import { extract, pack } from 'tar-stream';
import type { SignedBundle } from './bundle.ts';
import { BundleFileNameInvalidError, BundleFileUnexpectedError, BundleTooLargeError } from './errors.ts';

/** Bundles are flat: every file sits at the root. */
const FILE_NAME = /^[-._a-zA-Z0-9]+$/u;

/**
 * How many bytes a tarball may unpack to. Far above any bundle that fits a ConfigMap, and low
 * enough that a gzip bomb is refused before it exhausts memory.
 */
export const MAX_UNPACKED_BYTES = 64 * 1024 * 1024;

function checkName(name: string): void {
  if (!FILE_NAME.test(name) || name === '.' || name === '..') {
    throw new BundleFileNameInvalidError(`${JSON.stringify(name)} is not a flat bundle file name of [-._a-zA-Z0-9]`);
  }
}

/** Writes every file of the bundle into `directory` (created if missing), replacing files of the same names. */
export async function writeBundleDirectory(directory: string, signed: SignedBundle): Promise<void> {
  await mkdir(directory, { recursive: true });
  for (const [name, bytes] of signed.files) {
    checkName(name);
    await writeFile(join(directory, name), bytes);
  }
}

/** Reads every file at the root of `directory`. A subdirectory, link or other entry is refused. */
export async function readBundleDirectory(directory: string): Promise<SignedBundle> {
  const files = new Map<string, Uint8Array>();
  for (const name of (await readdir(directory)).sort()) {
    const path = join(directory, name);
    if (!(await lstat(path)).isFile()) {
      throw new BundleFileUnexpectedError(`${path} is not a regular file; bundles hold only files at their root`);
    }
    checkName(name);
    files.set(name, new Uint8Array(await readFile(path)));
  }
  return { files };
}

/**
 * The bundle as a `.tar.gz` in OPA's layout: entries named `/<file>` at the root, sorted, with
 * fixed owner, mode (0644) and time (the epoch), so the same bundle gives the same bytes.
 */
export async function writeBundleTarball(signed: SignedBundle): Promise<Uint8Array> {
  const archive = pack();
  const collected = buffer(archive);
  for (const name of [...signed.files.keys()].sort()) {
    checkName(name);
    const bytes = Buffer.from(signed.files.get(name) ?? new Uint8Array());
    archive.entry({ name: `/${name}`, size: bytes.length, mode: 0o644, mtime: new Date(0), uid: 0, gid: 0, type: 'file' }, bytes);
  }
  archive.finalize();
  return new Uint8Array(await promisify(gzip)(await collected, { level: constants.Z_BEST_COMPRESSION }));
}

/**
 * Reads a `.tar.gz` bundle. Entry names may start with `/` or `./` (OPA writes the former);
 * directory entries for the root are skipped; any other directory, link, nested path or duplicate
 * name is refused, and so is an archive that unpacks to more than MAX_UNPACKED_BYTES.
 */
export async function readBundleTarball(tarball: Uint8Array): Promise<SignedBundle> {
  let tar: Buffer;
  try {
    tar = await promisify(gunzip)(tarball, { maxOutputLength: MAX_UNPACKED_BYTES });
  } catch (error) {
    if (error instanceof RangeError) {
      throw new BundleTooLargeError(`the tarball unpacks to more than ${MAX_UNPACKED_BYTES} bytes`, { cause: error });
    }
    throw new BundleFileUnexpectedError(`the tarball is not gzip: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
  }
  const files = new Map<string, Uint8Array>();
  const entries = extract();
  Readable.from([tar]).pipe(entries);
  for await (const entry of entries) {
    const name = entry.header.name.replace(/^\.?\/+/u, '');
    const { type } = entry.header;
    if (type === 'directory' && (name === '' || name === '.')) {
      entry.resume();
      continue;
    }
    if (type !== 'file' && type !== 'contiguous-file') {
      throw new BundleFileUnexpectedError(`tarball entry ${entry.header.name} is a ${type}; bundles hold only files at their root`);
    }
    checkName(name);
    if (files.has(name)) {
      throw new BundleFileUnexpectedError(`tarball entry ${name} appears twice`);
    }
    files.set(name, new Uint8Array(await buffer(entry)));
  }
  return { files };
}
