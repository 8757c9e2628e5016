import { mkdtemp, mkdir, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type SignedBundle, type SigningKeyPair, verifyBundle } from './index.ts';
import { signedTestBundle } from './test-fixtures.ts';
import { MAX_UNPACKED_BYTES, readBundleDirectory, readBundleTarball, writeBundleDirectory, writeBundleTarball } from './files.ts';


let key: SigningKeyPair;
let signed: SignedBundle;
let scratch: string;

beforeAll(async () => {
  ({ key, signed } = await signedTestBundle());
  scratch = await mkdtemp(join(tmpdir(), 'portcullis-bundle-'));
});

afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

const trust = (): Parameters<typeof verifyBundle>[1] => ({ publicKeys: new Map([[key.keyId, key.publicKey]]), tenant: 'finance' });

describe('bundle directories', () => {
  it('round-trip', async () => {
    const directory = join(scratch, 'dir');
    await writeBundleDirectory(directory, signed);
    const read = await readBundleDirectory(directory);
    expect(read.files).toEqual(signed.files);
    await expect(verifyBundle(read, trust())).resolves.toBeDefined();
  });

  it('refuse a subdirectory or a link', async () => {
    const directory = join(scratch, 'nested');
    await writeBundleDirectory(directory, signed);
    await mkdir(join(directory, 'sub'));
    await expect(readBundleDirectory(directory)).rejects.toMatchObject({ code: 'bundle_file_unexpected' });
    const linked = join(scratch, 'linked');
    await writeBundleDirectory(linked, signed);
    await symlink('/etc/hostname', join(linked, 'extra'));
    await expect(readBundleDirectory(linked)).rejects.toMatchObject({ code: 'bundle_file_unexpected' });
  });
});

describe('bundle tarballs', () => {
  it('round-trip byte for byte, deterministically', async () => {
    const tarball = await writeBundleTarball(signed);
    expect(await writeBundleTarball(signed)).toEqual(tarball);
    const read = await readBundleTarball(tarball);
    expect(read.files).toEqual(signed.files);
    await expect(verifyBundle(read, trust())).resolves.toBeDefined();
  });

  it('refuse something that is not gzip', async () => {
    await expect(readBundleTarball(new Uint8Array([1, 2, 3]))).rejects.toMatchObject({ code: 'bundle_file_unexpected' });
  });

  it('refuse an archive that unpacks past the bound', async () => {
    await expect(readBundleTarball(gzipSync(Buffer.alloc(MAX_UNPACKED_BYTES + 1)))).rejects.toMatchObject({ code: 'bundle_too_large' });
  });
});
