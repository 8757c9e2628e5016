import { describe, expect, it } from 'vitest';
import type { AuthorizationDecision } from '../compiler/index.ts';
import { redact } from '../compiler/redact.ts';
import type { DecisionRecord } from './authorizer.ts';
import { Authorizer, SIDECAR_RULES } from './authorizer.ts';
import type { LoadedPolicy } from './bundle-verdict.ts';
import type { ProcessingRequest, ProcessingResponse } from './ext-proc.ts';
import { BODY_MODE, ExtProcProtocolError, ExtProcSession, RecentDecisions } from './ext-proc.ts';
import { createSidecarMetrics } from './metrics.ts';
import { toolTable } from './tools.ts';

const TOOLS = toolTable([
  { name: 'ehr', http: { host: 'ehr.tools.svc', actions: [{ name: 'read_record', method: 'POST', path: '/v1/records' }, { name: 'search', method: 'GET', path: '/v1/search' }] } },
  { name: 'ehr-mcp', mcp: { host: 'ehr-mcp.tools.svc', path: '/mcp' } },
]);

interface Call {
  tool?: string;
  action?: string;
  params?: Record<string, unknown>;
}

/** The decision a test wants for a call; sanitize redacts ssn and email as the evaluator would. */
type Rule = (call: Call) => Pick<AuthorizationDecision, 'decision'> & Partial<AuthorizationDecision>;

function policyOf(rule: Rule): LoadedPolicy {
  return {
    revision: '3-aaaaaaaaaaaaaaaa',
    tenant: 'health',
    authorize: (input: unknown): AuthorizationDecision => {
      const call = input as Call;
      const chosen = rule(call);
      const base: AuthorizationDecision = { enforced: true, policy: 'records', rule: 'read', revision: '3-aaaaaaaaaaaaaaaa', reasons: [], ...chosen };
      if (chosen.decision !== 'sanitize') return base;
      const { params, redacted } = redact(call.params ?? {}, ['ssn', 'email']);
      return { ...base, params, redacted };
    },
    obligations: () => ({ calls: [], rate: [], spend: [] }),
    standing: () => undefined,
  };
}

function session(rule: Rule, options: { responseLimit?: number; recent?: RecentDecisions } = {}): { session: ExtProcSession; records: DecisionRecord[]; authorizer: Authorizer } {
  const records: DecisionRecord[] = [];
  const policy = policyOf(rule);
  let ids = 0;
  const authorizer = new Authorizer({ identity: { namespace: 'health', agent: 'clerk' }, tenant: 'health', policy: () => policy, metrics: createSidecarMetrics(), observers: [(r) => records.push(r)], newId: () => `id-${++ids}` });
  if (options.recent !== undefined) authorizer.observe(options.recent.observe);
  return { session: new ExtProcSession({ authorizer, tools: () => TOOLS, ...options }), records, authorizer };
}

const headerList = (headers: Record<string, string>): { key: string; raw_value: Uint8Array }[] => Object.entries(headers).map(([key, value]) => ({ key, raw_value: Buffer.from(value) }));

/** Request headers as Envoy sends them: pseudo-headers, lower-cased names, values in raw_value. */
function requestHeaders(method: string, path: string, headers: Record<string, string>, endOfStream: boolean, bodyMode: number = BODY_MODE.BUFFERED): ProcessingRequest {
  return {
    request_headers: { headers: { headers: headerList({ ':method': method, ':path': path, ':authority': path.startsWith('/mcp') ? 'ehr-mcp.tools.svc' : 'ehr.tools.svc', ':scheme': 'http', ...headers }) }, end_of_stream: endOfStream },
    protocol_config: { request_body_mode: bodyMode, response_body_mode: BODY_MODE.NONE },
  };
}

const requestBody = (text: string, endOfStream = true): ProcessingRequest => ({ request_body: { body: Buffer.from(text), end_of_stream: endOfStream } });
const responseHeaders = (headers: Record<string, string>, endOfStream = false): ProcessingRequest => ({ response_headers: { headers: { headers: headerList({ ':status': '200', ...headers }) }, end_of_stream: endOfStream } });
const responseBody = (text: string, endOfStream: boolean): ProcessingRequest => ({ response_body: { body: Buffer.from(text), end_of_stream: endOfStream } });

const RECORD = '{"patient": {"ssn": "123-45-6789", "email": "dana@example.com"}, "reason": "checkup"}';

/** Sends the POST of RECORD; returns the answer to its body. */
async function postRecord(s: ExtProcSession, extra: Record<string, string> = {}): Promise<ProcessingResponse | undefined> {
  expect(await s.handle(requestHeaders('POST', '/v1/records', { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(RECORD)), ...extra }, false))).toEqual({ request_headers: { response: {} } });
  return s.handle(requestBody(RECORD));
}

