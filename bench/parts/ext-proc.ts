// The ext_proc figures, shared by `npm run bench -- ext-proc` and `npm run bench -- state`.
//
// What the sidecar's ext_proc adds to a proxied call with a 4 KiB JSON body:
// the time Envoy waits on the sidecar before it forwards the request (request
// headers and buffered body, each a round trip on the Process stream), when
// the call is sanitized (body rewritten) and when it is allowed (passed
// unchanged); and the time a 4 KiB answer spends being redacted, buffered JSON
// and an event stream in 8 chunks. The client is hack/tools/extproc-client
// (go-control-plane's types, as Envoy sends them), streams over one
// connection; the sidecar's gRPC server (ext_authz and ext_proc) and decision
// core run in this process on a compiled policy. ext_authz's Check with the
// same body, on the same server, is the reference. Figures, not pass/fail.
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { agent, compiledEvaluator, toolPolicy } from '../../src/compiler/test-support.ts';
import { Authorizer } from '../../src/sidecar/authorizer.ts';
import { addExternalProcessor } from '../../src/sidecar/ext-proc.ts';
import { createGrpcServer, listenGrpc } from '../../src/sidecar/grpc-server.ts';
import { createSidecarMetrics } from '../../src/sidecar/metrics.ts';
import { toolTableOf } from '../../src/sidecar/tools.ts';
import type { Figure } from '../lib.ts';
import { figure } from '../lib.ts';

const run = promisify(execFile);
const STREAMS = Number(process.env.BENCH_STREAMS ?? 3000);
const WARM_UP = 300;
const HOST = 'ehr.tools.svc';

function tool(env: string): string {
  const path = process.env[env];
  if (path === undefined || path === '') throw new Error(`${env} is not set: run through npm run bench (hack/bench.sh builds the tools)`);
  return path;
}

/** A JSON object of exactly `bytes` bytes holding an SSN and an e-mail address among ordinary fields. */
function jsonOf(bytes: number): string {
  const base = { patient: { id: 'p-1042', ssn: '123-45-6789', email: 'dana@example.com' }, notes: [] as string[], filler: '' };
  for (let i = 0; JSON.stringify(base).length < bytes - 120; i++) base.notes.push(`visit ${i}: blood pressure normal, follow up in six months`);
  base.filler = 'x'.repeat(bytes - JSON.stringify(base).length);
  const text = JSON.stringify(base);
  if (Buffer.byteLength(text) !== bytes) throw new Error(`the body is ${Buffer.byteLength(text)} bytes, not ${bytes}`);
  return text;
}

/** Milliseconds of a Go duration as time.Duration prints it (950ns, 584.459µs, 4.66ms, 1.2s). */
function milliseconds(duration: string): number {
  const match = /^([0-9.]+)(ns|µs|us|ms|s)$/.exec(duration);
  if (match === null) throw new Error(`not a Go duration: ${duration}`);
  const scale: Record<string, number> = { ns: 1e-6, µs: 1e-3, us: 1e-3, ms: 1, s: 1000 };
  return Number(match[1]) * (scale[match[2] ?? ''] ?? Number.NaN);
}

/** p50 and p99 of one line of the clients' -repeat report: "streams=N request p50=… p99=… max=…". */
function quantiles(stderr: string, label: string): { p50: number; p99: number } {
  const line = stderr.split('\n').find((l) => l.includes(label));
  const p50 = /p50=(\S+)/.exec(line ?? '')?.[1];
  const p99 = /p99=(\S+)/.exec(line ?? '')?.[1];
  if (p50 === undefined || p99 === undefined) throw new Error(`no "${label}" figures in: ${stderr}`);
  return { p50: milliseconds(p50), p99: milliseconds(p99) };
}

