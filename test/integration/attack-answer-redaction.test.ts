// Answers that try to get PII past redaction by the way they are written: a
// spawned `portcullis sidecar` redacts a tool's answers (redactResponse: pii),
// driven by go-control-plane's ext_proc client (hack/tools/extproc-client) as
// Envoy drives it. Each answer here passed unredacted before stream redaction
// read events as JSON and joined a field's deltas, and before the detectors
// read escaped, encoded and oddly spaced values.
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { stringify } from 'yaml';
import type { Operator } from '../../src/operator/operator.ts';
import type { TrackedProcess } from '../harness/cluster.ts';
import { eventually, spawnTracked } from '../harness/cluster.ts';
import { freePort, kubectl, REPO_ROOT } from '../harness/control-plane.ts';
import { agentKubeconfigFile, startScopedOperator } from '../harness/local-parts.ts';

const execFileAsync = promisify(execFile);
const plane = inject('controlPlane');
const OPERATOR_NS = 'answer-redaction-system';
const NS = 'answer-redaction';
const AGENT = 'chat-agent';
const LLM = 'llm.tools.svc';

let operator: Operator;
let sidecar: TrackedProcess;
let grpcAddress: string;

interface Outcome {
  downstream_response?: { body: string; chunks?: string[] };
  immediate_response?: { phase: string; status: number; body: string };
  response_body_mode: string;
}

let runs = 0;
/** One call to the LLM tool and its answer in these chunks, through the sidecar's ext_proc as Envoy would send it. */
async function answer(contentType: string, chunks: string[]): Promise<Outcome> {
  const file = join(plane.runDir, `answer-redaction-${String(++runs)}.json`);
  const scenario = {
    request: { method: 'POST', host: LLM, path: '/v1/chat/completions', headers: { 'content-type': 'application/json' }, body: '{"model": "m", "stream": true}' },
    response: { headers: { 'content-type': contentType }, chunks },
  };
  await writeFile(file, JSON.stringify(scenario));
  const { stdout } = await execFileAsync(plane.tools.extprocClient, ['-addr', grpcAddress, '-scenario', file], { maxBuffer: 8 << 20 });
  return JSON.parse(stdout) as Outcome;
}

/** The JSON of each SSE event's data that is JSON. */
function sseData(text: string): unknown[] {
  return text.split('\n\n').map((event) => /^data: (.*)$/mu.exec(event)?.[1]).filter((data): data is string => data?.startsWith('{') === true).map((data) => JSON.parse(data) as unknown);
}

const openAiChunk = (content: string): string =>
  `data: ${JSON.stringify({ id: 'chatcmpl-7', object: 'chat.completion.chunk', created: 1733400000, model: 'gpt-4o-mini', choices: [{ index: 0, delta: { content }, finish_reason: null }] })}\n\n`;
const contentOf = (event: unknown): string => (event as { choices: { delta: { content: string } }[] }).choices[0]?.delta.content ?? '';

beforeAll(async () => {
  operator = await startScopedOperator(plane, 'answer-redaction', OPERATOR_NS);
  await kubectl(plane, ['apply', '--validate=strict', '-f', '-'], {
    input: [
      { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } },
      { apiVersion: 'portcullis.dev/v1alpha1', kind: 'AgentIdentity', metadata: { name: AGENT, namespace: NS }, spec: { serviceAccountName: AGENT, owner: { name: 'Dana Ruiz', email: 'dana@example.com' } } },
      {
        apiVersion: 'portcullis.dev/v1alpha1',
        kind: 'ToolPolicy',
        metadata: { name: 'llm', namespace: NS },
        spec: {
          subjects: { agents: [AGENT] },
          tools: [{ name: 'llm', http: { host: LLM, actions: [{ name: 'chat', method: 'POST', path: '/v1/chat/completions' }] } }],
          rules: [{ name: 'chat', tool: 'llm', actions: ['chat'], decision: 'allow', redactResponse: ['pii'] }],
        },
      },
    ].map((doc) => stringify(doc)).join('---\n'),
  });
  const kubeconfig = await agentKubeconfigFile(plane, NS, AGENT);
  const [httpPort, grpcPort] = [await freePort(), await freePort()];
  grpcAddress = `127.0.0.1:${String(grpcPort)}`;
  sidecar = await spawnTracked(plane, process.execPath, [
    join(REPO_ROOT, 'bin', 'portcullis.js'), 'sidecar', '--kubeconfig', kubeconfig, '--agent', AGENT, '--namespace', NS, '--trust-namespace', OPERATOR_NS,
    '--http-address', `127.0.0.1:${String(httpPort)}`, '--grpc-address', grpcAddress, '--sanitize-with-ext-proc',
  ]);
  await eventually('the sidecar to be ready', async () => ((await fetch(`http://127.0.0.1:${String(httpPort)}/readyz`).catch(() => undefined))?.status === 200 ? true : undefined), 60_000).catch((error: unknown) => {
    throw new Error(`${String(error)}; the sidecar said: ${sidecar.output().slice(-2000)}`);
  });
});

