// Compiler and decision-core figures: compile time, bundle size and in-process
// decision latency at 10, 100, 1,000 and 5,000 rules per tenant, next to
// `opa bench` (Go) on the same Rego, data and input. Writes
// bench/results/compiler.json. Figures, not pass/fail.
//   npm run bench -- compiler
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { compileTenant, generateTenant, opaBinary, PolicyEvaluator } from '../src/compiler/index.ts';
import { buildWasm } from '../src/compiler/opa.ts';
import { configMapSize, formatRevision, generateSigningKey, signBundle } from '../src/bundle/index.ts';
import { manyRules, tenantOf } from '../src/compiler/test-support.ts';
import type { Figure } from './lib.ts';
import { figure, percentile, report } from './lib.ts';

const run = promisify(execFile);
const SIZES = [10, 100, 1000, 5000];
const TOOLS = 50;

/** count rules over TOOLS tools in policies of 100 rules, every condition distinct. */
function tenant(count: number): ReturnType<typeof manyRules> {
  return manyRules('bench', count, {
    tools: TOOLS,
    actions: ['create'],
    when: (r) => [
      { param: 'amount', max: 1000 + r },
      { param: 'currency', oneOf: ['USD', 'EUR', `C${r}`] },
      { param: 'account', regex: `[0-9]{10,12}|x${r}` },
      { time: { start: '09:00', end: `${String(10 + (r % 13)).padStart(2, '0')}:00`, timeZone: 'America/New_York' } },
    ],
  });
}

const call = {
  namespace: 'bench',
  agent: 'bot',
  tool: 'tool-1',
  action: 'create',
  params: { amount: 900, currency: 'USD', account: '1234567890' },
  time: '2026-11-23T15:00:00Z',
};

/** The same call with a currency no rule allows: a default deny, whose reasons explain the first 8 rules. */
const denied = { ...call, params: { ...call.params, currency: 'GBP' } };

/** Decisions before the timed ones, so that these run code the JIT has optimized. */
const WARM_UP = 10_000;

/** Sorted latencies in microseconds of `count` calls, after a warm-up. */
function latencies(evaluator: PolicyEvaluator, input: unknown, count: number): number[] {
  for (let i = 0; i < WARM_UP; i++) evaluator.authorize(input);
  const samples: number[] = [];
  for (let i = 0; i < count; i++) {
    const t = process.hrtime.bigint();
    evaluator.authorize(input);
    samples.push(Number(process.hrtime.bigint() - t) / 1000);
  }
  return samples.sort((a, b) => a - b);
}

async function opaBenchNsPerOp(rego: string, dataJson: string, input: unknown): Promise<number> {
  const dir = await mkdtemp(join(tmpdir(), 'portcullis-bench-'));
  try {
    await writeFile(join(dir, 'authz.rego'), rego);
    await writeFile(join(dir, 'data.json'), dataJson);
    await writeFile(join(dir, 'input.json'), JSON.stringify(input));
    const { stdout } = await run(opaBinary(), ['bench', '--format', 'json', '-d', join(dir, 'authz.rego'), '-d', join(dir, 'data.json'), '-i', join(dir, 'input.json'), 'data.portcullis.authz.result'], {
      maxBuffer: 64 * 1024 * 1024,
    });
    return (JSON.parse(stdout) as { N: number; T: number }).T / (JSON.parse(stdout) as { N: number }).N;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const ALLOW_SAMPLES = 20_000;
const DENY_SAMPLES = 5000;
const figures: Figure[] = [];
const loadBefore = loadavg().map((l) => l.toFixed(2)).join(' ');
const signingKey = await generateSigningKey();
for (const size of SIZES) {
  const resources = tenant(size);
  let start = performance.now();
  const resourcesOfTenant = tenantOf(resources, 'bench');
  const parseMs = performance.now() - start;
  start = performance.now();
  const generated = generateTenant(resourcesOfTenant);
  const generateMs = performance.now() - start;
  start = performance.now();
  await buildWasm(generated.rego, generated.entrypoints);
  const opaBuildMs = performance.now() - start;
  const compiled = await compileTenant(resourcesOfTenant);
  const evaluator = await PolicyEvaluator.load(compiled);
  const samples = latencies(evaluator, call, ALLOW_SAMPLES);
  const deniedSamples = latencies(evaluator, denied, DENY_SAMPLES);
  // opa bench gets the input as the core hands it to the WASM: the clock and regex matches of the reachable rules included.
  const goUs = (await opaBenchNsPerOp(generated.rego[0]?.text ?? '', generated.dataJson, evaluator.programInput(call))) / 1000;
  // The ConfigMap the operator writes: signed, text files as text, the policy module gzip'd and base64.
  const signed = await signBundle(
    { manifest: { revision: formatRevision(1, compiled.revision), roots: ['portcullis'], metadata: { tenant: compiled.tenant }, wasm: [{ entrypoint: compiled.entrypoints[0] ?? '', module: '/policy.wasm' }] }, wasm: compiled.wasm, data: compiled.data },
    signingKey,
  );
  const configMapBytes = configMapSize(signed);
  const at1000 = size === 1000;
  const compileMs = generateMs + opaBuildMs;
  const p50 = percentile(samples, 50);
  const p99 = percentile(samples, 99);
  figures.push(
    figure(`${size} rules: YAML parse and schema validation`, parseMs, 'ms'),
    figure(`${size} rules: compile (IR, Rego, data) + opa build`, compileMs, 'ms', at1000 ? { text: '<= 1000 ms', met: compileMs <= 1000 } : undefined),
    figure(`${size} rules: signed bundle as its ConfigMap (data + binaryData)`, configMapBytes / 1024, 'KiB', at1000 ? { text: '<= 1024 KiB', met: configMapBytes <= 1024 * 1024 } : undefined),
    figure(`${size} rules: authorize p50 (20 rules per tool at 1,000)`, p50, 'us', undefined, { name: 'opa bench (Go)', value: goUs }),
    figure(`${size} rules: authorize p99`, p99, 'us', at1000 ? { text: '<= 50 us', met: p99 <= 50 } : undefined),
    figure(`${size} rules: authorize p50, default deny (reasons from 8 rules)`, percentile(deniedSamples, 50), 'us'),
    figure(`${size} rules: authorize p99, default deny`, percentile(deniedSamples, 99), 'us'),
  );
}
await report('compiler', figures, [
  `authorize: one call of tool-1 (20 rules, each with a distinct regex, a time window in America/New_York, a max and a oneOf), decided by its first rule; ${ALLOW_SAMPLES} decisions after ${WARM_UP} of warm-up, each timed alone, the whole answer (reasons included) made each time. Default deny: the same call with a currency no rule allows, ${DENY_SAMPLES} decisions.`,
  'opa bench (Go): the same program, data.json and the input the core hands the WASM (PolicyEvaluator.programInput: the call normalized, with the clock and the regex matches of the rules it can reach).',
  `Load average before the run (2 cores shared with other work): ${loadBefore}; after: ${loadavg().map((l) => l.toFixed(2)).join(' ')}.`,
]);
