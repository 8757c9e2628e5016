// Bundles as OPA itself reads them: `opa inspect` accepts our tarballs and
// `opa build --verification-key` verifies their Ed25519 signatures.
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exportSigningKey, formatRevision, type SignedBundle, type SigningKeyPair } from './index.ts';
import { signedTestBundle } from './test-fixtures.ts';
import { writeBundleTarball } from './files.ts';

const OPA = process.env.TEST_ASSET_OPA ?? '';

let key: SigningKeyPair;
let signed: SignedBundle;
let scratch: string;

beforeAll(async () => {
  if (OPA === '') throw new Error('TEST_ASSET_OPA must name the opa binary (hack/test.sh sets it)');
  ({ key, signed } = await signedTestBundle());
  scratch = await mkdtemp(join(tmpdir(), 'portcullis-bundle-'));
});

afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

describe('bundle tarballs, with the opa binary', () => {
  const run = promisify(execFile);

  it('are accepted by opa inspect', async () => {
    const path = join(scratch, 'bundle.tar.gz');
    await writeFile(path, await writeBundleTarball(signed));
    const { stdout } = await run(OPA, ['inspect', '--format', 'json', path]);
    const inspected = JSON.parse(stdout) as { manifest: { revision: string; metadata: { tenant: string } }; signatures_config?: unknown };
    expect(inspected.manifest.revision).toBe(formatRevision(3, 'c'.repeat(16)));
    expect(inspected.manifest.metadata.tenant).toBe('finance');
  });

  it('carry a signature opa itself verifies', async () => {
    const path = join(scratch, 'verify.tar.gz');
    await writeFile(path, await writeBundleTarball(signed));
    const publicKey = join(scratch, 'public.pem');
    await writeFile(publicKey, (await exportSigningKey(key)).publicKeyPem);
    const opaVerify = (bundle: string): ReturnType<typeof run> =>
      run(OPA, ['build', '--bundle', bundle, '--verification-key', publicKey, '--verification-key-id', key.keyId, '--signing-alg', 'EdDSA', '-o', join(scratch, 'rebuilt.tar.gz')]);
    await expect(opaVerify(path)).resolves.toBeDefined();
    const tampered = join(scratch, 'tampered.tar.gz');
    const files = new Map(signed.files);
    files.set('data.json', new TextEncoder().encode('{"portcullis":{}}'));
    await writeFile(tampered, await writeBundleTarball({ files }));
    const refused = await opaVerify(tampered).then(
      () => 'accepted',
      (error: unknown) => {
        const { stdout = '', stderr = '' } = error as { stdout?: string; stderr?: string };
        return `${stdout}${stderr}`;
      },
    );
    expect(refused).toMatch(/data\.json: digest mismatch/u);
  });
});
