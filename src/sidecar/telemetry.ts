// OpenTelemetry: a span per decision, with the decision's fields under
// portcullis.*, continuing the trace of the call it judged (W3C traceparent).
// The SDK is configured by the standard OTEL_* variables and exports OTLP over
// HTTP; without OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT or OTEL_TRACES_EXPORTER
// nothing is started.
import type { Attributes, DiagLogger, Tracer } from '@opentelemetry/api';
import { defaultTextMapGetter, diag, DiagLogLevel, ROOT_CONTEXT, SpanKind, SpanStatusCode } from '@opentelemetry/api';
import { addHrTimes, millisToHrTime, W3CTraceContextPropagator } from '@opentelemetry/core';
import { OTLPTraceExporter as OtlpJsonTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { OTLPTraceExporter as OtlpProtobufTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { detectResources, resourceAttributesEnvDetector, resourceFromAttributes, serviceNameEnvDetector } from '@opentelemetry/resources';
import type { BatchSpanProcessorOptions, Sampler, SpanExporter } from '@opentelemetry/sdk-trace';
import { AlwaysOffSampler, AlwaysOnSampler, BatchSpanProcessor, ParentBasedSampler, TraceIdRatioBasedSampler, TracerProvider } from '@opentelemetry/sdk-trace';
import type { Logger } from 'pino';
import type { DecisionObserver, DecisionRecord } from './authorizer.ts';
import { SIDECAR_RULES } from './authorizer.ts';

export const SPAN_NAME = 'portcullis.authorize';
export const TRACER_NAME = 'portcullis-sidecar';
const DEFAULT_SERVICE_NAME = 'portcullis-sidecar';

const propagator = new W3CTraceContextPropagator();

/** The decision's fields as span attributes (the same fields as the audit entry and the metrics). */
export function decisionAttributes(record: DecisionRecord): Attributes {
  const { decision, call } = record;
  const attributes: Attributes = {
    'portcullis.tenant': record.tenant,
    'portcullis.tool': record.tool,
    'portcullis.decision': decision.decision,
    'portcullis.enforced': decision.enforced,
    'portcullis.rule': decision.rule,
    'portcullis.revision': decision.revision,
    'portcullis.decision_id': decision.decisionId,
    'portcullis.transport': record.context.transport,
  };
  if (typeof call.agent === 'string') attributes['portcullis.agent'] = call.agent;
  if (typeof call.namespace === 'string') attributes['portcullis.namespace'] = call.namespace;
  if (typeof call.action === 'string') attributes['portcullis.action'] = call.action;
  if (decision.policy !== null) attributes['portcullis.policy'] = decision.policy;
  return attributes;
}

/**
 * An observer that records each decision as a span: from when it started for
 * as long as it took, the child of the caller's span when the call carried a
 * valid traceparent. The later record of the decision's answer makes none. Tracing never decides a call: a failure here is reported
 * to OpenTelemetry's diagnostics and the decision stands.
 */
export function createTracingObserver(tracer: Tracer): DecisionObserver {
  return (record) => {
    // The record of a decision's answer (ext_proc): the decision's span was made when it was decided.
    if (record.response !== undefined) return;
    try {
      const { traceparent } = record.context;
      const parent = traceparent === undefined ? ROOT_CONTEXT : propagator.extract(ROOT_CONTEXT, { traceparent }, defaultTextMapGetter);
      // In [seconds, nanoseconds]: epoch milliseconds as a float would round a latency of microseconds away.
      const startTime = millisToHrTime(record.startedAt.getTime());
      const whole = Math.floor(record.latencySeconds);
      const endTime = addHrTimes(startTime, [whole, Math.round((record.latencySeconds - whole) * 1e9)]);
      const span = tracer.startSpan(SPAN_NAME, { kind: SpanKind.SERVER, startTime, attributes: decisionAttributes(record) }, parent);
      if (record.decision.rule === SIDECAR_RULES.evaluationError) span.setStatus({ code: SpanStatusCode.ERROR, message: record.decision.reasons.join('; ') });
      span.end(endTime);
    } catch (error) {
      diag.error('portcullis: the span of a decision could not be recorded', error);
    }
  };
}

/** An OTEL_* variable that cannot be used: the message names it and what it accepts. */
export class TelemetryConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TelemetryConfigError';
  }
}

export type OtlpProtocol = 'http/protobuf' | 'http/json';

export interface TracingConfig {
  protocol: OtlpProtocol;
  sampler: Sampler;
  batch: Omit<BatchSpanProcessorOptions, 'exporter'>;
}

type Env = Readonly<Record<string, string | undefined>>;

function envValue(env: Env, name: string): string | undefined {
  const value = env[name]?.trim();
  return value === undefined || value === '' ? undefined : value;
}

function ratio(env: Env): number {
  const raw = envValue(env, 'OTEL_TRACES_SAMPLER_ARG');
  if (raw === undefined) return 1;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < 0 || value > 1) throw new TelemetryConfigError(`OTEL_TRACES_SAMPLER_ARG: ${JSON.stringify(raw)} is not a ratio between 0 and 1`);
  return value;
}

