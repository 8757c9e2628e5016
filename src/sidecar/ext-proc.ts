// Envoy's ext_proc v3 (envoy.service.ext_proc.v3.ExternalProcessor/Process):
// the part of the sidecar that changes what passes, where ext_authz can only
// let it pass or not. One Process stream is one HTTP request and its answer:
//
//   request_headers → request_body (BUFFERED)  the call is decided through the
//       Authorizer with the same mapping as ext_authz (envoy-check.ts); a
//       sanitize decision rewrites the body (and query) to the redacted params
//   response_headers → response_body...         when the decision names
//       redactResponse detectors, the answer is redacted: JSON and text whole
//       (BUFFERED), text/event-stream and NDJSON event by event (STREAMED)
//
// Other decisions pass the request unchanged: ext_authz, before ext_proc in
// the filter chain, is what denies. A request ext_authz has just decided in
// this sidecar (its x-portcullis-decision-id, same call) gets that decision
// again rather than a second one: one record, counters counted once, and the
// same verified facts (a forwarded token is verified once: it cannot be
// replayed). Whatever cannot be redacted as the policy asks, or decided as
// ext_authz decided it, is refused (an immediate response), never passed
// unredacted.
// ExtProcSession is the protocol without the transport; addExternalProcessor
// serves it on the sidecar's gRPC server.
import type { Server, ServerDuplexStream, UntypedServiceImplementation } from '@grpc/grpc-js';
import { status } from '@grpc/grpc-js';
import { isDeepStrictEqual } from 'node:util';
import type { Logger } from 'pino';
import { InputError } from '../compiler/index.ts';
import type { CallContext, DecisionRecord, SidecarDecision } from './authorizer.ts';
import { AGENT_TOKEN_HEADER } from './agent-tokens.ts';
import { USER_TOKEN_HEADER } from './user-tokens.ts';
import { SIDECAR_RULES } from './authorizer.ts';
import type { ProxiedRequest, ProxyOptions, RequestMapping } from './envoy-check.ts';
import { DECISION_ID_HEADER, mapRequest } from './envoy-check.ts';
import { envoyService } from './envoy-protos.ts';
import type { Redacted, ResponseKind } from './ext-proc-redaction.ts';
import { EventStreamRedactor, piiKindsOf, RedactionError, redactJson, redactText, responseKindOf } from './ext-proc-redaction.ts';
import type { HeaderValue } from './ext-proc-request.ts';
import { headerMapOf, proxiedRequestOf, sanitizedRequest } from './ext-proc-request.ts';

/** ProcessingMode.BodySendMode. */
export const BODY_MODE = { NONE: 0, STREAMED: 1, BUFFERED: 2, BUFFERED_PARTIAL: 3, FULL_DUPLEX_STREAMED: 4 } as const;

interface HttpHeaders {
  headers?: { headers?: HeaderValue[] };
  end_of_stream?: boolean;
}

interface HttpBody {
  body?: Uint8Array;
  end_of_stream?: boolean;
}

/** ProcessingRequest as @grpc/proto-loader decodes it (keepCase, enums as numbers). */
export interface ProcessingRequest {
  request_headers?: HttpHeaders;
  response_headers?: HttpHeaders;
  request_body?: HttpBody;
  response_body?: HttpBody;
  request_trailers?: object;
  response_trailers?: object;
  observability_mode?: boolean;
  protocol_config?: { request_body_mode?: number; response_body_mode?: number };
}

interface HeaderMutation {
  set_headers?: { header: { key: string; raw_value: Uint8Array }; append_action: number }[];
  remove_headers?: string[];
}

interface CommonResponse {
  header_mutation?: HeaderMutation;
  body_mutation?: { body: Uint8Array } | { clear_body: true };
}

/** ProcessingResponse, the fields the sidecar sets, with Envoy's names. */
export interface ProcessingResponse {
  request_headers?: { response: CommonResponse };
  response_headers?: { response: CommonResponse };
  request_body?: { response: CommonResponse };
  response_body?: { response: CommonResponse };
  request_trailers?: object;
  response_trailers?: object;
  immediate_response?: { status: { code: number }; headers: HeaderMutation; body: Uint8Array; details: string };
  mode_override?: { response_body_mode: number };
}