afterAll(async () => {
  await sidecar.kill('SIGTERM');
  await operator.stop();
});

describe('an answer that spreads or encodes PII to get it past redaction', () => {
  it('a card streamed as LLM deltas over separate SSE events reaches the agent redacted, none of its digits in any event', async () => {
    const chunks = ['The card on file is', ' 4111', ' 1111', ' 1111', ' 1111', '. Anything else?'].map(openAiChunk);
    const outcome = await answer('text/event-stream', [...chunks, 'data: [DONE]\n\n']);
    expect(outcome.response_body_mode).toBe('STREAMED');
    const passed = outcome.downstream_response?.body ?? '';
    expect(passed).not.toMatch(/1111/);
    expect(sseData(passed).map(contentOf).join('')).toBe('The card on file is [REDACTED:credit_card]. Anything else?');
    expect(passed.endsWith('data: [DONE]\n\n')).toBe(true);
  });

  it('an e-mail streamed in three events reaches the agent redacted', async () => {
    const chunks = ['Write to dana.ru', 'iz@exam', 'ple.com today.'].map((delta) => `event: content_block_delta\ndata: ${JSON.stringify({ type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: delta } })}\n\n`);
    const outcome = await answer('text/event-stream', chunks);
    const passed = outcome.downstream_response?.body ?? '';
    expect(passed).not.toMatch(/dana|iz@|exam/);
    expect(sseData(passed).map((event) => (event as { delta: { text: string } }).delta.text).join('')).toBe('Write to [REDACTED:email] today.');
  });

  it('an NDJSON answer writing an e-mail with a \\u0040 escape reaches the agent redacted', async () => {
    const line = '{"message":{"role":"assistant","content":"Reach me at dana\\u0040example.com"},"done":false}\n';
    const outcome = await answer('application/x-ndjson', [line, '{"done":true}\n']);
    expect(outcome.response_body_mode).toBe('STREAMED');
    const passed = outcome.downstream_response?.body ?? '';
    expect(passed).not.toMatch(/dana|u0040/);
    expect(passed.split('\n').filter(Boolean).map((l) => JSON.parse(l) as unknown)).toEqual([
      { message: { role: 'assistant', content: 'Reach me at [REDACTED:email]' }, done: false },
      { done: true },
    ]);
  });

  it('an SSE event writing card digits as \\u0034 escapes, and PII in object keys, reach the agent redacted', async () => {
    const event = 'data: {"text": "card \\u0034\\u0031\\u0031\\u0031 1111 1111 1111", "byEmail": {"dana@example.com": 1}}\n\n';
    const passed = (await answer('text/event-stream', [event])).downstream_response?.body ?? '';
    expect(sseData(passed)).toEqual([{ text: 'card [REDACTED:credit_card]', byEmail: { '[REDACTED:email]': 1 } }]);
  });

  it('a JSON answer with a bare SSN, cards split by dots, slashes, NBSP and zero-width spaces, &#64; and %40 e-mails and a base64 card reaches the agent redacted', async () => {
    const body = JSON.stringify({
      ssn: '078051120',
      cards: ['4111.1111.1111.1111', '4111/1111/1111/1111', '4111\u00a01111\u00a01111\u00a01111', '4111\u200b1111\u200b1111\u200b1111', Buffer.from('4111 1111 1111 1111').toString('base64')],
      emails: ['dana&#64;example.com', 'dana%40example.com'],
    });
    const outcome = await answer('application/json', [body]);
    expect(JSON.parse(outcome.downstream_response?.body ?? '{}')).toEqual({
      ssn: '[REDACTED:ssn]',
      cards: Array.from({ length: 5 }, () => '[REDACTED:credit_card]'),
      emails: ['[REDACTED:email]', '[REDACTED:email]'],
    });
  });

  it('a compressed answer is refused with 502, never passed unread', async () => {
    const file = join(plane.runDir, `answer-redaction-${String(++runs)}.json`);
    await writeFile(file, JSON.stringify({
      request: { method: 'POST', host: LLM, path: '/v1/chat/completions', headers: { 'content-type': 'application/json' }, body: '{}' },
      response: { headers: { 'content-type': 'text/event-stream', 'content-encoding': 'gzip' }, chunks: ['\u001f\u008b'] },
    }));
    const { stdout } = await execFileAsync(plane.tools.extprocClient, ['-addr', grpcAddress, '-scenario', file]);
    const outcome = JSON.parse(stdout) as Outcome;
    expect(outcome.immediate_response).toMatchObject({ phase: 'response_headers', status: 502 });
    expect(outcome.downstream_response).toBeUndefined();
  });
});
