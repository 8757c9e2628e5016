// The operator's Prometheus metrics (prom-client, portcullis_ prefix).

import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

export interface OperatorMetrics {
  registry: Registry;
  reconcileTotal: Counter<'kind' | 'result'>;
  reconcileDuration: Histogram<'kind'>;
  queueDepth: Gauge;
  bundleBytes: Gauge<'tenant'>;
  compileSeconds: Gauge<'tenant'>;
  bundleRevision: Gauge<'tenant'>;
  isLeader: Gauge;
  informerRestarts: Counter<'informer'>;
  statusWriteFailures: Counter<'kind' | 'code'>;
  foreignObjects: Counter<'kind'>;
  standingUpdates: Counter;
}

export function createOperatorMetrics(): OperatorMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'portcullis_operator_' });
  return {
    registry,
    reconcileTotal: new Counter({
      name: 'portcullis_reconcile_total',
      help: 'Reconciles by kind and result (success, error, invalid)',
      labelNames: ['kind', 'result'],
      registers: [registry],
    }),
    reconcileDuration: new Histogram({
      name: 'portcullis_reconcile_duration_seconds',
      help: 'Time one reconcile took',
      labelNames: ['kind'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    queueDepth: new Gauge({ name: 'portcullis_workqueue_depth', help: 'Keys waiting or being processed', registers: [registry] }),
    bundleBytes: new Gauge({ name: 'portcullis_bundle_bytes', help: 'Size of the tenant bundle ConfigMap data', labelNames: ['tenant'], registers: [registry] }),
    compileSeconds: new Gauge({ name: 'portcullis_bundle_compile_seconds', help: 'Time the last compile of the tenant took', labelNames: ['tenant'], registers: [registry] }),
    bundleRevision: new Gauge({
      name: 'portcullis_bundle_revision_sequence',
      help: 'Sequence number of the last bundle revision written for the tenant',
      labelNames: ['tenant'],
      registers: [registry],
    }),
    isLeader: new Gauge({ name: 'portcullis_leader', help: '1 while this replica holds the leader Lease', registers: [registry] }),
    informerRestarts: new Counter({
      name: 'portcullis_informer_restarts_total',
      help: 'Watches restarted after an error other than 410 Gone',
      labelNames: ['informer'],
      registers: [registry],
    }),
    statusWriteFailures: new Counter({
      name: 'portcullis_status_write_failures_total',
      help: 'Status writes the API server refused, by kind and HTTP code (422: the status itself is invalid, not retried)',
      labelNames: ['kind', 'code'],
      registers: [registry],
    }),
    foreignObjects: new Counter({
      name: 'portcullis_foreign_objects_total',
      help: 'Objects carrying the operator labels that it did not write (each version once), ignored; an Event names each',
      labelNames: ['kind'],
      registers: [registry],
    }),
    standingUpdates: new Counter({
      name: 'portcullis_standing_updates_total',
      help: 'Bundles signed from the last good one with the agents standing (suspended, revokedBefore) as now, while the tenant was blocked by invalid resources',
      registers: [registry],
    }),
  };
}
