import fc from 'fast-check';
import { CompactSign, exportJWK } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  buildBundle,
  bundleContentDigest,
  type Bundle,
  type BundleErrorCode,
  type BundleTrust,
  canonicalJson,
  formatRevision,
  generateSigningKey,
  type SignedBundle,
  signBundle,
  type SigningKeyPair,
  verifyBundle,
} from './index.ts';

const WASM = new Uint8Array([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0xfe, 0xff]);

function revision(sequence: number, content = 'a'): string {
  return formatRevision(sequence, content.repeat(16));
}

/** A tenant's bundle; modifiers change what a test is about. */
function sampleBundle(...modifiers: ((bundle: Bundle) => void)[]): Bundle {
  const bundle: Bundle = {
    manifest: {
      revision: revision(7),
      roots: ['portcullis'],
      metadata: { tenant: 'finance', compiledFrom: 3 },
      wasm: [{ entrypoint: 'portcullis/decision', module: '/policy.wasm' }],
    },
    wasm: WASM,
    data: { portcullis: { rules: [{ name: 'small-payments', max: 5000 }], zeta: true, alpha: null } },
  };
  modifiers.forEach((modify) => {
    modify(bundle);
  });
  return bundle;
}

function forTenant(tenant: string): (bundle: Bundle) => void {
  return (bundle) => {
    bundle.manifest.metadata.tenant = tenant;
  };
}

let key: SigningKeyPair;
let otherKey: SigningKeyPair;

beforeAll(async () => {
  [key, otherKey] = await Promise.all([generateSigningKey(), generateSigningKey()]);
});

function trust(overrides: Partial<BundleTrust> = {}): BundleTrust {
  return { publicKeys: new Map([[key.keyId, key.publicKey]]), tenant: 'finance', ...overrides };
}

async function signed(bundle = sampleBundle()): Promise<SignedBundle> {
  return signBundle(bundle, { privateKey: key.privateKey, keyId: key.keyId });
}

function withFile(bundle: SignedBundle, name: string, bytes: Uint8Array | undefined): SignedBundle {
  const files = new Map(bundle.files);
  if (bytes === undefined) {
    files.delete(name);
  } else {
    files.set(name, bytes);
  }
  return { files };
}

function flipByte(bytes: Uint8Array, index: number, mask = 0x01): Uint8Array {
  const copy = new Uint8Array(bytes);
  copy[index] = (copy[index] ?? 0) ^ mask;
  return copy;
}

function text(value: string): Uint8Array {
  return new TextEncoder().encode(value);
}

function jwsOf(bundle: SignedBundle): string {
  const document = JSON.parse(new TextDecoder().decode(bundle.files.get('.signatures.json'))) as { signatures: string[] };
  return document.signatures[0] ?? '';
}

function withJws(bundle: SignedBundle, jws: string): SignedBundle {
  return withFile(bundle, '.signatures.json', text(canonicalJson({ signatures: [jws] })));
}

async function refusal(bundle: SignedBundle, trusted = trust()): Promise<BundleErrorCode | 'accepted'> {
  try {
    await verifyBundle(bundle, trusted);
    return 'accepted';
  } catch (error) {
    const code = (error as { code?: BundleErrorCode }).code;
    if (code === undefined) {
      throw error;
    }
    return code;
  }
}

function base64url(value: string | Uint8Array): string {
  return Buffer.from(value).toString('base64url');
}

describe('buildBundle', () => {
  it('writes the manifest and data as canonical JSON and the policy as given', () => {
    const files = buildBundle(sampleBundle());
    expect([...files.keys()]).toEqual(['.manifest', 'data.json', 'policy.wasm']);
    expect(new TextDecoder().decode(files.get('data.json'))).toBe(
      '{"portcullis":{"alpha":null,"rules":[{"max":5000,"name":"small-payments"}],"zeta":true}}',
    );
    expect(files.get('policy.wasm')).toEqual(WASM);
  });

  it('gives the same bytes for the same bundle, whatever the key order', () => {
    const reordered = sampleBundle((bundle) => {
      bundle.data = { portcullis: { zeta: true, alpha: null, rules: [{ max: 5000, name: 'small-payments' }] } };
    });
    expect(buildBundle(reordered)).toEqual(buildBundle(sampleBundle()));
  });

  it('refuses a revision that is not <sequence>-<digest>', () => {
    expect(() =>
      buildBundle(
        sampleBundle((bundle) => {
          bundle.manifest.revision = 'v1';
        }),
      ),
    ).toThrow(expect.objectContaining({ code: 'bundle_revision_invalid' }));
  });

  it('refuses data that is not JSON', () => {
    expect(() =>
      buildBundle(
        sampleBundle((bundle) => {
          bundle.data = { limit: Number.NaN };
        }),
      ),
    ).toThrow(/\$\.limit: NaN is not a JSON number/u);
  });

  it('refuses a wasm entry naming another module', () => {
    expect(() =>
      buildBundle(
        sampleBundle((bundle) => {
          bundle.manifest.wasm = [{ entrypoint: 'x', module: '/other.wasm' }];
        }),
      ),
    ).toThrow(expect.objectContaining({ code: 'bundle_manifest_invalid' }));
  });
});

