// Redaction in the path of the call: the in-process operator writes a tenant's
// bundle whose rules sanitize requests and ask for answers to be redacted
// (redactResponse), a spawned `portcullis sidecar` loads it, and a client
// built from go-control-plane's ext_proc types (hack/tools/extproc-client)
// drives Process streams exactly as Envoy's ext_proc filter would.
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { stringify } from 'yaml';
import type { Operator } from '../../src/operator/operator.ts';
import { envoyBootstrap } from '../../src/webhook/index.ts';
import type { TrackedProcess } from '../harness/cluster.ts';
import { eventually, spawnTracked } from '../harness/cluster.ts';
import { freePort, kubectl, REPO_ROOT } from '../harness/control-plane.ts';
import { agentKubeconfigFile, startScopedOperator } from '../harness/local-parts.ts';

const execFileAsync = promisify(execFile);
const plane = inject('controlPlane');
const OPERATOR_NS = 'extproc-system';
const NS = 'extproc-health';
const AGENT = 'clerk-agent';
const EHR = 'ehr.tools.svc';

let operator: Operator;
let sidecar: TrackedProcess;
let httpBase: string;
let grpcAddress: string;

const apply = async (docs: unknown[]): Promise<void> => {
  await kubectl(plane, ['apply', '--validate=strict', '-f', '-'], { input: docs.map((d) => stringify(d)).join('---\n') });
};

const recordsPolicy = {
  apiVersion: 'portcullis.dev/v1alpha1',
  kind: 'ToolPolicy',
  metadata: { name: 'records', namespace: NS },
  spec: {
    subjects: { agents: [AGENT] },
    tools: [{ name: 'ehr', http: { host: EHR, actions: [{ name: 'read_record', method: 'POST', path: '/v1/records' }, { name: 'notes', method: 'POST', path: '/v1/notes' }] } }],
    rules: [
      { name: 'ehr-read', tool: 'ehr', actions: ['read_record'], decision: 'sanitize', redact: ['ssn', 'email'], redactResponse: ['ssn', 'email'] },
      { name: 'ehr-notes', tool: 'ehr', actions: ['notes'], decision: 'allow', redactResponse: ['pii'] },
    ],
  },
};

interface Scenario {
  request: { method: string; host: string; path: string; headers?: Record<string, string>; body?: string };
  response?: { status?: number; headers?: Record<string, string>; chunks?: string[] };
}

interface Header { key: string; value: string }
interface Outcome {
  upstream_request?: { headers: Header[]; body: string };
  downstream_response?: { headers: Header[]; body: string; chunks?: string[] };
  immediate_response?: { phase: string; status: number; headers: Header[]; body: string };
  stream_error?: string;
  request_body_mode: string;
  response_body_mode: string;
}

let runs = 0;
/** Runs one request and its answer through the sidecar's ext_proc with the Go client, as Envoy would. */
async function drive(scenario: Scenario): Promise<Outcome> {
  const file = join(plane.runDir, `extproc-scenario-${++runs}.json`);
  await writeFile(file, JSON.stringify(scenario));
  const { stdout } = await execFileAsync(plane.tools.extprocClient, ['-addr', grpcAddress, '-scenario', file], { maxBuffer: 8 << 20 });
  return JSON.parse(stdout) as Outcome;
}

const headerOf = (headers: Header[] | undefined, key: string): string | undefined => headers?.find((h) => h.key === key)?.value;

/** Sends ext_authz's Check for the same request with the ext_authz client, as Envoy would first; returns the headers it adds upstream. */
async function check(request: Scenario['request']): Promise<Record<string, string>> {
  const file = join(plane.runDir, `extproc-check-${++runs}.json`);
  await writeFile(file, JSON.stringify({ ...request, headers: { ...request.headers, 'x-envoy-auth-partial-body': 'false' }, pack_as_bytes: true }));
  const { stdout } = await execFileAsync(plane.tools.extauthzClient, ['-addr', grpcAddress, '-request', file]);
  const response = JSON.parse(stdout) as { ok_response?: { headers?: { header: Header }[] } };
  return Object.fromEntries((response.ok_response?.headers ?? []).map(({ header }) => [header.key, header.value]));
}

async function decisionsOf(rule: string): Promise<number> {
  const metrics = await (await fetch(`${httpBase}/metrics`)).text();
  const line = metrics.split('\n').find((l) => l.startsWith('portcullis_decisions_total{') && l.includes(`rule="${rule}"`));
  return line === undefined ? 0 : Number(line.split(' ').at(-1));
}
const json = { 'content-type': 'application/json' };