/** A stream that breaks the protocol (a message out of order): it is closed with an error, which Envoy answers with 500. */
export class ExtProcProtocolError extends Error {
  override readonly name = 'ExtProcProtocolError';
}

export interface ExtProcOptions extends ProxyOptions {
  /** Largest answer redacted whole (JSON and text); a larger one is ended with 502. Default DEFAULT_RESPONSE_LIMIT. */
  responseLimit?: number;
  /** ext_authz's recent decisions, to apply rather than decide again. */
  recent?: RecentDecisions;
  now?: () => Date;
}

/** The parts of a call the request on the wire determines (the sidecar adds who is asking). */
const REQUEST_FIELDS = ['tool', 'action', 'params', 'egress'] as const;

/**
 * The decisions ext_authz made in this sidecar that let a request through
 * (allow, sanitize, or not enforced), kept a few seconds by decision id so
 * ext_proc, next in Envoy's filter chain, applies the same decision to the
 * same request. An entry is taken once, and only for the same call. A request
 * that names no decision (ext_proc without ext_authz) is decided by ext_proc;
 * one whose decision is gone (expired, evicted, another call) is refused.
 */
export class RecentDecisions {
  private readonly entries = new Map<string, { record: DecisionRecord; at: number }>();
  private readonly limit: number;
  private readonly ttlMs: number;
  private readonly now: () => number;

  constructor(options: { limit?: number; ttlMs?: number; now?: () => number } = {}) {
    this.limit = options.limit ?? 1024;
    this.ttlMs = options.ttlMs ?? 10_000;
    this.now = options.now ?? Date.now;
  }

  /** A DecisionObserver: keeps ext_authz's decisions that let the request through. */
  readonly observe = (record: DecisionRecord): void => {
    const { transport } = record.context;
    const { decision } = record;
    if ((transport !== 'grpc' && transport !== 'envoy-http') || record.response !== undefined) return;
    if (decision.enforced && decision.decision !== 'allow' && decision.decision !== 'sanitize') return;
    this.entries.set(decision.decisionId, { record, at: this.now() });
    for (const id of this.entries.keys()) {
      if (this.entries.size <= this.limit) break;
      this.entries.delete(id);
    }
  };

  /** The record of decision `id` if it is recent and of this very call, removed so it serves once. */
  take(id: string | undefined, call: Record<string, unknown>): DecisionRecord | undefined {
    if (id === undefined) return undefined;
    const entry = this.entries.get(id);
    if (entry === undefined) return undefined;
    this.entries.delete(id);
    if (this.now() - entry.at > this.ttlMs) return undefined;
    return REQUEST_FIELDS.every((field) => isDeepStrictEqual(entry.record.call[field], call[field])) ? entry.record : undefined;
  }
}

export const DEFAULT_RESPONSE_LIMIT = 1024 * 1024;
const OVERWRITE_IF_EXISTS_OR_ADD = 2;
const FORBIDDEN = 403;
const BAD_GATEWAY = 502;

function setHeader(key: string, value: string): NonNullable<HeaderMutation['set_headers']>[number] {
  return { header: { key, raw_value: Buffer.from(value, 'utf8') }, append_action: OVERWRITE_IF_EXISTS_OR_ADD };
}

function immediate(code: number, body: unknown, details: string, decisionId?: string): ProcessingResponse {
  const set_headers = [setHeader('content-type', 'application/json')];
  if (decisionId !== undefined) set_headers.push(setHeader(DECISION_ID_HEADER, decisionId));
  return { immediate_response: { status: { code }, headers: { set_headers }, body: Buffer.from(JSON.stringify(body), 'utf8'), details } };
}

