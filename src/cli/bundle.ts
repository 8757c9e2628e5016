// portcullis bundle build | inspect | verify | keygen: the tenant bundle the
// operator writes to ConfigMaps, made and checked offline. Layout, signing and
// verification are src/bundle's; this file only composes them with the compiler.
import { readFile, stat, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createPrivateKey, createPublicKey } from 'node:crypto';
import type { Bundle, BundleJwks, BundleKey, SignedBundle } from '../bundle/index.ts';
import {
  bundleContentDigest,
  BundleError,
  DATA_FILE,
  exportSigningKey,
  fromJwks,
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
import { parseStrictJson } from '../compiler/strict-json.ts';
import type { CliIo } from './io.ts';
import { UsageError } from './io.ts';
import type { Subcommand } from './subcommands.ts';
import { runSubcommand } from './subcommands.ts';

export const BUNDLE_USAGE = `Usage: portcullis bundle SUBCOMMAND [flags]

Builds, inspects and verifies the signed tenant bundles the operator writes to
the ConfigMaps portcullis-bundle, offline. BUNDLE is a directory or a .tar.gz.

Subcommands:
  build    compile a tenant's policies and write its signed bundle
  inspect  print a bundle's manifest, files and signature claims (not verified)
  verify   check a bundle's signature, tenant and revision order as a sidecar does
  keygen   write a new Ed25519 key pair for signing bundles

Flags:
  -h, --help  show this text (portcullis bundle SUBCOMMAND --help: the flags of a subcommand)
`;

export const BUNDLE_BUILD_USAGE = `Usage: portcullis bundle build -f FILE|DIR [-f ...] --tenant TENANT --key PRIVATE.pem --out DIR|FILE.tar.gz [--previous REVISION]

Compiles the tenant's policies from the manifests and writes its signed bundle,
refusing one that would not fit a ConfigMap.

Flags:
  -f, --filename FILE|DIR  manifests: YAML files, or folders of them (repeatable)
  --tenant TENANT          the tenant to build the bundle of
  --key PRIVATE.pem        the Ed25519 private key to sign with (portcullis bundle keygen)
  -o, --out DIR|FILE       where to write it: a directory, or a file ending .tar.gz
  --previous REVISION      the revision this one follows (default: the first)
  -h, --help               show this text
`;

export const BUNDLE_INSPECT_USAGE = `Usage: portcullis bundle inspect BUNDLE

Prints the revision, tenant and files of a bundle, its rule count, its manifest
and the claims of its signature. Nothing is verified: see portcullis bundle verify.

Flags:
  -h, --help  show this text
`;

export const BUNDLE_VERIFY_USAGE = `Usage: portcullis bundle verify BUNDLE (--public-key PUBLIC.pem | --jwks JWKS.json)... --tenant TENANT [--min-revision REVISION]

Checks a bundle as a sidecar does: the signature with a trusted key, the
tenant, every file against its signed digest, and the revision order.

Flags:
  --public-key FILE        a trusted public key (SPKI PEM; repeatable)
  --jwks FILE              a JWK set of trusted public keys (repeatable)
  --tenant TENANT          the tenant the bundle must be signed for
  --min-revision REVISION  the revision already loaded: an older bundle is refused
  -h, --help               show this text

Exit status: 0 verified, 1 refused (the reason and its code on standard
error), 2 usage or a key file that cannot be read.
`;

export const BUNDLE_KEYGEN_USAGE = `Usage: portcullis bundle keygen --out DIR

Writes a new Ed25519 key pair for signing bundles: DIR/private.pem (mode 600)
and DIR/public.pem. An existing key is not overwritten.

Flags:
  -o, --out DIR  the directory to write the keys to (made if missing)
  -h, --help     show this text
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

/** Where a command finds a signed bundle and the keys that may have signed it. */
export interface BundleSource {
  path: string;
  publicKeyFiles: readonly string[];
  jwksFiles: readonly string[];
  /** The tenant it must be signed for; default: the tenant it names (its signature must name it too). */
  tenant?: string;
  /** Use it without checking its signature: only when asked for in so many words. */
  insecureSkipVerify: boolean;
}

/** A bundle's content as its files hold it, nothing checked: for a bundle used without verification. */
function unverifiedBundle(signed: SignedBundle): Bundle {
  const wasm = signed.files.get(WASM_FILE);
  const data = signed.files.get(DATA_FILE);
  if (wasm === undefined || data === undefined) throw new UsageError(`the bundle has no ${wasm === undefined ? WASM_FILE : DATA_FILE}`);
  return { manifest: manifestOf(signed) as unknown as Bundle['manifest'], wasm, data: JSON.parse(new TextDecoder().decode(data)) as unknown };
}

/**
 * The bundle of a source, verified as a sidecar verifies it (signature, tenant,
 * files), or read unchecked when the source says so. Throws a BundleError when
 * it is refused.
 */
export async function loadBundle(source: BundleSource, io: CliIo): Promise<Bundle> {
  const keys = source.publicKeyFiles.length + source.jwksFiles.length;
  if (source.insecureSkipVerify) {
    if (keys > 0) throw new UsageError('--insecure-skip-verify checks no key: leave out --public-key and --jwks, or it');
    const bundle = unverifiedBundle(await readSignedBundle(source.path));
    io.stderr(`portcullis: warning: the signature of ${source.path} was not checked (--insecure-skip-verify): the answer is only as good as the file\n`);
    return bundle;
  }
  if (keys === 0) throw new UsageError('a bundle is used only once its signature is checked: give --public-key FILE or --jwks FILE (or --insecure-skip-verify to use it unchecked)');
  const publicKeys = await trustedKeys(source.publicKeyFiles, source.jwksFiles);
  const signed = await readSignedBundle(source.path);
  const claimed = (manifestOf(signed).metadata as { tenant?: unknown } | undefined)?.tenant;
  const tenant = source.tenant ?? (typeof claimed === 'string' ? claimed : '');
  return verifyBundle(signed, { publicKeys, tenant });
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

/** The public keys of --public-key (SPKI PEM) and --jwks (JWK set) files, by key id; a file that is not one is a usage error. */
export async function trustedKeys(publicKeyFiles: readonly string[], jwksFiles: readonly string[]): Promise<Map<string, BundleKey>> {
  const keys = new Map<string, BundleKey>();
  for (const file of publicKeyFiles) {
    let key: BundleKey;
    try {
      key = createPublicKey(await readFile(file, 'utf8'));
      keys.set(await keyIdOf(key), key);
    } catch (error) {
      throw new UsageError(`--public-key ${file}: not an Ed25519 public key in PEM: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
  for (const file of jwksFiles) {
    try {
      for (const [kid, key] of await fromJwks(parseStrictJson(await readFile(file, 'utf8')) as BundleJwks)) keys.set(kid, key);
    } catch (error) {
      throw new UsageError(`--jwks ${file}: not a JWK set of Ed25519 public keys: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
  return keys;
}

async function verifyCommand(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: { 'public-key': { type: 'string', multiple: true }, jwks: { type: 'string', multiple: true }, tenant: { type: 'string' }, 'min-revision': { type: 'string' } },
    allowPositionals: true,
  });
  const [path] = positionals;
  const publicKeyFiles = values['public-key'] ?? [];
  const jwksFiles = values.jwks ?? [];
  if (path === undefined || positionals.length > 1 || publicKeyFiles.length + jwksFiles.length === 0 || values.tenant === undefined) {
    throw new UsageError('bundle verify needs one BUNDLE, --public-key or --jwks, and --tenant');
  }
  const trust = { publicKeys: await trustedKeys(publicKeyFiles, jwksFiles), tenant: values.tenant };
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

export const BUNDLE_SUBCOMMANDS: Readonly<Record<string, Subcommand>> = {
  build: { usage: BUNDLE_BUILD_USAGE, run: buildCommand },
  inspect: { usage: BUNDLE_INSPECT_USAGE, run: inspectCommand },
  verify: { usage: BUNDLE_VERIFY_USAGE, run: verifyCommand },
  keygen: { usage: BUNDLE_KEYGEN_USAGE, run: keygenCommand },
};

export function bundleCommand(args: string[], io: CliIo): Promise<number> {
  return runSubcommand('bundle', BUNDLE_USAGE, BUNDLE_SUBCOMMANDS, args, io);
}
