// portcullis bundle build | inspect | verify | keygen: the tenant bundle the
// operator writes to ConfigMaps, made and checked offline. Layout, signing and
// verification are src/bundle's; this file only composes them with the compiler.
import { readFile, stat, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createPrivateKey, createPublicKey } from 'node:crypto';
import type { Bundle, SignedBundle } from '../bundle/index.ts';
import {
  bundleContentDigest,
  BundleError,
  DATA_FILE,
  exportSigningKey,
  generateSigningKey,
  keyIdOf,
  MANIFEST_FILE,
  nextRevision,
  signBundle,
  SIGNATURES_FILE,
  toConfigMapData,
  verifyBundle,
  WASM_FILE,
  WASM_MODULE_PATH,
} from '../bundle/index.ts';
import { readBundleDirectory, readBundleTarball, writeBundleDirectory, writeBundleTarball } from '../bundle/files.ts';
import type { CompiledTenant, PolicyArtifact, TenantData } from '../compiler/index.ts';
import { compileTenant, ENTRYPOINT, readManifestPaths, sha256Hex, tenantResources } from '../compiler/index.ts';
import type { CliIo } from './io.ts';
import { UsageError } from './io.ts';

export const BUNDLE_USAGE = `Usage: portcullis bundle SUBCOMMAND [options]

  build   -f FILE|DIR [-f ...] --tenant TENANT --key PRIVATE.pem --out DIR|FILE.tar.gz [--previous REVISION]
          compile the tenant's policies and write its signed bundle
  inspect BUNDLE           print the manifest, the files and the signature claims (not verified)
  verify  BUNDLE --public-key PUBLIC.pem --tenant TENANT [--min-revision REVISION]
          check signature, tenant and revision order as a sidecar does; exit 1 when refused
  keygen  --out DIR        write a new Ed25519 key pair (private.pem, public.pem)

BUNDLE is a directory or a .tar.gz file.
`;

const isTarball = (path: string): boolean => path.endsWith('.tar.gz') || path.endsWith('.tgz');

/** The bundle of a compiled tenant: OPA's layout, roots under portcullis, the tenant in the manifest metadata. */
export function tenantBundle(compiled: CompiledTenant, previous?: string): Bundle {
  const manifest = {
    roots: ['portcullis'],
    metadata: { tenant: compiled.tenant, compiler: compiled.revision },
    wasm: [{ entrypoint: ENTRYPOINT, module: WASM_MODULE_PATH }],
  };
  const revision = nextRevision(previous, bundleContentDigest({ manifest, wasm: compiled.wasm, data: compiled.data }));
  return { manifest: { ...manifest, revision }, wasm: compiled.wasm, data: compiled.data };
}

/** What the decision core loads from a verified bundle; the answers name the bundle's revision. */
export function artifactOf(bundle: Bundle): PolicyArtifact {
  return { wasm: bundle.wasm, data: bundle.data as { portcullis: TenantData }, revision: bundle.manifest.revision };
}

export async function readSignedBundle(path: string): Promise<SignedBundle> {
  return isTarball(path) ? readBundleTarball(new Uint8Array(await readFile(path))) : readBundleDirectory(path);
}

async function buildCommand(args: string[], io: CliIo): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      filename: { type: 'string', short: 'f', multiple: true },
      tenant: { type: 'string' },
      key: { type: 'string' },
      out: { type: 'string', short: 'o' },
      previous: { type: 'string' },
    },
  });
  const { tenant, key, out } = values;
  if ((values.filename ?? []).length === 0) throw new UsageError('bundle build needs manifests: -f FILE|DIR');
  if (tenant === undefined || key === undefined || out === undefined) throw new UsageError('bundle build needs --tenant, --key and --out');
  const set = await readManifestPaths(values.filename ?? []);
  const compiled = await compileTenant(tenantResources(set, tenant));
  const privateKey = createPrivateKey(await readFile(key, 'utf8'));
  const signed = await signBundle(tenantBundle(compiled, values.previous), { privateKey, keyId: await keyIdOf(privateKey) });
  // Refuses now, rather than at the API server, a bundle that does not fit a ConfigMap.
  toConfigMapData(signed);
  if (isTarball(out)) await writeFile(out, await writeBundleTarball(signed));
  else await writeBundleDirectory(out, signed);
  io.stdout(`${describeSigned(signed)}wrote ${out}\n`);
  return 0;
}

function manifestOf(signed: SignedBundle): Record<string, unknown> {
  const bytes = signed.files.get(MANIFEST_FILE);
  return bytes === undefined ? {} : (JSON.parse(new TextDecoder().decode(bytes)) as Record<string, unknown>);
}