/** The answer for a request the sidecar will not let pass because it cannot apply the decision to it. */
function refusal(decision: Pick<SidecarDecision, 'decision' | 'rule' | 'reasons' | 'decisionId'>, details: string): ProcessingResponse {
  return immediate(FORBIDDEN, { decision: decision.decision, rule: decision.rule, reasons: decision.reasons, decisionId: decision.decisionId }, details, decision.decisionId);
}

const byteLength = (text: string): number => Buffer.byteLength(text, 'utf8');

/** Headers the upstream request loses: an agent token goes to no one but a tool, a user token to no one. */
function tokenRemovals(call: Record<string, unknown>, headers: ReadonlyMap<string, string>): string[] {
  return [...(headers.has(USER_TOKEN_HEADER) ? [USER_TOKEN_HEADER] : []), ...(typeof call.tool === 'string' ? [] : [AGENT_TOKEN_HEADER])];
}

/** What the answer of a decided call needs: nothing, or redaction with these detectors. */
interface AnswerPlan {
  kinds: ReturnType<typeof piiKindsOf>;
  startedAt: Date;
  kind?: Exclude<ResponseKind['kind'], 'uninspectable'>;
  chunks: Uint8Array[];
  bytes: number;
  messages: number;
  stream?: EventStreamRedactor;
}

interface Decided {
  decision: SidecarDecision;
  call: Record<string, unknown>;
  context: CallContext;
}

/** pass: the answer goes through untouched; done: the stream was answered (an immediate response, or the whole answer). */
type Phase = 'request-headers' | 'request-body' | 'response-headers' | 'response-body' | 'pass' | 'done';

/** One Process stream: feed it each ProcessingRequest in order, send what it answers. */
export class ExtProcSession {
  private readonly options: ExtProcOptions;
  private readonly now: () => Date;
  private phase: Phase = 'request-headers';
  private requestHeaders = new Map<string, string>();
  private decided: Decided | undefined;
  private answer: AnswerPlan | undefined;

  constructor(options: ExtProcOptions) {
    this.options = options;
    this.now = options.now ?? ((): Date => new Date());
  }

  /** The response to one message; undefined in observability mode, where Envoy expects none. */
  async handle(message: ProcessingRequest): Promise<ProcessingResponse | undefined> {
    // Nothing the sidecar answers in observability mode takes effect: it cannot redact there.
    if (message.observability_mode === true) return undefined;
    if (message.request_headers !== undefined) return this.onRequestHeaders(message.request_headers, message.protocol_config);
    if (message.request_body !== undefined) return this.phase === 'done' ? { request_body: { response: {} } } : this.onRequestBody(message.request_body);
    if (message.response_headers !== undefined) return this.onResponseHeaders(message.response_headers);
    if (message.response_body !== undefined) return this.phase === 'pass' || this.phase === 'done' ? { response_body: { response: {} } } : this.onResponseBody(message.response_body);
    if (message.request_trailers !== undefined) return { request_trailers: {} };
    if (message.response_trailers !== undefined) return { response_trailers: {} };
    throw new ExtProcProtocolError('the ProcessingRequest carries no request');
  }

  /** The stream ended: an answer still being redacted is recorded as interrupted. */
  end(): void {
    if (this.answer !== undefined) this.finishAnswer({ redacted: this.answer.stream?.redacted ?? [], outcome: 'interrupted', reason: 'the stream ended before the whole answer was seen' });
    this.phase = 'done';
  }

  private expect(phase: Phase, what: string): void {
    if (this.phase !== phase) throw new ExtProcProtocolError(`${what} arrived while ${this.phase.replace('-', ' ')} were expected`);
  }

  private async onRequestHeaders(message: HttpHeaders, config: ProcessingRequest['protocol_config']): Promise<ProcessingResponse> {
    this.expect('request-headers', 'request headers');
    const headers = headerMapOf(message.headers?.headers ?? []);
    const context: CallContext = { transport: 'ext-proc' };
    if ('refuse' in headers) return this.refuseRequest(headers.refuse, context);
    this.requestHeaders = headers;
    if (message.end_of_stream === true) return this.decideRequest(new Uint8Array(), 'request_headers');
    const mode = config?.request_body_mode;
    if (config !== undefined && mode !== BODY_MODE.BUFFERED && mode !== BODY_MODE.BUFFERED_PARTIAL) {
      return this.refuseRequest(`ext_proc must receive request bodies whole (request_body_mode BUFFERED), not in mode ${String(mode ?? BODY_MODE.NONE)}`, context);
    }
    this.phase = 'request-body';
    return { request_headers: { response: {} } };
  }

