import { beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { gunzipSync, gzipSync } from 'node:zlib';
import { type BundleKey, CONFIGMAP_MAX_BYTES, formatRevision, fromConfigMapData, generateSigningKey, type SignedBundle, signBundle, toConfigMapData, verifyBundle } from './index.ts';

let signed: SignedBundle;
let publicKeys: Map<string, BundleKey>;

async function sign(wasm: Uint8Array): Promise<SignedBundle> {
  const key = await generateSigningKey();
  publicKeys = new Map([[key.keyId, key.publicKey]]);
  return signBundle(
    { manifest: { revision: formatRevision(1, 'f'.repeat(16)), roots: ['p'], metadata: { tenant: 'finance' } }, wasm, data: { p: { note: 'ünïcode \u2028' } } },
    { privateKey: key.privateKey, keyId: key.keyId },
  );
}

beforeAll(async () => {
  signed = await sign(new Uint8Array([0, 0x61, 0x73, 0x6d, 0xff]));
});

describe('ConfigMap encoding', () => {
  it('puts text files in data and the policy module in binaryData', () => {
    const encoded = toConfigMapData(signed);
    expect(Object.keys(encoded.data)).toEqual(['.manifest', '.signatures.json', 'data.json']);
    expect(Object.keys(encoded.binaryData)).toEqual(['policy.wasm.gz']);
    expect(gunzipSync(Buffer.from(encoded.binaryData['policy.wasm.gz'] ?? '', 'base64')).toString('base64')).toBe('AGFzbf8=');
    expect(toConfigMapData(signed)).toEqual(encoded);
  });

  it('refuses a compressed file that is not gzip, or that inflates past the limit', () => {
    expect(() => fromConfigMapData({ binaryData: { 'policy.wasm.gz': 'AGFzbf8=' } })).toThrow(expect.objectContaining({ code: 'bundle_data_invalid' }) as Error);
    const bomb = gzipSync(Buffer.alloc(64 * 1024 * 1024)).toString('base64');
    expect(() => fromConfigMapData({ binaryData: { 'policy.wasm.gz': bomb } })).toThrow(/at most 33554432 bytes/);
  });

  it('still reads a binary file stored without compression', () => {
    expect(fromConfigMapData({ binaryData: { 'policy.wasm': 'AGFzbf8=' } }).files.get('policy.wasm')).toEqual(new Uint8Array([0, 0x61, 0x73, 0x6d, 0xff]));
  });

  it('round-trips to a bundle that still verifies', async () => {
    const decoded = fromConfigMapData(toConfigMapData(signed));
    expect(decoded.files).toEqual(signed.files);
    await expect(verifyBundle(decoded, { publicKeys, tenant: 'finance' })).resolves.toMatchObject({ data: { p: { note: 'ünïcode \u2028' } } });
  });

  it('reads a ConfigMap whose empty maps the API left out', () => {
    expect(fromConfigMapData({}).files.size).toBe(0);
  });

  it('refuses a key ConfigMaps do not allow', () => {
    expect(() => toConfigMapData({ files: new Map([['dir/file', new Uint8Array()]]) })).toThrow(
      expect.objectContaining({ code: 'bundle_file_name_invalid' }) as Error,
    );
    expect(() => fromConfigMapData({ data: { 'a b': '' } })).toThrow(expect.objectContaining({ code: 'bundle_file_name_invalid' }) as Error);
  });

  it('refuses a file that is in both maps', () => {
    expect(() => fromConfigMapData({ data: { x: '' }, binaryData: { x: '' } })).toThrow(
      expect.objectContaining({ code: 'bundle_file_name_invalid' }) as Error,
    );
  });

  it('refuses a bundle over 1 MiB, naming the tenant and the sizes', async () => {
    // Random bytes do not compress: 800 KiB stays about 1.07 MB in base64.
    const large = await sign(new Uint8Array(randomBytes(800 * 1024)));
    expect(() => toConfigMapData(large)).toThrow(
      expect.objectContaining({
        code: 'bundle_too_large',
        message: expect.stringMatching(new RegExp(`tenant finance takes \\d+ bytes in a ConfigMap, over the limit of ${CONFIGMAP_MAX_BYTES} \\(.*policy\\.wasm\\.gz 109\\d{4}`, 'u')) as string,
      }) as Error,
    );
  });

  it('accepts a bundle just under the bound', async () => {
    const fits = await sign(new Uint8Array(randomBytes(700 * 1024)));
    expect(() => toConfigMapData(fits)).not.toThrow();
  });

  it('counts the compressed size, so a policy module that compresses well fits', async () => {
    const compressible = await sign(new Uint8Array(2 * 1024 * 1024));
    expect(Object.values(toConfigMapData(compressible).binaryData)[0]?.length).toBeLessThan(10_000);
  });
});