const text = (bytes: Uint8Array | undefined): string => Buffer.from(bytes ?? new Uint8Array()).toString('utf8');
const headerValue = (response: ProcessingResponse['request_body'], key: string): string | undefined => {
  const found = response?.response.header_mutation?.set_headers?.find((h) => h.header.key === key);
  return found === undefined ? undefined : text(found.header.raw_value);
};
const bodyOf = (response: { response: { body_mutation?: { body: Uint8Array } | { clear_body: true } } } | undefined): string | undefined => {
  const mutation = response?.response.body_mutation;
  if (mutation === undefined) return undefined;
  return 'body' in mutation ? text(mutation.body) : '';
};

describe('ExtProcSession: the request', () => {
  it('rewrites the body of a sanitize call to the redacted params, fixes content-length, and records the decision under ext-proc', async () => {
    const { session: s, records } = session(() => ({ decision: 'sanitize' }));
    const answer = await postRecord(s);
    const body = bodyOf(answer?.request_body);
    expect(body).toBe('{"patient":{"ssn":"[REDACTED:ssn]","email":"[REDACTED:email]"},"reason":"checkup"}');
    expect(headerValue(answer?.request_body, 'content-length')).toBe(String(Buffer.byteLength(body ?? '')));
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({ context: { transport: 'ext-proc' }, tool: 'ehr', decision: { decision: 'sanitize', redacted: ['patient.email:email', 'patient.ssn:ssn'] } });
  });

  it.each([
    ['allow', { decision: 'allow' as const }],
    ['deny (ext_authz, first in the chain, denies)', { decision: 'deny' as const }],
    ['approval_needed', { decision: 'approval_needed' as const }],
    ['sanitize in shadow mode', { decision: 'sanitize' as const, enforced: false }],
  ])('passes the request of a %s decision unchanged', async (_name, decision) => {
    const { session: s } = session(() => decision);
    expect(await postRecord(s)).toEqual({ request_body: { response: {} } });
  });

  it('rewrites the query of a sanitize call with no body', async () => {
    const { session: s } = session(() => ({ decision: 'sanitize' }));
    const answer = await s.handle(requestHeaders('GET', '/v1/search?email=dana%40example.com', {}, true));
    expect(headerValue(answer?.request_headers, ':path')).toBe('/v1/search?email=%5BREDACTED%3Aemail%5D');
  });

  it('rewrites the arguments of an MCP tools/call, keeping the JSON-RPC message around them', async () => {
    const { session: s } = session(() => ({ decision: 'sanitize' }));
    const message = '{"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "read_record", "arguments": {"ssn": "123-45-6789"}}}';
    await s.handle(requestHeaders('POST', '/mcp', { 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'content-length': String(message.length) }, false));
    const answer = await s.handle(requestBody(message));
    expect(JSON.parse(bodyOf(answer?.request_body) ?? '')).toEqual({ jsonrpc: '2.0', id: 4, method: 'tools/call', params: { name: 'read_record', arguments: { ssn: '[REDACTED:ssn]' } } });
  });

  it('refuses a body that arrives in parts, since it cannot be judged whole, and records the refusal', async () => {
    const { session: s, records } = session(() => ({ decision: 'allow' }));
    await s.handle(requestHeaders('POST', '/v1/records', { 'content-type': 'application/json' }, false));
    const answer = await s.handle(requestBody('{"patient": ', false));
    expect(answer?.immediate_response?.status.code).toBe(403);
    expect(JSON.parse(text(answer?.immediate_response?.body))).toMatchObject({ decision: 'deny', rule: SIDECAR_RULES.uninspectable, decisionId: 'id-1' });
    expect(records.map((r) => r.decision.rule)).toEqual([SIDECAR_RULES.uninspectable]);
  });

  it('refuses a request with a body when the filter does not buffer request bodies', async () => {
    const { session: s } = session(() => ({ decision: 'allow' }));
    const answer = await s.handle(requestHeaders('POST', '/v1/records', { 'content-type': 'application/json' }, false, BODY_MODE.STREAMED));
    expect(answer?.immediate_response?.status.code).toBe(403);
    expect(text(answer?.immediate_response?.body)).toContain('request_body_mode BUFFERED');
  });

  it('removes accept-encoding when the answer is to be redacted, so it comes back readable', async () => {
    const { session: s } = session(() => ({ decision: 'allow', redactResponse: ['ssn'] }));
    const answer = await postRecord(s, { 'accept-encoding': 'gzip' });
    expect(answer?.request_body?.response.header_mutation?.remove_headers).toEqual(['accept-encoding']);
  });

  it('removes an agent token from an egress call it lets through, and leaves a tool call\'s in place', async () => {
    const { session: egress } = session(() => ({ decision: 'allow' }));
    const egressAnswer = await egress.handle(requestHeaders('GET', '/api/chat', { ':authority': 'a.slack.com', 'x-portcullis-agent-token': 'forwarded' }, true));
    expect(egressAnswer?.request_headers?.response.header_mutation?.remove_headers).toEqual(['x-portcullis-agent-token']);
    const { session: tool } = session(() => ({ decision: 'allow' }));
    const toolAnswer = await tool.handle(requestHeaders('GET', '/v1/search', { 'x-portcullis-agent-token': 'forwarded' }, true));
    expect(toolAnswer).toEqual({ request_headers: { response: {} } });
  });

  it('closes a stream whose messages come out of order', async () => {
    const { session: s } = session(() => ({ decision: 'allow' }));
    await expect(s.handle(responseHeaders({}))).rejects.toThrow(ExtProcProtocolError);
  });
});