  private async onRequestBody(message: HttpBody): Promise<ProcessingResponse> {
    this.expect('request-body', 'a request body');
    if (message.end_of_stream !== true) {
      return this.refuseRequest('the request body reached ext_proc in parts (over the buffer limit, or not BUFFERED): it cannot be judged whole', { transport: 'ext-proc' });
    }
    return this.decideRequest(message.body ?? new Uint8Array(), 'request_body');
  }

  /** A request the sidecar cannot apply a decision to: denied, recorded, and answered at once. */
  private refuseRequest(reason: string, context: CallContext): ProcessingResponse {
    this.phase = 'done';
    return refusal(this.options.authorizer.refuse(reason, context), 'portcullis: request not inspectable by ext_proc');
  }

  private async decision(request: ProxiedRequest, mapping: RequestMapping, context: CallContext): Promise<SidecarDecision> {
    const { authorizer } = this.options;
    if (mapping.result.kind === 'refuse') return authorizer.refuse(mapping.result.reason, context);
    if (this.options.verify !== undefined) {
      let verdict: Awaited<ReturnType<NonNullable<ProxyOptions['verify']>>>;
      try {
        verdict = await this.options.verify(request.headers);
      } catch (error) {
        verdict = { refuse: `the forwarded tokens could not be verified: ${error instanceof Error ? error.message : String(error)}` };
      }
      if ('refuse' in verdict) return authorizer.refuse(verdict.refuse, context, SIDECAR_RULES.untrustedToken);
      context.verified = verdict;
    }
    try {
      return await authorizer.authorize(mapping.result.call, context);
    } catch (error) {
      if (error instanceof InputError) return authorizer.refuse(error.message, context);
      throw error;
    }
  }

  private async decideRequest(body: Uint8Array, phase: 'request_headers' | 'request_body'): Promise<ProcessingResponse> {
    const request = proxiedRequestOf(this.requestHeaders, body);
    const mapping = mapRequest(request, this.options.tools(), this.options.inspectionLimit);
    const call = mapping.result.kind === 'call' ? mapping.result.call : {};
    let context: CallContext = { transport: 'ext-proc', ...(mapping.traceparent === undefined ? {} : { traceparent: mapping.traceparent }) };
    const decisionId = this.requestHeaders.get(DECISION_ID_HEADER);
    let decision: SidecarDecision;
    if (decisionId !== undefined && this.options.recent !== undefined) {
      // ext_authz let this request through: apply its decision, or none at all.
      const reused = this.options.recent.take(decisionId, call);
      if (reused === undefined) return this.refuseRequest(`the decision ${decisionId} ext_authz made for this request is not known here (expired, or made for another call): it cannot be applied`, context);
      context = { ...reused.context, transport: 'ext-proc' };
      decision = reused.decision;
    } else {
      decision = await this.decision(request, mapping, context);
    }
    this.decided = { decision, call, context };
    const change = this.requestChange(decision, request, call, mapping);
    if ('refused' in change) {
      this.phase = 'done';
      return change.refused;
    }
    const common = change.change;
    this.phase = 'response-headers';
    return phase === 'request_headers' ? { request_headers: { response: common } } : { request_body: { response: common } };
  }

