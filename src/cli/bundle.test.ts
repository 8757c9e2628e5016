import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPublicKey } from 'node:crypto';
import { keyIdOf, verifyBundle } from '../bundle/index.ts';
import { PolicyEvaluator } from '../compiler/index.ts';
import { artifactOf, readSignedBundle } from './bundle.ts';
import type { CliIo } from './io.ts';
import { run } from './run.ts';

async function portcullis(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const io: CliIo = { stdout: (t) => (stdout += t), stderr: (t) => (stderr += t), readInput: (p) => readFile(p, 'utf8'), readInputBytes: (p) => readFile(p) };
  return { code: await run(args, io), stdout, stderr };
}

describe('portcullis bundle', () => {
  let dir = '';
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'portcullis-bundle-'));
    expect((await portcullis(['bundle', 'keygen', '--out', join(dir, 'keys')])).code).toBe(0);
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const build = (out: string): Promise<{ code: number; stdout: string; stderr: string }> =>
    portcullis(['bundle', 'build', '-f', 'config/samples', '--tenant', 'finance', '--key', join(dir, 'keys', 'private.pem'), '--out', out]);
  const verify = (path: string, tenant = 'finance'): Promise<{ code: number; stdout: string; stderr: string }> =>
    portcullis(['bundle', 'verify', path, '--public-key', join(dir, 'keys', 'public.pem'), '--tenant', tenant]);

  it('builds a signed bundle that verifies, as a directory and as a tarball, with equal bytes each time', async () => {
    expect((await build(join(dir, 'b1'))).code).toBe(0);
    expect((await build(join(dir, 'b2'))).code).toBe(0);
    expect((await build(join(dir, 'b.tar.gz'))).code).toBe(0);
    for (const file of ['.manifest', 'data.json', 'policy.wasm']) {
      expect(await readFile(join(dir, 'b2', file))).toEqual(await readFile(join(dir, 'b1', file)));
    }
    const verified = await verify(join(dir, 'b1'));
    expect(verified.code).toBe(0);
    expect(verified.stdout).toMatch(/^verified: tenant finance, revision 1-[0-9a-f]{16}/);
    expect((await verify(join(dir, 'b.tar.gz'))).code).toBe(0);
  }, 30_000);

  it('refuses a bundle of another tenant and a bundle whose data was changed', async () => {
    const otherTenant = await verify(join(dir, 'b1'), 'payroll');
    expect(otherTenant.code).toBe(1);
    expect(otherTenant.stderr).toContain('bundle_tenant_mismatch');
    await build(join(dir, 'tampered'));
    await writeFile(join(dir, 'tampered', 'data.json'), (await readFile(join(dir, 'tampered', 'data.json'), 'utf8')).replace('"deny"', '"allow"'));
    const tampered = await verify(join(dir, 'tampered'));
    expect(tampered.code).toBe(1);
    expect(tampered.stderr).toContain('bundle_digest_mismatch');
  }, 30_000);

  it('decides from a verified bundle as eval does, naming the bundle revision', async () => {
    await build(join(dir, 'b3'));
    const publicKey = createPublicKey(await readFile(join(dir, 'keys', 'public.pem'), 'utf8'));
    const bundle = await verifyBundle(await readSignedBundle(join(dir, 'b3')), { publicKeys: new Map([[await keyIdOf(publicKey), publicKey]]), tenant: 'finance' });
    const evaluator = await PolicyEvaluator.load(artifactOf(bundle));
    const answer = evaluator.authorize({ namespace: 'finance', agent: 'finance-agent', tool: 'stripe-payments', action: 'create_payment', params: { amount: 50000, currency: 'USD', account: '1234567890' } });
    expect(answer).toMatchObject({ decision: 'approval_needed', rule: 'over-limit', revision: bundle.manifest.revision });
  }, 30_000);

  it('inspects a bundle', async () => {
    await build(join(dir, 'b4'));
    const { code, stdout } = await portcullis(['bundle', 'inspect', join(dir, 'b4')]);
    expect(code).toBe(0);
    expect(stdout).toContain('rules 5, distinct conditions 8, raw modules 0');
    expect(stdout).toContain('signature claims (not verified)');
  }, 30_000);
});