/** The sampler the specification's OTEL_TRACES_SAMPLER names (default parentbased_always_on). */
function samplerOf(env: Env): Sampler {
  const name = envValue(env, 'OTEL_TRACES_SAMPLER') ?? 'parentbased_always_on';
  const samplers: Readonly<Record<string, () => Sampler>> = {
    always_on: () => new AlwaysOnSampler(),
    always_off: () => new AlwaysOffSampler(),
    traceidratio: () => new TraceIdRatioBasedSampler(ratio(env)),
    parentbased_always_on: () => new ParentBasedSampler({ root: new AlwaysOnSampler() }),
    parentbased_always_off: () => new ParentBasedSampler({ root: new AlwaysOffSampler() }),
    parentbased_traceidratio: () => new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(ratio(env)) }),
  };
  const make = Object.hasOwn(samplers, name) ? samplers[name] : undefined;
  if (make === undefined) throw new TelemetryConfigError(`OTEL_TRACES_SAMPLER: ${JSON.stringify(name)} is not one of ${Object.keys(samplers).join(', ')}`);
  return make();
}

const BATCH_VARIABLES = {
  OTEL_BSP_SCHEDULE_DELAY: 'scheduledDelayMillis',
  OTEL_BSP_EXPORT_TIMEOUT: 'exportTimeoutMillis',
  OTEL_BSP_MAX_QUEUE_SIZE: 'maxQueueSize',
  OTEL_BSP_MAX_EXPORT_BATCH_SIZE: 'maxExportBatchSize',
} as const;

function batchOf(env: Env): TracingConfig['batch'] {
  const batch: Record<string, number> = {};
  for (const [name, option] of Object.entries(BATCH_VARIABLES)) {
    const raw = envValue(env, name);
    if (raw === undefined) continue;
    const value = Number(raw);
    if (!Number.isSafeInteger(value) || value < 0) throw new TelemetryConfigError(`${name}: ${JSON.stringify(raw)} is not a whole number`);
    batch[option] = value;
  }
  return batch;
}

function protocolOf(env: Env): OtlpProtocol {
  const protocol = envValue(env, 'OTEL_EXPORTER_OTLP_TRACES_PROTOCOL') ?? envValue(env, 'OTEL_EXPORTER_OTLP_PROTOCOL') ?? 'http/protobuf';
  if (protocol === 'http/protobuf' || protocol === 'http/json') return protocol;
  throw new TelemetryConfigError(`OTEL_EXPORTER_OTLP_PROTOCOL: ${JSON.stringify(protocol)} is not supported; use http/protobuf or http/json (a collector's OTLP/HTTP port, 4318)`);
}

/**
 * The tracing configuration of the OTEL_* variables, or undefined when tracing
 * is off: OTEL_SDK_DISABLED=true, OTEL_TRACES_EXPORTER=none, or neither
 * OTEL_TRACES_EXPORTER=otlp nor an OTLP endpoint set.
 */
export function tracingConfig(env: Env): TracingConfig | undefined {
  if (envValue(env, 'OTEL_SDK_DISABLED')?.toLowerCase() === 'true') return undefined;
  const exporters = (envValue(env, 'OTEL_TRACES_EXPORTER') ?? '').split(',').map((name) => name.trim()).filter((name) => name !== '');
  const unsupported = exporters.filter((name) => name !== 'otlp' && name !== 'none');
  if (unsupported.length > 0) throw new TelemetryConfigError(`OTEL_TRACES_EXPORTER: ${unsupported.map((name) => JSON.stringify(name)).join(', ')} not supported; the sidecar exports otlp, or none`);
  if (exporters.includes('none')) return undefined;
  const endpoint = envValue(env, 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT') ?? envValue(env, 'OTEL_EXPORTER_OTLP_ENDPOINT');
  if (!exporters.includes('otlp') && endpoint === undefined) return undefined;
  return { protocol: protocolOf(env), sampler: samplerOf(env), batch: batchOf(env) };
}

export interface Telemetry {
  /** The span observer, or none when tracing is off. */
  observers: DecisionObserver[];
  /** Exports what is batched and stops; resolves at once when tracing is off. */
  shutdown(): Promise<void>;
}

export interface TelemetryOptions {
  /** The variables that turn tracing on and pick protocol, sampler and batching (process.env by default). The OTLP exporter (endpoint, headers, timeout) and the resource (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES) read process.env themselves. */
  env?: Env;
  /** Where OpenTelemetry's own warnings and errors (an unreachable collector) go. */
  log?: Logger;
  /** Instead of the OTLP exporter the variables name (tests export in memory). */
  exporter?: SpanExporter;
}

function diagLoggerOf(log: Logger): DiagLogger {
  const ignore = (): void => undefined;
  return {
    error: (message, ...args) => { log.error({ otel: args }, message); },
    warn: (message, ...args) => { log.warn({ otel: args }, message); },
    info: ignore,
    debug: ignore,
    verbose: ignore,
  };
}

/**
 * Starts tracing when the OTEL_* variables ask for it. The service name is
 * portcullis-sidecar unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES say
 * otherwise. Throws TelemetryConfigError for a variable it cannot use.
 */
export function startTelemetry(options: TelemetryOptions = {}): Telemetry {
  const env = options.env ?? process.env;
  const config = tracingConfig(env);
  if (config === undefined) return { observers: [], shutdown: () => Promise.resolve() };
  if (options.log !== undefined) diag.setLogger(diagLoggerOf(options.log), DiagLogLevel.WARN);
  const exporter = options.exporter ?? (config.protocol === 'http/json' ? new OtlpJsonTraceExporter() : new OtlpProtobufTraceExporter());
  const provider = new TracerProvider({
    resource: resourceFromAttributes({ 'service.name': DEFAULT_SERVICE_NAME }).merge(detectResources({ detectors: [resourceAttributesEnvDetector, serviceNameEnvDetector] })),
    sampler: config.sampler,
    spanProcessors: [new BatchSpanProcessor({ exporter, ...config.batch })],
  });
  return {
    observers: [createTracingObserver(provider.getTracer(TRACER_NAME))],
    shutdown: () => provider.shutdown(),
  };
}