  /** What the decision changes in the request: the sanitized params, and no compression when the answer is to be redacted. */
  private requestChange(decision: SidecarDecision, request: ProxiedRequest, call: Record<string, unknown>, mapping: RequestMapping): { change: CommonResponse } | { refused: ProcessingResponse } {
    const mutation: HeaderMutation = {};
    const common: CommonResponse = {};
    if (decision.enforced && decision.decision === 'sanitize' && (decision.redacted ?? []).length > 0) {
      const rewrite = sanitizedRequest(request, call.params, decision.params, mapping.mcp !== undefined);
      if ('refuse' in rewrite) {
        return { refused: refusal({ ...decision, decision: 'deny', reasons: [...decision.reasons, `sanitize cannot be applied: ${rewrite.refuse}`] }, 'portcullis: sanitize not applicable') };
      }
      if (rewrite.path !== undefined) (mutation.set_headers ??= []).push(setHeader(':path', rewrite.path));
      if (rewrite.body !== undefined) {
        common.body_mutation = { body: Buffer.from(rewrite.body, 'utf8') };
        // In BUFFERED mode Envoy keeps content-length and refuses a body of another length.
        if (this.requestHeaders.has('content-length')) (mutation.set_headers ??= []).push(setHeader('content-length', String(byteLength(rewrite.body))));
      }
    }
    const removals = tokenRemovals(call, this.requestHeaders);
    const kinds = decision.enforced && (decision.decision === 'allow' || decision.decision === 'sanitize') ? piiKindsOf(decision.redactResponse ?? []) : [];
    if (kinds.length > 0) {
      this.answer = { kinds, startedAt: this.now(), chunks: [], bytes: 0, messages: 0 };
      // The answer must come back readable: no compression.
      removals.push('accept-encoding');
    }
    if (removals.length > 0) mutation.remove_headers = removals;
    if (mutation.set_headers !== undefined || mutation.remove_headers !== undefined) common.header_mutation = mutation;
    return { change: common };
  }

  private onResponseHeaders(message: HttpHeaders): ProcessingResponse {
    // A request body announced but never sent means the request went upstream undecided.
    this.expect('response-headers', 'response headers');
    const plan = this.answer;
    if (plan === undefined) {
      this.phase = 'pass';
      return { response_headers: { response: {} }, mode_override: { response_body_mode: BODY_MODE.NONE } };
    }
    if (message.end_of_stream === true) {
      this.finishAnswer({ redacted: [], outcome: 'complete' });
      return { response_headers: { response: {} } };
    }
    const headers = headerMapOf(message.headers?.headers ?? []);
    const kind = 'refuse' in headers ? { kind: 'uninspectable' as const, reason: headers.refuse } : responseKindOf(headers.get('content-type'), headers.get('content-encoding'));
    if (kind.kind === 'uninspectable') return this.failAnswer(kind.reason);
    plan.kind = kind.kind;
    const streamed = kind.kind === 'event-stream' || kind.kind === 'ndjson';
    // An event stream holds back no more than a buffered answer may be.
    if (streamed) plan.stream = new EventStreamRedactor(plan.kinds, kind.kind === 'ndjson' ? 'ndjson' : 'sse', { maxPending: this.options.responseLimit ?? DEFAULT_RESPONSE_LIMIT });
    this.phase = 'response-body';
    return {
      // The redacted answer has another length; BUFFERED answers get theirs back with the body.
      response_headers: { response: { header_mutation: { remove_headers: ['content-length'] } } },
      mode_override: { response_body_mode: streamed ? BODY_MODE.STREAMED : BODY_MODE.BUFFERED },
    };
  }

