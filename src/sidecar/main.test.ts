import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { podFrom, tracingRequested } from './main.ts';
import { tracingConfig } from './telemetry.ts';

const VARIABLES = [
  'OTEL_TRACES_EXPORTER', 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', 'OTEL_EXPORTER_OTLP_ENDPOINT', 'OTEL_SDK_DISABLED', 'OTEL_TRACES_SAMPLER',
  'OTEL_TRACES_SAMPLER_ARG', 'OTEL_EXPORTER_OTLP_PROTOCOL', 'OTEL_BSP_SCHEDULE_DELAY', 'OTEL_SERVICE_NAME',
];
const VALUES = ['', ' ', 'otlp', 'none', 'true', 'always_on', '0.5', 'http/json', '100', 'http://collector:4318'];

describe('loading the OpenTelemetry SDK only for tracing', () => {
  it('never skips it when the variables turn tracing on (or are wrong, which tracingConfig reports)', () => {
    fc.assert(fc.property(fc.dictionary(fc.constantFrom(...VARIABLES), fc.constantFrom(...VALUES)), (env) => {
      let config: unknown;
      try {
        config = tracingConfig(env);
      } catch {
        config = 'an error to report';
      }
      if (config !== undefined) expect(tracingRequested(env)).toBe(true);
    }));
  });

  it('skips it when no exporter or endpoint is named', () => {
    expect(tracingRequested({ OTEL_TRACES_SAMPLER: 'always_on', OTEL_SERVICE_NAME: 'x', OTEL_EXPORTER_OTLP_ENDPOINT: ' ' })).toBe(false);
    expect(tracingRequested({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' })).toBe(true);
  });
});

describe('the pod the sidecar runs in', () => {
  it.each([
    ['name and uid from the downward API, as injection sets them', { POD_NAME: 'finance-agent-7d9f', POD_UID: 'uid-7d9f' }, { podName: 'finance-agent-7d9f', podUid: 'uid-7d9f' }],
    ['the name alone, for a sidecar injected before the uid was', { POD_NAME: 'finance-agent-7d9f' }, { podName: 'finance-agent-7d9f' }],
    ['nothing outside a pod', {}, {}],
  ])('is %s', (_name, env: Record<string, string>, expected) => {
    expect(podFrom(env)).toEqual(expected);
  });
});