/** The claims of the signature, read without verifying it (inspect shows; verify checks). */
function signatureClaims(signed: SignedBundle): unknown {
  const bytes = signed.files.get(SIGNATURES_FILE);
  if (bytes === undefined) return null;
  const { signatures } = JSON.parse(new TextDecoder().decode(bytes)) as { signatures?: string[] };
  const payload = signatures?.[0]?.split('.')[1];
  return payload === undefined ? null : JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
}

function describeSigned(signed: SignedBundle): string {
  const manifest = manifestOf(signed);
  const lines = [`revision ${String(manifest.revision)}`, `tenant ${String((manifest.metadata as { tenant?: string } | undefined)?.tenant)}`];
  for (const [name, bytes] of [...signed.files].sort(([a], [b]) => (a < b ? -1 : 1))) {
    lines.push(`  ${name.padEnd(18)} ${String(bytes.length).padStart(9)} B  sha256:${sha256Hex(bytes)}`);
  }
  const data = signed.files.get(DATA_FILE);
  if (data !== undefined) {
    const tenant = (JSON.parse(new TextDecoder().decode(data)) as { portcullis?: TenantData }).portcullis;
    const rules = Object.values(tenant?.rules ?? {}).flatMap((byTool) => Object.values(byTool).flat()).length;
    lines.push(`rules ${rules}, distinct conditions ${tenant?.conditions.length ?? 0}, raw modules ${tenant?.modules.length ?? 0}`);
  }
  lines.push(`wasm ${signed.files.has(WASM_FILE) ? 'present' : 'missing'}`);
  return `${lines.join('\n')}\n`;
}

async function inspectCommand(args: string[], io: CliIo): Promise<number> {
  const { positionals } = parseArgs({ args, allowPositionals: true });
  const [path] = positionals;
  if (path === undefined || positionals.length > 1) throw new UsageError('bundle inspect needs one BUNDLE');
  const signed = await readSignedBundle(path);
  io.stdout(`${describeSigned(signed)}manifest ${JSON.stringify(manifestOf(signed))}\nsignature claims (not verified) ${JSON.stringify(signatureClaims(signed))}\n`);
  return 0;
}

async function verifyCommand(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: { 'public-key': { type: 'string' }, tenant: { type: 'string' }, 'min-revision': { type: 'string' } },
    allowPositionals: true,
  });
  const [path] = positionals;
  const publicKeyFile = values['public-key'];
  if (path === undefined || publicKeyFile === undefined || values.tenant === undefined) {
    throw new UsageError('bundle verify needs BUNDLE, --public-key and --tenant');
  }
  const publicKey = createPublicKey(await readFile(publicKeyFile, 'utf8'));
  const trust = { publicKeys: new Map([[await keyIdOf(publicKey), publicKey]]), tenant: values.tenant };
  const minRevision = values['min-revision'];
  try {
    const bundle = await verifyBundle(await readSignedBundle(path), minRevision === undefined ? trust : { ...trust, minRevision });
    io.stdout(`verified: tenant ${bundle.manifest.metadata.tenant}, revision ${bundle.manifest.revision}\n`);
    return 0;
  } catch (error) {
    if (!(error instanceof BundleError)) throw error;
    io.stderr(`portcullis: bundle refused (${error.code}): ${error.message}\n`);
    return 1;
  }
}

async function keygenCommand(args: string[], io: CliIo): Promise<number> {
  const { values } = parseArgs({ args, options: { out: { type: 'string', short: 'o' } } });
  if (values.out === undefined) throw new UsageError('bundle keygen needs --out DIR');
  const exists = await stat(join(values.out, 'private.pem')).then(
    () => true,
    () => false,
  );
  if (exists) throw new UsageError(`${join(values.out, 'private.pem')} exists; keygen does not overwrite keys`);
  const stored = await exportSigningKey(await generateSigningKey());
  await mkdir(values.out, { recursive: true });
  await writeFile(join(values.out, 'private.pem'), stored.privateKeyPem, { mode: 0o600 });
  await writeFile(join(values.out, 'public.pem'), stored.publicKeyPem);
  io.stdout(`key ${stored.keyId} written to ${values.out}\n`);
  return 0;
}

const SUBCOMMANDS: Readonly<Record<string, (args: string[], io: CliIo) => Promise<number>>> = {
  build: buildCommand,
  inspect: inspectCommand,
  verify: verifyCommand,
  keygen: keygenCommand,
};

export async function bundleCommand(args: string[], io: CliIo): Promise<number> {
  const [name, ...rest] = args;
  if (name === undefined || name === '--help' || name === '-h') {
    io.stdout(BUNDLE_USAGE);
    return name === undefined ? 2 : 0;
  }
  const sub = Object.hasOwn(SUBCOMMANDS, name) ? SUBCOMMANDS[name] : undefined;
  if (sub === undefined) throw new UsageError(`unknown bundle subcommand ${name}`);
  return sub(rest, io);
}