  private onResponseBody(message: HttpBody): ProcessingResponse {
    this.expect('response-body', 'a response body');
    const plan = this.answer;
    if (plan?.kind === undefined) throw new ExtProcProtocolError('a response body arrived with no answer planned');
    const chunk = message.body ?? new Uint8Array();
    const end = message.end_of_stream === true;
    plan.messages++;
    if (plan.stream !== undefined) {
      let text: string;
      try {
        text = plan.stream.push(chunk, end);
      } catch (error) {
        if (error instanceof RedactionError) return this.failAnswer(error.message);
        throw error;
      }
      if (end) this.finishAnswer({ redacted: plan.stream.redacted, outcome: 'complete' });
      return { response_body: { response: { body_mutation: text === '' ? { clear_body: true } : { body: Buffer.from(text, 'utf8') } } } };
    }
    plan.bytes += chunk.length;
    const limit = this.options.responseLimit ?? DEFAULT_RESPONSE_LIMIT;
    if (plan.bytes > limit) return this.failAnswer(`the answer is over the inspection limit of ${limit} bytes`);
    plan.chunks.push(chunk);
    // Not BUFFERED after all (the mode override was not honoured): hold every chunk until the last.
    if (!end) return { response_body: { response: { body_mutation: { clear_body: true } } } };
    let text: string;
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(Buffer.concat(plan.chunks));
    } catch {
      return this.failAnswer('the answer is not UTF-8 text');
    }
    const redacted: Redacted = (plan.kind === 'json' ? redactJson(text, plan.kinds) : undefined) ?? redactText(text, plan.kinds);
    this.finishAnswer({ redacted: redacted.redacted, outcome: 'complete' });
    const response: CommonResponse = { body_mutation: { body: Buffer.from(redacted.text, 'utf8') } };
    if (plan.messages === 1) response.header_mutation = { set_headers: [setHeader('content-length', String(byteLength(redacted.text)))] };
    return { response_body: { response } };
  }

  /** An answer that cannot be redacted as asked: ended with 502 (Envoy resets a stream whose headers already went). */
  private failAnswer(reason: string): ProcessingResponse {
    const decisionId = this.decided?.decision.decisionId;
    this.finishAnswer({ redacted: this.answer?.stream?.redacted ?? [], outcome: 'failed', reason });
    this.phase = 'done';
    return immediate(BAD_GATEWAY, { error: 'the answer could not be redacted as the policy asks, so it was not passed on', reason, decisionId }, 'portcullis: answer not redactable', decisionId);
  }

  private finishAnswer(response: { redacted: string[]; outcome: 'complete' | 'failed' | 'interrupted'; reason?: string }): void {
    const plan = this.answer;
    const decided = this.decided;
    this.answer = undefined;
    this.phase = 'done';
    if (plan === undefined || decided === undefined) return;
    this.options.authorizer.recordResponse(decided.decision, decided.call, decided.context, response, plan.startedAt);
  }
}

/**
 * Adds envoy.service.ext_proc.v3.ExternalProcessor to the sidecar's gRPC
 * server, beside ext_authz, and watches the Authorizer's decisions so a
 * request ext_authz let through is not decided twice (RecentDecisions).
 * Messages of a stream are handled one at a time, in
 * order; a failure closes the stream with an error (Envoy, with
 * failure_mode_allow off, answers the client 500).
 */
export function addExternalProcessor(server: Server, options: ExtProcOptions & { log: Logger }): void {
  const recent = options.recent ?? new RecentDecisions();
  options.authorizer.observe(recent.observe);
  const implementation: UntypedServiceImplementation = {
    Process: (stream: ServerDuplexStream<ProcessingRequest, ProcessingResponse>): void => {
      const session = new ExtProcSession({ ...options, recent });
      let queue = Promise.resolve();
      let failed = false;
      const fail = (error: unknown): void => {
        if (failed) return;
        failed = true;
        session.end();
        const protocol = error instanceof ExtProcProtocolError;
        if (!protocol) options.log.error({ err: error }, 'ext_proc stream failed');
        stream.emit('error', { code: protocol ? status.FAILED_PRECONDITION : status.INTERNAL, details: protocol ? error.message : 'internal error' });
      };
      stream.on('data', (message: ProcessingRequest) => {
        queue = queue.then(async () => {
          if (failed) return;
          const response = await session.handle(message);
          if (response !== undefined) stream.write(response);
        }).catch(fail);
      });
      stream.on('end', () => {
        void queue.then(() => {
          if (failed) return;
          session.end();
          stream.end();
        });
      });
      stream.on('error', () => { session.end(); });
      stream.on('cancelled', () => { session.end(); });
    },
  };
  server.addService(envoyService('envoy/service/ext_proc/v3/external_processor.proto', 'envoy.service.ext_proc.v3.ExternalProcessor', 'Process'), implementation);
}
