import { SpanKind, SpanStatusCode } from '@opentelemetry/api';
import { ExportResultCode, hrTimeToMilliseconds, hrTimeToNanoseconds } from '@opentelemetry/core';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace';
import { AlwaysOffSampler, InMemorySpanExporter, ParentBasedSampler, SimpleSpanProcessor, TraceIdRatioBasedSampler, TracerProvider } from '@opentelemetry/sdk-trace';
import { describe, expect, it } from 'vitest';
import { decisionRecord } from '../audit/test-support.ts';
import { SIDECAR_RULES } from './authorizer.ts';
import { createTracingObserver, SPAN_NAME, startTelemetry, TelemetryConfigError, tracingConfig } from './telemetry.ts';

const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT_SPAN_ID = '00f067aa0ba902b7';

/** Keeps what it was given past shutdown (the SDK's in-memory exporter forgets it), to show shutdown exports. */
function keepingExporter(): SpanExporter & { spans: ReadableSpan[] } {
  const spans: ReadableSpan[] = [];
  return {
    spans,
    export: (batch, done) => {
      spans.push(...batch);
      done({ code: ExportResultCode.SUCCESS });
    },
    shutdown: () => Promise.resolve(),
  };
}

function tracing(): { exporter: InMemorySpanExporter; observe: ReturnType<typeof createTracingObserver> } {
  const exporter = new InMemorySpanExporter();
  const provider = new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter })] });
  return { exporter, observe: createTracingObserver(provider.getTracer('test')) };
}

describe('createTracingObserver', () => {
  it('records a span per decision with the portcullis.* attributes, timed from start for its latency', () => {
    const { exporter, observe } = tracing();
    const record = decisionRecord();
    observe(record);
    const [span] = exporter.getFinishedSpans();
    expect(span?.name).toBe(SPAN_NAME);
    expect(span?.kind).toBe(SpanKind.SERVER);
    expect(span?.attributes).toEqual({
      'portcullis.tenant': 'finance',
      'portcullis.namespace': 'finance',
      'portcullis.agent': 'finance-agent',
      'portcullis.tool': 'stripe-payments',
      'portcullis.action': 'create_payment',
      'portcullis.decision': 'allow',
      'portcullis.enforced': true,
      'portcullis.policy': 'payments',
      'portcullis.rule': 'small-payments',
      'portcullis.revision': '7-aaaaaaaaaaaaaaaa',
      'portcullis.decision_id': 'decision-1',
      'portcullis.transport': 'grpc',
    });
    expect(hrTimeToMilliseconds(span?.startTime ?? [0, 0])).toBe(record.startedAt.getTime());
    expect(hrTimeToNanoseconds(span?.duration ?? [0, 0])).toBe(123_400);
    expect(span?.status.code).toBe(SpanStatusCode.UNSET);
  });

  it("continues the caller's trace: same trace id, the caller's span as parent", () => {
    const { exporter, observe } = tracing();
    observe(decisionRecord({ context: { transport: 'grpc', traceparent: `00-${TRACE_ID}-${PARENT_SPAN_ID}-01` } }));
    const [span] = exporter.getFinishedSpans();
    expect(span?.spanContext().traceId).toBe(TRACE_ID);
    expect(span?.parentSpanContext).toMatchObject({ traceId: TRACE_ID, spanId: PARENT_SPAN_ID, isRemote: true });
    expect(span?.spanContext().spanId).not.toBe(PARENT_SPAN_ID);
  });

  it('starts a trace of its own without a traceparent, or with one that is not W3C', () => {
    const { exporter, observe } = tracing();
    observe(decisionRecord({ context: { transport: 'http' } }));
    observe(decisionRecord({ context: { transport: 'http', traceparent: `00-${TRACE_ID}-not-a-span-01` } }));
    const spans = exporter.getFinishedSpans();
    expect(spans.map((span) => span.parentSpanContext)).toEqual([undefined, undefined]);
    expect(spans.map((span) => span.spanContext().traceId)).not.toContain(TRACE_ID);
  });

  it("makes one span per decision: the later record of its answer's redaction makes none", () => {
    const { exporter, observe } = tracing();
    observe(decisionRecord());
    observe({ ...decisionRecord(), response: { redacted: ['record.ssn:ssn'], outcome: 'complete' } });
    expect(exporter.getFinishedSpans()).toHaveLength(1);
  });

  it('marks a decision that failed to evaluate as an error', () => {
    const { exporter, observe } = tracing();
    const record = decisionRecord();
    observe({ ...record, decision: { ...record.decision, decision: 'deny', policy: null, rule: SIDECAR_RULES.evaluationError, reasons: ['evaluation failed: wasm trap'] } });
    const [span] = exporter.getFinishedSpans();
    expect(span?.status).toEqual({ code: SpanStatusCode.ERROR, message: 'evaluation failed: wasm trap' });
    expect(span?.attributes['portcullis.policy']).toBeUndefined();
  });
});

