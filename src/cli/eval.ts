// portcullis eval: one call against policy files, no cluster needed. It runs
// the same decision core as the sidecar.
import { parseArgs } from 'node:util';
import { BundleError } from '../bundle/index.ts';
import type { AuthorizationDecision } from '../compiler/index.ts';
import { PolicyEvaluator, readManifestPaths } from '../compiler/index.ts';
import { parseStrictJson } from '../compiler/strict-json.ts';
import type { CliIo } from './io.ts';
import { UsageError } from './io.ts';
import { artifactOf, loadBundle } from './bundle.ts';
import { namespaceOf, TenantEvaluators } from './tenants.ts';

export const EVAL_USAGE = `Usage: portcullis eval -f FILE|DIR [-f ...] --input FILE|- [--exit-code]
       portcullis eval --bundle BUNDLE (--public-key FILE | --jwks FILE)... --input FILE|- [--exit-code]

Decides one call and prints the answer as JSON. The call is the JSON body of
POST /v1/authorize (see README), read as strictly as the sidecar reads it. The
policies are manifests (-f), or a signed tenant bundle as the operator builds
it (--bundle: a directory or a .tar.gz), whose signature is checked first.

Flags:
  -f, --filename FILE|DIR   manifests: YAML files, or folders of them (repeatable)
  --bundle BUNDLE           a signed tenant bundle (portcullis bundle build) instead of manifests
  --public-key FILE         a public key the bundle may be signed with (SPKI PEM; repeatable)
  --jwks FILE               a JWK set of such keys (repeatable)
  --tenant TENANT           the tenant the bundle must be signed for (default: the one it names)
  --insecure-skip-verify    use the bundle without checking its signature (a warning says so)
  -i, --input FILE|-        the call, as JSON; - reads standard input
  --exit-code               exit 0 only when the decision is allow, 3 for any other (for CI)
  -h, --help                show this text

Exit status:
  0  the answer is printed (with --exit-code: and the decision is allow)
  1  no decision: the manifests do not compile, the bundle is refused, or the
     call is not a valid call
  2  the command was called wrong: flags, a file that cannot be read, a call
     that is not strict JSON
  3  with --exit-code: the decision is deny, sanitize or approval_needed (the
     answer is printed all the same)
`;

/** --exit-code: a decision other than allow. */
export const NOT_ALLOWED_EXIT_CODE = 3;

interface EvalFlags {
  filename?: string[];
  bundle?: string;
  'public-key'?: string[];
  jwks?: string[];
  tenant?: string;
  'insecure-skip-verify'?: boolean;
}

/** The decision core for the call's namespace: from the manifests, or from the bundle. */
async function evaluatorFor(values: EvalFlags, input: unknown, io: CliIo): Promise<PolicyEvaluator> {
  if (values.bundle === undefined) {
    for (const flag of ['public-key', 'jwks', 'tenant', 'insecure-skip-verify'] as const) {
      if (values[flag] !== undefined) throw new UsageError(`--${flag} goes with --bundle`);
    }
    return new TenantEvaluators(await readManifestPaths(values.filename ?? [])).forNamespace(namespaceOf(input));
  }
  const bundle = await loadBundle(
    {
      path: values.bundle,
      publicKeyFiles: values['public-key'] ?? [],
      jwksFiles: values.jwks ?? [],
      ...(values.tenant === undefined ? {} : { tenant: values.tenant }),
      insecureSkipVerify: values['insecure-skip-verify'] === true,
    },
    io,
  );
  return PolicyEvaluator.load(artifactOf(bundle));
}

function exitCodeOf(answer: AuthorizationDecision, exitCode: boolean): number {
  return exitCode && answer.decision !== 'allow' ? NOT_ALLOWED_EXIT_CODE : 0;
}

/** The call of --input, read as strictly as the sidecar reads it. */
export async function readCall(path: string, io: CliIo): Promise<unknown> {
  const text = await io.readInput(path);
  try {
    // The sidecar's own parser: duplicate or case-variant keys and numbers a double cannot hold are refused here as there.
    return parseStrictJson(text);
  } catch (error) {
    throw new UsageError(`--input ${path} is not strict JSON: ${error instanceof Error ? error.message : String(error)}`);
  }
}

/** Decides the call, prints the answer and returns the exit status (eval's, and kubectl portcullis why's). */
export function printDecision(evaluator: Pick<PolicyEvaluator, 'authorize'>, input: unknown, io: CliIo, exitCode: boolean): number {
  const answer = evaluator.authorize(input);
  io.stdout(`${JSON.stringify(answer, null, 2)}\n`);
  return exitCodeOf(answer, exitCode);
}

export async function evalCommand(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: {
      filename: { type: 'string', short: 'f', multiple: true },
      bundle: { type: 'string' },
      'public-key': { type: 'string', multiple: true },
      jwks: { type: 'string', multiple: true },
      tenant: { type: 'string' },
      'insecure-skip-verify': { type: 'boolean' },
      input: { type: 'string', short: 'i' },
      'exit-code': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    allowPositionals: true,
  });
  if (values.help === true) {
    io.stdout(EVAL_USAGE);
    return 0;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${positionals[0] ?? ''}`);
  const files = values.filename ?? [];
  if (files.length === 0 && values.bundle === undefined) throw new UsageError('eval needs manifests, -f FILE|DIR, or a bundle, --bundle BUNDLE');
  if (files.length > 0 && values.bundle !== undefined) throw new UsageError('eval takes manifests (-f) or a bundle (--bundle), not both');
  if (values.input === undefined) throw new UsageError('eval needs the call: --input FILE, or --input - for standard input');
  const input = await readCall(values.input, io);
  let evaluator: PolicyEvaluator;
  try {
    evaluator = await evaluatorFor(values, input, io);
  } catch (error) {
    if (!(error instanceof BundleError)) throw error;
    io.stderr(`portcullis: bundle refused (${error.code}): ${error.message}\n`);
    return 1;
  }
  return printDecision(evaluator, input, io, values['exit-code'] === true);
}