describe('ExtProcSession after ext_authz', () => {
  const recordCall = { tool: 'ehr', action: 'read_record', params: JSON.parse(RECORD) as Record<string, unknown> };

  it('applies the decision ext_authz just made to the same request instead of deciding it again', async () => {
    const recent = new RecentDecisions();
    const { session: s, records, authorizer } = session(() => ({ decision: 'sanitize' }), { recent });
    const byExtAuthz = await authorizer.authorize(recordCall, { transport: 'grpc', verified: { delegation: ['planner'] } });
    const answer = await postRecord(s, { 'x-portcullis-decision-id': byExtAuthz.decisionId });
    expect(bodyOf(answer?.request_body)).toContain('[REDACTED:ssn]');
    expect(records).toHaveLength(1);
    await s.handle(responseHeaders({}, true));
    expect(records).toHaveLength(1);
  });

  it('refuses a request whose ext_authz decision names another call, is unknown, or was already used', async () => {
    const recent = new RecentDecisions();
    const first = session(() => ({ decision: 'allow' }), { recent });
    const other = await first.authorizer.authorize({ ...recordCall, params: { patient: 'p-2' } }, { transport: 'grpc' });
    const answer = await postRecord(first.session, { 'x-portcullis-decision-id': other.decisionId });
    expect(answer?.immediate_response?.status.code).toBe(403);
    expect(first.records.map((r) => [r.context.transport, r.decision.rule])).toEqual([['grpc', 'read'], ['ext-proc', SIDECAR_RULES.uninspectable]]);
    for (const id of [other.decisionId, 'no-such-id']) {
      const { session: again } = session(() => ({ decision: 'allow' }), { recent });
      expect((await postRecord(again, { 'x-portcullis-decision-id': id }))?.immediate_response?.status.code).toBe(403);
    }
  });

  it('decides itself a request that names no ext_authz decision (ext_proc alone)', async () => {
    const { session: s, records } = session(() => ({ decision: 'allow' }), { recent: new RecentDecisions() });
    expect(await postRecord(s)).toEqual({ request_body: { response: {} } });
    expect(records.map((r) => r.context.transport)).toEqual(['ext-proc']);
  });

  it('keeps only decisions that let the request through, for a few seconds, and at most its limit', async () => {
    let now = 0;
    const recent = new RecentDecisions({ limit: 2, ttlMs: 1000, now: () => now });
    const { authorizer } = session((call) => ({ decision: call.params?.deny === true ? 'deny' : 'allow' }), { recent });
    const denied = await authorizer.authorize({ ...recordCall, params: { deny: true } }, { transport: 'grpc' });
    expect(recent.take(denied.decisionId, { ...recordCall, params: { deny: true } })).toBeUndefined();
    const decided = [];
    for (let i = 0; i < 3; i++) decided.push(await authorizer.authorize({ ...recordCall, params: { i } }, { transport: 'grpc' }));
    expect(recent.take(decided[0]?.decisionId, { ...recordCall, params: { i: 0 } })).toBeUndefined();
    expect(recent.take(decided[2]?.decisionId, { ...recordCall, params: { i: 2 } })?.decision.decisionId).toBe(decided[2]?.decisionId);
    now = 1001;
    expect(recent.take(decided[1]?.decisionId, { ...recordCall, params: { i: 1 } })).toBeUndefined();
  });
});

