import { beforeAll, describe, expect, it } from 'vitest';
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
    expect(encoded.binaryData).toEqual({ 'policy.wasm': 'AGFzbf8=' });
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
    const large = await sign(new Uint8Array(800 * 1024));
    expect(() => toConfigMapData(large)).toThrow(
      expect.objectContaining({
        code: 'bundle_too_large',
        message: expect.stringMatching(new RegExp(`tenant finance takes \\d+ bytes in a ConfigMap, over the limit of ${CONFIGMAP_MAX_BYTES} \\(.*policy\\.wasm 1092268`, 'u')) as string,
      }) as Error,
    );
  });

  it('accepts a bundle just under the bound', async () => {
    const fits = await sign(new Uint8Array(700 * 1024));
    expect(() => toConfigMapData(fits)).not.toThrow();
  });
});
