// A small signed bundle for the bundle tests (not part of the public surface).

import { formatRevision, generateSigningKey, signBundle } from './index.ts';
import type { SignedBundle, SigningKeyPair } from './index.ts';

/** The smallest valid WebAssembly module: magic number and version. */
export const EMPTY_WASM = new Uint8Array([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]);

/** A bundle of tenant finance at revision 3, signed with a new key. */
export async function signedTestBundle(): Promise<{ key: SigningKeyPair; signed: SignedBundle }> {
  const key = await generateSigningKey();
  const signed = await signBundle(
    {
      manifest: {
        revision: formatRevision(3, 'c'.repeat(16)),
        roots: ['portcullis'],
        metadata: { tenant: 'finance' },
        wasm: [{ entrypoint: 'portcullis/decision', module: '/policy.wasm' }],
      },
      wasm: EMPTY_WASM,
      data: { portcullis: { rules: ['a', 'b'], text: 'tab\there & <tag> \u2028' } },
    },
    { privateKey: key.privateKey, keyId: key.keyId },
  );
  return { key, signed };
}