describe('ExtProcSession: the answer', () => {
  it('asks for no answer body when the decision names no detectors, and passes one sent anyway', async () => {
    const { session: s, records } = session(() => ({ decision: 'allow' }));
    await postRecord(s);
    expect(await s.handle(responseHeaders({ 'content-type': 'application/json' }))).toEqual({ response_headers: { response: {} }, mode_override: { response_body_mode: BODY_MODE.NONE } });
    expect(await s.handle(responseBody(RECORD, true))).toEqual({ response_body: { response: {} } });
    expect(records).toHaveLength(1);
  });

  it('redacts a JSON answer whole (BUFFERED), sets its content-length, and records the paths and detectors, never the values', async () => {
    const { session: s, records } = session(() => ({ decision: 'allow', redactResponse: ['ssn', 'email'] }));
    await postRecord(s);
    expect(await s.handle(responseHeaders({ 'content-type': 'application/json', 'content-length': String(RECORD.length) }))).toEqual({
      response_headers: { response: { header_mutation: { remove_headers: ['content-length'] } } },
      mode_override: { response_body_mode: BODY_MODE.BUFFERED },
    });
    const answer = await s.handle(responseBody(RECORD, true));
    const body = bodyOf(answer?.response_body);
    expect(body).toBe('{"patient": {"ssn": "[REDACTED:ssn]", "email": "[REDACTED:email]"}, "reason": "checkup"}');
    expect(headerValue(answer?.response_body, 'content-length')).toBe(String(Buffer.byteLength(body ?? '')));
    expect(records).toHaveLength(2);
    expect(records[1]).toMatchObject({ decision: { decisionId: 'id-1' }, tool: 'ehr', response: { redacted: ['patient.email:email', 'patient.ssn:ssn'], outcome: 'complete' } });
    expect(JSON.stringify(records[1]?.response)).not.toMatch(/6789|dana@/);
  });

  it('redacts an event stream event by event (STREAMED), an SSN split across two chunks included', async () => {
    const { session: s, records } = session(() => ({ decision: 'allow', redactResponse: ['pii'] }));
    await postRecord(s);
    const headers = await s.handle(responseHeaders({ 'content-type': 'text/event-stream' }));
    expect(headers?.mode_override).toEqual({ response_body_mode: BODY_MODE.STREAMED });
    const chunks = ['event: message\ndata: {"text": "ssn 123-45-', '6789 on file"}\n\n', 'data: {"text": "write to dana@exa', 'mple.com"}\n\n', ''];
    const passed: (string | undefined)[] = [];
    for (const [i, chunk] of chunks.entries()) passed.push(bodyOf((await s.handle(responseBody(chunk, i === chunks.length - 1)))?.response_body));
    // An event passes once it is whole: nothing of the first passes with the first chunk.
    expect(passed[0]).toBe('');
    expect(passed.join('')).toBe('event: message\ndata: {"text": "ssn [REDACTED:ssn] on file"}\n\ndata: {"text": "write to [REDACTED:email]"}\n\n');
    expect(records[1]?.response).toEqual({ redacted: ['text:email', 'text:ssn'], outcome: 'complete' });
  });

  it('ends an answer over the inspection limit with 502 and records the failure', async () => {
    const { session: s, records } = session(() => ({ decision: 'allow', redactResponse: ['ssn'] }), { responseLimit: 64 });
    await postRecord(s);
    await s.handle(responseHeaders({ 'content-type': 'application/json' }));
    const answer = await s.handle(responseBody(JSON.stringify({ pad: 'x'.repeat(100) }), true));
    expect(answer?.immediate_response?.status.code).toBe(502);
    expect(JSON.parse(text(answer?.immediate_response?.body))).toMatchObject({ decisionId: 'id-1' });
    expect(records[1]?.response).toMatchObject({ outcome: 'failed', reason: 'the answer is over the inspection limit of 64 bytes' });
  });

  it('ends a compressed answer with 502 at its headers', async () => {
    const { session: s, records } = session(() => ({ decision: 'sanitize', redactResponse: ['ssn'] }));
    await postRecord(s);
    const answer = await s.handle(responseHeaders({ 'content-type': 'application/json', 'content-encoding': 'gzip' }));
    expect(answer?.immediate_response?.status.code).toBe(502);
    expect(records[1]?.response?.outcome).toBe('failed');
  });

  it('records an answer whose stream ended before its last chunk as interrupted', async () => {
    const { session: s, records } = session(() => ({ decision: 'allow', redactResponse: ['ssn'] }));
    await postRecord(s);
    await s.handle(responseHeaders({ 'content-type': 'text/event-stream' }));
    await s.handle(responseBody('data: {"t": "ssn 123-45-6789!"}\n\n', false));
    s.end();
    expect(records[1]?.response).toMatchObject({ redacted: ['t:ssn'], outcome: 'interrupted' });
  });
});