describe('bundleContentDigest', () => {
  it('ignores the revision and sees every other change', () => {
    const base = bundleContentDigest(sampleBundle());
    expect(bundleContentDigest(sampleBundle((bundle) => (bundle.manifest.revision = revision(9))))).toBe(base);
    expect(bundleContentDigest(sampleBundle((bundle) => (bundle.data = {})))).not.toBe(base);
    expect(bundleContentDigest(sampleBundle((bundle) => (bundle.wasm = new Uint8Array([1]))))).not.toBe(base);
    expect(bundleContentDigest(sampleBundle(forTenant('ops')))).not.toBe(base);
  });
});

describe('signBundle and verifyBundle', () => {
  it('round-trips a bundle', async () => {
    const bundle = sampleBundle();
    await expect(verifyBundle(await signed(bundle), trust())).resolves.toEqual(bundle);
  });

  it('signs deterministically', async () => {
    expect(await signed()).toEqual(await signed());
  });

  it('writes OPA’s signature format with the tenant and revision', async () => {
    const jws = jwsOf(await signed());
    const [header = '', payload = ''] = jws.split('.');
    expect(JSON.parse(Buffer.from(header, 'base64url').toString())).toEqual({ alg: 'EdDSA', kid: key.keyId, typ: 'JWT' });
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString()) as Record<string, unknown>;
    expect(claims).toMatchObject({ keyid: key.keyId, tenant: 'finance', revision: revision(7) });
    const files = claims.files as { name: string; hash: string; algorithm: string }[];
    expect(files.map(({ name, algorithm }) => `${name} ${algorithm}`)).toEqual(['.manifest SHA-256', 'data.json SHA-256', 'policy.wasm SHA-256']);
    expect(files.every(({ hash }) => /^[0-9a-f]{64}$/u.test(hash))).toBe(true);
  });

  it('accepts the same revision again and a later one', async () => {
    expect(await refusal(await signed(), trust({ minRevision: revision(7) }))).toBe('accepted');
    expect(await refusal(await signed(), trust({ minRevision: revision(6, 'b') }))).toBe('accepted');
  });

  it.each(['.manifest', 'data.json', 'policy.wasm'])('refuses a flipped byte in %s', async (name) => {
    const bundle = await signed();
    const bytes = bundle.files.get(name) ?? new Uint8Array();
    expect(await refusal(withFile(bundle, name, flipByte(bytes, bytes.length - 1)))).toBe('bundle_digest_mismatch');
  });

  it('refuses a flipped byte in the signature', async () => {
    const bundle = await signed();
    const jws = jwsOf(bundle);
    const last = jws.at(-2) === 'A' ? 'B' : 'A';
    expect(await refusal(withJws(bundle, `${jws.slice(0, -2)}${last}${jws.slice(-1)}`))).toBe('bundle_signature_invalid');
  });

  it('refuses a signature file with whitespace added', async () => {
    const bundle = await signed();
    const bytes = bundle.files.get('.signatures.json') ?? new Uint8Array();
    expect(await refusal(withFile(bundle, '.signatures.json', new Uint8Array([...bytes, 0x0a])))).toBe('bundle_signature_invalid');
  });

  it('refuses a signature whose unused base64url bits were changed', async () => {
    const bundle = await signed();
    const jws = jwsOf(bundle);
    const last = jws.at(-1) ?? 'A';
    // The last of 86 characters carries 2 bits of the 64-byte signature; its low 4 bits are unused.
    const sibling = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'.charAt(
      'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'.indexOf(last) ^ 0x01,
    );
    expect(Buffer.from(`${jws.split('.')[2]?.slice(0, -1) ?? ''}${sibling}`, 'base64url')).toEqual(Buffer.from(jws.split('.')[2] ?? '', 'base64url'));
    expect(await refusal(withJws(bundle, `${jws.slice(0, -1)}${sibling}`))).toBe('bundle_signature_invalid');
  });

  it.each(['.manifest', 'data.json', 'policy.wasm', '.signatures.json'])('refuses a bundle without %s', async (name) => {
    expect(await refusal(withFile(await signed(), name, undefined))).toBe('bundle_file_missing');
  });

  it('refuses a file the signature does not cover', async () => {
    expect(await refusal(withFile(await signed(), 'extra.rego', text('package x')))).toBe('bundle_file_unexpected');
  });

  it('refuses a file name that is not flat', async () => {
    expect(await refusal(withFile(await signed(), '../escape', text('x')))).toBe('bundle_file_name_invalid');
  });

  it('refuses the signature of another tenant’s bundle', async () => {
    const finance = await signed();
    const ops = await signed(sampleBundle(forTenant('ops')));
    expect(await refusal(withFile(finance, '.signatures.json', ops.files.get('.signatures.json')))).toBe('bundle_tenant_mismatch');
  });

  it('refuses a bundle of another tenant', async () => {
    expect(await refusal(await signed(), trust({ tenant: 'ops' }))).toBe('bundle_tenant_mismatch');
  });

  it('refuses a manifest whose tenant is not the signed tenant', async () => {
    const bundle = await signed(sampleBundle(forTenant('ops')));
    const payload = JSON.parse(Buffer.from(jwsOf(bundle).split('.')[1] ?? '', 'base64url').toString()) as Record<string, unknown>;
    const jws = await new CompactSign(text(JSON.stringify({ ...payload, tenant: 'finance' })))
      .setProtectedHeader({ alg: 'EdDSA', kid: key.keyId })
      .sign(key.privateKey);
    expect(await refusal(withJws(bundle, jws))).toBe('bundle_tenant_mismatch');
  });

  it('refuses an unsigned JWS (alg none)', async () => {
    const bundle = await signed();
    const [, payload = ''] = jwsOf(bundle).split('.');
    const unsigned = `${base64url(JSON.stringify({ alg: 'none', kid: key.keyId }))}.${payload}.`;
    expect(await refusal(withJws(bundle, unsigned))).toBe('bundle_signature_algorithm');
  });

  it('refuses an HS256 JWS keyed with the public key’s bytes', async () => {
    const bundle = await signed();
    const [, payload = ''] = jwsOf(bundle).split('.');
    const publicBytes = Buffer.from((await exportJWK(key.publicKey)).x ?? '', 'base64url');
    const forged = await new CompactSign(Buffer.from(payload, 'base64url'))
      .setProtectedHeader({ alg: 'HS256', kid: key.keyId })
      .sign(publicBytes);
    expect(await refusal(withJws(bundle, forged))).toBe('bundle_signature_algorithm');
  });

  it('refuses a key id that is not trusted', async () => {
    const bundle = await signBundle(sampleBundle(), { privateKey: otherKey.privateKey, keyId: otherKey.keyId });
    expect(await refusal(bundle)).toBe('bundle_key_unknown');
  });

  it('refuses a signature by another key under a trusted key id', async () => {
    const bundle = await signBundle(sampleBundle(), { privateKey: otherKey.privateKey, keyId: key.keyId });
    expect(await refusal(bundle)).toBe('bundle_signature_invalid');
  });

  it('refuses a revision older than the loaded one', async () => {
    expect(await refusal(await signed(), trust({ minRevision: revision(8) }))).toBe('bundle_revision_regressed');
  });

  it('refuses a revision with the loaded sequence but other content', async () => {
    expect(await refusal(await signed(), trust({ minRevision: revision(7, 'b') }))).toBe('bundle_revision_conflict');
  });

  it('orders revisions with the caller’s comparison when given one', async () => {
    const newestFirst = (a: string, b: string): number => b.localeCompare(a);
    expect(await refusal(await signed(), trust({ minRevision: revision(8), compareRevision: newestFirst }))).toBe('accepted');
    expect(await refusal(await signed(), trust({ minRevision: revision(6), compareRevision: newestFirst }))).toBe('bundle_revision_regressed');
  });

  it('says what was wrong and where', async () => {
    const bundle = await signed();
    await expect(verifyBundle(withFile(bundle, 'data.json', text('{}')), trust())).rejects.toThrow(/data\.json: SHA-256 is [0-9a-f]{64}, the signature says/u);
  });

  it('never verifies a randomly corrupted bundle', async () => {
    const bundle = await signed();
    const names = [...bundle.files.keys()];
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...names),
        fc.nat(),
        fc.integer({ min: 1, max: 255 }),
        fc.constantFrom('flip', 'truncate', 'append'),
        async (name, position, mask, how) => {
          const bytes = bundle.files.get(name) ?? new Uint8Array();
          const index = position % bytes.length;
          const corrupted =
            how === 'flip' ? flipByte(bytes, index, mask) : how === 'truncate' ? bytes.slice(0, index) : new Uint8Array([...bytes, mask]);
          const outcome = await refusal(withFile(bundle, name, corrupted));
          expect(outcome).not.toBe('accepted');
        },
      ),
      { numRuns: 300 },
    );
  });

  it('canonical JSON of the payload is what was signed', async () => {
    const jws = jwsOf(await signed());
    const payload = Buffer.from(jws.split('.')[1] ?? '', 'base64url').toString();
    expect(canonicalJson(JSON.parse(payload))).toBe(payload);
  });
});
