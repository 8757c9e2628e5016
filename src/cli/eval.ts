// portcullis eval: one call against policy files, no cluster needed. It runs
// the same decision core as the sidecar.
import { parseArgs } from 'node:util';
import { readManifestPaths } from '../compiler/index.ts';
import { parseStrictJson } from '../sidecar/strict-json.ts';
import type { CliIo } from './io.ts';
import { UsageError } from './io.ts';
import { namespaceOf, TenantEvaluators } from './tenants.ts';

export const EVAL_USAGE = `Usage: portcullis eval -f FILE|DIR [-f ...] --input FILE|-

Decides one call against the policies in the manifests and prints the answer
as JSON. The call is the JSON body of POST /v1/authorize (see README).

  -f, --filename FILE|DIR   manifests: YAML files, or folders of them (repeatable)
  -i, --input FILE|-        the call, as JSON; - reads standard input
`;

export async function evalCommand(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: {
      filename: { type: 'string', short: 'f', multiple: true },
      input: { type: 'string', short: 'i' },
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
  if (files.length === 0) throw new UsageError('eval needs manifests: -f FILE|DIR');
  if (values.input === undefined) throw new UsageError('eval needs the call: --input FILE, or --input - for standard input');
  const text = await io.readInput(values.input);
  let input: unknown;
  try {
    // The sidecar's own parser: duplicate or case-variant keys and numbers a double cannot hold are refused here as there.
    input = parseStrictJson(text);
  } catch (error) {
    throw new UsageError(`--input ${values.input} is not strict JSON: ${error instanceof Error ? error.message : String(error)}`);
  }
  const evaluators = new TenantEvaluators(await readManifestPaths(files));
  const evaluator = await evaluators.forNamespace(namespaceOf(input));
  io.stdout(`${JSON.stringify(evaluator.authorize(input), null, 2)}\n`);
  return 0;
}