describe('tracingConfig (the OTEL_* variables)', () => {
  it('is off unless an OTLP endpoint or OTEL_TRACES_EXPORTER=otlp is set', () => {
    expect(tracingConfig({})).toBeUndefined();
    expect(tracingConfig({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' })).toMatchObject({ protocol: 'http/protobuf' });
    expect(tracingConfig({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://collector:4318/v1/traces' })).toBeDefined();
    expect(tracingConfig({ OTEL_TRACES_EXPORTER: 'otlp' })).toBeDefined();
  });

  it('is off when OTEL_TRACES_EXPORTER=none or OTEL_SDK_DISABLED=true, endpoint or not', () => {
    expect(tracingConfig({ OTEL_TRACES_EXPORTER: 'none', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' })).toBeUndefined();
    expect(tracingConfig({ OTEL_SDK_DISABLED: 'true', OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' })).toBeUndefined();
  });

  it('exports http/protobuf by default, http/json when asked, and refuses grpc and other exporters by name', () => {
    const on = { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' };
    expect(tracingConfig({ ...on, OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/json' })?.protocol).toBe('http/json');
    expect(() => tracingConfig({ ...on, OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' })).toThrow(new TelemetryConfigError('OTEL_EXPORTER_OTLP_PROTOCOL: "grpc" is not supported; use http/protobuf or http/json (a collector\'s OTLP/HTTP port, 4318)'));
    expect(() => tracingConfig({ OTEL_TRACES_EXPORTER: 'otlp,zipkin' })).toThrow(/OTEL_TRACES_EXPORTER: "zipkin" not supported/);
  });

  it('takes the sampler and its ratio from OTEL_TRACES_SAMPLER(_ARG), and refuses what it does not know', () => {
    const on = { OTEL_TRACES_EXPORTER: 'otlp' };
    expect(tracingConfig(on)?.sampler).toBeInstanceOf(ParentBasedSampler);
    expect(tracingConfig({ ...on, OTEL_TRACES_SAMPLER: 'always_off' })?.sampler).toBeInstanceOf(AlwaysOffSampler);
    expect(tracingConfig({ ...on, OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: '0.25' })?.sampler).toBeInstanceOf(TraceIdRatioBasedSampler);
    expect(() => tracingConfig({ ...on, OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: '2' })).toThrow(/OTEL_TRACES_SAMPLER_ARG: "2" is not a ratio between 0 and 1/);
    expect(() => tracingConfig({ ...on, OTEL_TRACES_SAMPLER: 'sometimes' })).toThrow(/OTEL_TRACES_SAMPLER: "sometimes" is not one of always_on/);
  });

  it('reads the batch processor settings of OTEL_BSP_*', () => {
    expect(tracingConfig({ OTEL_TRACES_EXPORTER: 'otlp', OTEL_BSP_SCHEDULE_DELAY: '1000', OTEL_BSP_MAX_QUEUE_SIZE: '4096' })?.batch).toEqual({ scheduledDelayMillis: 1000, maxQueueSize: 4096 });
    expect(() => tracingConfig({ OTEL_TRACES_EXPORTER: 'otlp', OTEL_BSP_EXPORT_TIMEOUT: 'soon' })).toThrow(/OTEL_BSP_EXPORT_TIMEOUT: "soon" is not a whole number/);
  });
});

describe('startTelemetry', () => {
  it('starts nothing when tracing is not configured', async () => {
    const telemetry = startTelemetry({ env: {} });
    expect(telemetry.observers).toEqual([]);
    await expect(telemetry.shutdown()).resolves.toBeUndefined();
  });

  it('batches spans and exports what is left on shutdown, as the service portcullis-sidecar', async () => {
    const exporter = keepingExporter();
    const telemetry = startTelemetry({ env: { OTEL_TRACES_EXPORTER: 'otlp', OTEL_BSP_SCHEDULE_DELAY: '600000' }, exporter });
    for (const observe of telemetry.observers) observe(decisionRecord());
    await telemetry.shutdown();
    const { spans } = exporter;
    expect(spans.map((span) => span.attributes['portcullis.decision_id'])).toEqual(['decision-1']);
    expect(spans[0]?.resource.attributes['service.name']).toBe(process.env.OTEL_SERVICE_NAME ?? 'portcullis-sidecar');
  });

  it("follows the caller's decision not to sample its trace", async () => {
    const exporter = keepingExporter();
    const telemetry = startTelemetry({ env: { OTEL_TRACES_EXPORTER: 'otlp' }, exporter });
    for (const observe of telemetry.observers) {
      observe(decisionRecord({ context: { transport: 'grpc', traceparent: `00-${TRACE_ID}-${PARENT_SPAN_ID}-00` } }));
      observe(decisionRecord({ context: { transport: 'grpc', traceparent: `00-${TRACE_ID}-${PARENT_SPAN_ID}-01` } }));
    }
    await telemetry.shutdown();
    expect(exporter.spans.map((span) => span.spanContext().traceFlags)).toEqual([1]);
  });
});