beforeAll(async () => {
  operator = await startScopedOperator(plane, 'extproc', OPERATOR_NS);
  await apply([
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } },
    { apiVersion: 'portcullis.dev/v1alpha1', kind: 'AgentIdentity', metadata: { name: AGENT, namespace: NS }, spec: { serviceAccountName: AGENT, owner: { name: 'Dana Ruiz', email: 'dana@example.com' } } },
    recordsPolicy,
  ]);
  const kubeconfig = await agentKubeconfigFile(plane, NS, AGENT);
  const [httpPort, grpcPort] = [await freePort(), await freePort()];
  httpBase = `http://127.0.0.1:${httpPort}`;
  grpcAddress = `127.0.0.1:${grpcPort}`;
  sidecar = await spawnTracked(plane, process.execPath, [
    join(REPO_ROOT, 'bin', 'portcullis.js'), 'sidecar', '--kubeconfig', kubeconfig, '--agent', AGENT, '--namespace', NS, '--trust-namespace', OPERATOR_NS,
    '--http-address', `127.0.0.1:${httpPort}`, '--grpc-address', grpcAddress, '--sanitize-with-ext-proc',
  ]);
  await eventually('the sidecar to be ready', async () => ((await fetch(`${httpBase}/readyz`).catch(() => undefined))?.status === 200 ? true : undefined), 60_000);
});

afterAll(async () => {
  await sidecar.kill('SIGTERM');
  await operator.stop();
});