/** Runs the ext_proc measurements on a sidecar gRPC server in this process. */
export async function extProcFigures(): Promise<Figure[]> {
  const resources = [
    agent('health', 'bot'),
    toolPolicy('health', 'records', [
      { name: 'read', tool: 'ehr', actions: ['read_record'], decision: 'sanitize', redact: ['ssn', 'email'], redactResponse: ['ssn', 'email'] },
      { name: 'notes', tool: 'ehr', actions: ['notes'], decision: 'allow' },
    ], (p) => {
      p.spec.tools = [{ name: 'ehr', http: { host: HOST, actions: [{ name: 'read_record', method: 'POST', path: '/v1/records' }, { name: 'notes', method: 'POST', path: '/v1/notes' }] } }];
    }),
  ];

  const dir = await mkdtemp(join(tmpdir(), 'portcullis-bench-ext-proc-'));
  const { evaluator } = await compiledEvaluator(resources, 'health');
  const log = pino({ level: 'silent' });
  const authorizer = new Authorizer({ identity: { namespace: 'health', agent: 'bot' }, tenant: 'health', policy: () => evaluator, metrics: createSidecarMetrics() });
  const tools = (): ReturnType<typeof toolTableOf> => toolTableOf(evaluator);
  const server = createGrpcServer({ authorizer, tools, log });
  addExternalProcessor(server, { authorizer, tools, log });
  const address = `127.0.0.1:${await listenGrpc(server, '127.0.0.1:0')}`;

  const body = jsonOf(4096);
  const json = { 'content-type': 'application/json' };
  const request = (path: string): Record<string, unknown> => ({ method: 'POST', host: HOST, path, headers: json, body });
  const answer = jsonOf(4096);
  const events = Array.from({ length: 8 }, (_, i) => `data: ${answer.slice(i * 512, (i + 1) * 512)}\n\n`);

  /** Runs a scenario `count` times over one connection with the ext_proc client; returns its report on stderr and its last outcome. */
  async function extProc(name: string, scenario: unknown, count: number): Promise<{ stderr: string; outcome: Record<string, unknown> }> {
    const file = join(dir, `${name}.json`);
    await writeFile(file, JSON.stringify(scenario));
    const { stdout, stderr } = await run(tool('TEST_ASSET_EXTPROC_CLIENT'), ['-addr', address, '-scenario', file, '-repeat', String(count)], { maxBuffer: 16 << 20 });
    return { stderr, outcome: JSON.parse(stdout) as Record<string, unknown> };
  }

  async function measure(name: string, scenario: unknown): Promise<{ request: { p50: number; p99: number }; response: { p50: number; p99: number }; outcome: Record<string, unknown> }> {
    await extProc(name, scenario, WARM_UP);
    const { stderr, outcome } = await extProc(name, scenario, STREAMS);
    return { request: quantiles(stderr, ' request '), response: quantiles(stderr, ' response '), outcome };
  }

  try {
    const sanitized = await measure('sanitize', { request: request('/v1/records'), response: { headers: json, chunks: [] } });
    const upstream = (sanitized.outcome.upstream_request as { body?: string } | undefined)?.body ?? '';
    if (upstream.includes('123-45-6789') || !upstream.includes('[REDACTED:ssn]')) throw new Error('the sanitized request was not redacted: the figures would not be of redaction');
    const allowed = await measure('allow', { request: request('/v1/notes'), response: { headers: json, chunks: [] } });
    const buffered = await measure('answer-json', { request: request('/v1/records'), response: { headers: json, chunks: [answer] } });
    const streamed = await measure('answer-sse', { request: request('/v1/records'), response: { headers: { 'content-type': 'text/event-stream' }, chunks: events } });
    const streamedBody = (streamed.outcome.downstream_response as { body?: string } | undefined)?.body ?? '';
    if (streamedBody.includes('123-45-6789') || streamed.outcome.response_body_mode !== 'STREAMED') throw new Error('the event stream was not redacted chunk by chunk');

    const checkFile = join(dir, 'check.json');
    await writeFile(checkFile, JSON.stringify({ method: 'POST', host: HOST, path: '/v1/notes', headers: { ...json, 'x-envoy-auth-partial-body': 'false' }, body, pack_as_bytes: true }));
    const client = tool('TEST_ASSET_EXTAUTHZ_CLIENT');
    await run(client, ['-addr', address, '-request', checkFile, '-repeat', String(WARM_UP)]);
    const check = quantiles((await run(client, ['-addr', address, '-request', checkFile, '-repeat', String(STREAMS)])).stderr, 'checks=');

    const figures: Figure[] = [
      figure('ext_proc request, sanitize (4 KiB JSON body rewritten), p50', sanitized.request.p50, 'ms', undefined, { name: 'ext_authz Check, same body', value: check.p50 }),
      figure('ext_proc request, sanitize (4 KiB JSON body rewritten), p99', sanitized.request.p99, 'ms', undefined, { name: 'ext_authz Check, same body', value: check.p99 }),
      figure('ext_proc request, allow (4 KiB JSON body passed unchanged), p50', allowed.request.p50, 'ms', undefined, { name: 'ext_authz Check, same body', value: check.p50 }),
      figure('ext_proc request, allow (4 KiB JSON body passed unchanged), p99', allowed.request.p99, 'ms', undefined, { name: 'ext_authz Check, same body', value: check.p99 }),
      figure('ext_proc answer, 4 KiB JSON redacted whole (BUFFERED), p50', buffered.response.p50, 'ms'),
      figure('ext_proc answer, 4 KiB JSON redacted whole (BUFFERED), p99', buffered.response.p99, 'ms'),
      figure('ext_proc answer, 4 KiB event stream in 8 chunks (STREAMED), p50', streamed.response.p50, 'ms'),
      figure('ext_proc answer, 4 KiB event stream in 8 chunks (STREAMED), p99', streamed.response.p99, 'ms'),
    ];
    return figures;
  } finally {
    server.forceShutdown();
    await rm(dir, { recursive: true, force: true });
  }
}
