// Compilation of one tenant: resources → IR (ir.ts) → the generic program plus
// raw modules → opa build → policy.wasm, with data.json beside it. Generation is
// pure (generateTenant); compileTenant adds the one I/O step, opa build.
import { canonicalJson, sha256Hex } from './canonical.ts';
import { CompileError, CompileErrors } from './errors.ts';
import type { TenantData, TenantIr } from './ir.ts';
import { buildTenantIr } from './ir.ts';
import type { TenantResources } from './manifests.ts';
import type { RegoFile } from './opa.ts';
import { buildWasm, opaBinary } from './opa.ts';
import { ENTRYPOINT, PROGRAM, PROGRAM_FILE } from './program.ts';

/** What a tenant compiles to before opa build: Rego sources and data. */
export interface GeneratedTenant {
  tenant: string;
  /** The program first, then raw modules in resource order. */
  rego: RegoFile[];
  /** The bundle's data.json: the tenant data under "portcullis". */
  data: { portcullis: TenantData };
  /** data.json as written: canonical JSON, so equal data gives equal bytes. */
  dataJson: string;
  /** sha256 over the Rego sources and data.json: equal content, equal revision. */
  revision: string;
  entrypoints: string[];
  ir: TenantIr;
}

export interface CompiledTenant extends GeneratedTenant {
  wasm: Uint8Array;
}

/** Pure: the Rego files, data.json and revision of a tenant. Throws CompileErrors. */
export function generateTenant(resources: TenantResources): GeneratedTenant {
  const ir = buildTenantIr(resources);
  const rego: RegoFile[] = [{ path: PROGRAM_FILE, text: PROGRAM }, ...ir.modules.map((m) => ({ path: m.file, text: m.text }))];
  const data = { portcullis: ir.data };
  const dataJson = canonicalJson(data);
  const revision = sha256Hex(canonicalJson({ rego, data: dataJson }));
  return { tenant: resources.tenant, rego, data, dataJson, revision, entrypoints: [ENTRYPOINT], ir };
}

/** Puts OPA's complaint about a raw module on the resource and field it came from. */
function locateRegoError(error: CompileError, generated: GeneratedTenant): CompileError {
  const module = generated.ir.modules.find((m) => error.detail.includes(m.file));
  if (module === undefined) return error;
  return new CompileError('rego_error', error.detail, { resource: module.resource, rule: `rego/${module.moduleName}`, field: module.field });
}

// The WASM depends only on the Rego sources (rules are data), so a tenant whose
// rules change but whose raw modules do not reuses the last build.
const wasmCache = new Map<string, Uint8Array>();
const WASM_CACHE_LIMIT = 64;

async function cachedWasm(generated: GeneratedTenant, binary: string): Promise<Uint8Array> {
  const key = sha256Hex(canonicalJson({ rego: generated.rego, entrypoints: generated.entrypoints, binary }));
  const hit = wasmCache.get(key);
  if (hit !== undefined) return hit;
  const wasm = await buildWasm(generated.rego, generated.entrypoints, binary);
  if (wasmCache.size >= WASM_CACHE_LIMIT) wasmCache.clear();
  wasmCache.set(key, wasm);
  return wasm;
}

export async function compileTenant(resources: TenantResources, binary = opaBinary()): Promise<CompiledTenant> {
  const generated = generateTenant(resources);
  try {
    const wasm = await cachedWasm(generated, binary);
    return { ...generated, wasm };
  } catch (error) {
    if (error instanceof CompileError && error.code === 'rego_error') throw new CompileErrors([locateRegoError(error, generated)]);
    throw error;
  }
}