describe("the sidecar's ext_proc, driven as Envoy drives it", () => {
  it('sends a sanitized request upstream with the SSN and the e-mail redacted and content-length fixed', async () => {
    const body = JSON.stringify({ patient: { name: 'Dana Ruiz', ssn: '123-45-6789', contact: 'write to dana@example.com' }, reason: 'checkup' });
    const outcome = await drive({ request: { method: 'POST', host: EHR, path: '/v1/records', headers: { ...json, 'accept-encoding': 'gzip' }, body }, response: { headers: json, chunks: ['{"ok": true}'] } });
    const upstream = outcome.upstream_request;
    expect(JSON.parse(upstream?.body ?? '{}')).toEqual({ patient: { name: 'Dana Ruiz', ssn: '[REDACTED:ssn]', contact: 'write to [REDACTED:email]' }, reason: 'checkup' });
    expect(headerOf(upstream?.headers, 'content-length')).toBe(String(Buffer.byteLength(upstream?.body ?? '')));
    // The answer is to be redacted too: it must come back uncompressed.
    expect(headerOf(upstream?.headers, 'accept-encoding')).toBeUndefined();
    const metrics = await (await fetch(`${httpBase}/metrics`)).text();
    expect(metrics).toMatch(/portcullis_decisions_total\{decision="sanitize",enforced="true",policy="records",rule="ehr-read",tool="ehr"\} [1-9]/);
    expect(metrics).toMatch(/portcullis_decision_duration_seconds_count\{transport="ext-proc"\} [1-9]/);
  });

  it('redacts a JSON answer value by value, keeping its other bytes, with its content-length', async () => {
    const answer = '{"record": {"ssn": "123-45-6789", "email": "dana@example.com", "visits": 3}}';
    const outcome = await drive({ request: { method: 'POST', host: EHR, path: '/v1/records', headers: json, body: '{"patient": "p-1"}' }, response: { headers: { ...json, 'content-length': String(answer.length) }, chunks: [answer] } });
    expect(outcome.response_body_mode).toBe('BUFFERED');
    expect(outcome.downstream_response?.body).toBe('{"record": {"ssn": "[REDACTED:ssn]", "email": "[REDACTED:email]", "visits": 3}}');
    expect(headerOf(outcome.downstream_response?.headers, 'content-length')).toBe(String(outcome.downstream_response?.body.length));
  });

  it('redacts a streamed text/event-stream answer event by event, secrets split across chunks and events included', async () => {
    const chunks = [
      'event: message\ndata: {"text": "SSN 123-45-',
      '6789, card 4111 1111"}\n\n',
      'data: {"text": " 1111 1111 and dana@exa',
      'mple.com"}\n\n',
      'data: {"text": " done."}\n\n',
    ];
    const outcome = await drive({ request: { method: 'POST', host: EHR, path: '/v1/notes', headers: json, body: '{"patient": "p-1"}' }, response: { headers: { 'content-type': 'text/event-stream' }, chunks } });
    expect(outcome.response_body_mode).toBe('STREAMED');
    const passed = outcome.downstream_response?.chunks ?? [];
    expect(passed).toHaveLength(chunks.length);
    // Nothing passes until an event is whole and what it ends with can no longer grow into a value: the card goes on in the next event.
    expect(passed.slice(0, 3)).toEqual(['', '', '']);
    expect(passed[3]).toBe('event: message\ndata: {"text": "SSN [REDACTED:ssn], card [REDACTED:credit_card]"}\n\n');
    expect(passed[4]).toBe('data: {"text": " and [REDACTED:email]"}\n\ndata: {"text": " done."}\n\n');
  });

  it('ends an answer over the inspection limit with 502 and never passes it', async () => {
    const answer = JSON.stringify({ ssn: '123-45-6789', pad: 'x'.repeat(1024 * 1024) });
    const outcome = await drive({ request: { method: 'POST', host: EHR, path: '/v1/records', headers: json, body: '{"patient": "p-1"}' }, response: { headers: json, chunks: [answer] } });
    expect(outcome.downstream_response).toBeUndefined();
    expect(outcome.immediate_response).toMatchObject({ phase: 'response_body', status: 502 });
    expect(JSON.parse(outcome.immediate_response?.body ?? '{}')).toMatchObject({ reason: 'the answer is over the inspection limit of 1048576 bytes' });
  });

  it('after ext_authz, applies the decision ext_authz made for the request (one decision, counted once) and refuses its replay', async () => {
    const request = { method: 'POST', host: EHR, path: '/v1/notes', headers: json, body: '{"patient": "p-7"}' };
    const before = await decisionsOf('ehr-notes');
    const upstreamHeaders = await check(request);
    expect(upstreamHeaders['x-portcullis-decision']).toBe('allow');
    const chained = { ...request, headers: { ...json, ...upstreamHeaders } };
    const outcome = await drive({ request: chained, response: { headers: { 'content-type': 'text/event-stream' }, chunks: ['data: {"to": "dana@example.com"}\n\n'] } });
    expect(outcome.downstream_response?.body).toBe('data: {"to": "[REDACTED:email]"}\n\n');
    expect(await decisionsOf('ehr-notes')).toBe(before + 1);
    const replayed = await drive({ request: chained, response: { headers: json, chunks: ['{}'] } });
    expect(replayed.immediate_response).toMatchObject({ phase: 'request_body', status: 403 });
  });

  it('through ext_authz then ext_proc, as the injected Envoy chains them: a sanitize call passes ext_authz and reaches the upstream redacted', async () => {
    const request = { method: 'POST', host: EHR, path: '/v1/records', headers: json, body: JSON.stringify({ patient: { ssn: '123-45-6789' } }) };
    const upstreamHeaders = await check(request);
    expect(upstreamHeaders['x-portcullis-decision']).toBe('sanitize');
    const outcome = await drive({ request: { ...request, headers: { ...json, ...upstreamHeaders } }, response: { headers: json, chunks: ['{"ok": true}'] } });
    expect(JSON.parse(outcome.upstream_request?.body ?? '{}')).toEqual({ patient: { ssn: '[REDACTED:ssn]' } });
  });

  it('is asked for by policies the API server checks: redactResponse goes only with allow or sanitize', async () => {
    const denyRule = { ...recordsPolicy, metadata: { name: 'records-deny', namespace: NS }, spec: { ...recordsPolicy.spec, tools: undefined, rules: [{ name: 'refuse', tool: 'ehr', decision: 'deny', redactResponse: ['ssn'] }] } };
    const refused = await kubectl(plane, ['apply', '--validate=strict', '-f', '-'], { input: stringify(denyRule), allowFailure: true });
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain('redactResponse goes only with decision allow or sanitize');
  });

  it("is configured in the injected Envoy after ext_authz, in a bootstrap Envoy's own types accept", async () => {
    const checker = process.env.TEST_ASSET_ENVOY_CHECK;
    if (!checker) throw new Error('TEST_ASSET_ENVOY_CHECK must name hack/tools/envoy-check (hack/test.sh builds it)');
    const bootstrap = envoyBootstrap();
    const file = join(plane.runDir, 'extproc-bootstrap.json');
    await writeFile(file, JSON.stringify(bootstrap));
    expect((await execFileAsync(checker, [file])).stdout).toContain('ok ');
    const filters = JSON.stringify(bootstrap);
    expect(filters.indexOf('envoy.filters.http.ext_authz')).toBeLessThan(filters.indexOf('envoy.filters.http.ext_proc'));
    // The modes the sidecar asks for per answer are Envoy's own: a misspelt one is refused by Envoy's types.
    const broken = join(plane.runDir, 'extproc-bootstrap-broken.json');
    await writeFile(broken, JSON.stringify(bootstrap).replace('"response_body_mode":"NONE"', '"response_body_mode":"STREAMING"'));
    const refused = await execFileAsync(checker, [broken]).then(() => 'passed', (error: unknown) => String((error as { stdout?: string }).stdout));
    expect(refused).toMatch(/FAIL .*invalid value for enum field responseBodyMode: "STREAMING"/);
  });

  it('resets a streamed answer that cannot be redacted in bounded memory, after what was already redacted', async () => {
    // base64 holding an address, streamed as it grows: the run is the match and keeps growing past the bound.
    const grown = Buffer.from(`mail dana@example.com ${'x'.repeat(6000)}`).toString('base64').match(/.{1,100}/gu) ?? [];
    const event = (delta: string): string => `data: ${JSON.stringify({ delta })}\n\n`;
    const chunks = [event('ok! '), ...grown.map(event)];
    const outcome = await drive({ request: { method: 'POST', host: EHR, path: '/v1/notes', headers: json, body: '{"patient": "p-1"}' }, response: { headers: { 'content-type': 'text/event-stream' }, chunks } });
    expect(outcome.immediate_response).toMatchObject({ phase: 'response_body', status: 502 });
    expect(outcome.downstream_response?.body ?? '').toBe('');
    expect((outcome.downstream_response?.chunks ?? []).join('')).toBe(event('ok! '));
  });
});
