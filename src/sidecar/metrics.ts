// The sidecar's Prometheus metrics (prom-client, portcullis_ prefix).
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

export interface SidecarMetrics {
  registry: Registry;
  decisions: Counter<'decision' | 'enforced' | 'policy' | 'rule' | 'tool'>;
  decisionDuration: Histogram<'transport'>;
  bundleRejections: Counter<'code'>;
  bundleLoads: Counter;
  bundleRevision: Gauge<'tenant'>;
  informerRestarts: Counter<'informer'>;
  /** 1 while the counter store answers, 0 while stateful rules deny because it does not. */
  counterStoreUp: Gauge<'store'>;
  counterStoreErrors: Counter<'store' | 'operation'>;
  spendUSD: Counter<'agent' | 'tool'>;
  limitRejections: Counter<'limit' | 'tool' | 'rule'>;
  /** Calls let through unchecked because the sidecar could not decide them and the action is declared fail-open. */
  failOpen: Counter<'cause'>;
}

export function createSidecarMetrics(): SidecarMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'portcullis_sidecar_' });
  return {
    registry,
    decisions: new Counter({
      name: 'portcullis_decisions_total',
      help: 'Decisions by decision, enforcement, deciding policy and rule, and tool (the egress host for egress checks)',
      labelNames: ['decision', 'enforced', 'policy', 'rule', 'tool'],
      registers: [registry],
    }),
    decisionDuration: new Histogram({
      name: 'portcullis_decision_duration_seconds',
      help: 'Time from a parsed call to its decision, by transport',
      labelNames: ['transport'],
      // Most decisions take tens of microseconds: the buckets start there.
      buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1],
      registers: [registry],
    }),
    bundleRejections: new Counter({
      name: 'portcullis_bundle_rejections_total',
      help: 'Bundles refused, by the code of the reason (the last good bundle stays loaded)',
      labelNames: ['code'],
      registers: [registry],
    }),
    bundleLoads: new Counter({ name: 'portcullis_bundle_loads_total', help: 'Bundles verified and swapped in', registers: [registry] }),
    bundleRevision: new Gauge({
      name: 'portcullis_bundle_revision_sequence',
      help: 'Sequence number of the revision of the loaded bundle',
      labelNames: ['tenant'],
      registers: [registry],
    }),
    informerRestarts: new Counter({
      name: 'portcullis_informer_restarts_total',
      help: 'Watches restarted after an error other than 410 Gone',
      labelNames: ['informer'],
      registers: [registry],
    }),
    counterStoreUp: new Gauge({
      name: 'portcullis_counter_store_up',
      help: 'Whether the last operation of the counter store (memory or redis) succeeded; while 0, calls with stateful conditions are denied',
      labelNames: ['store'],
      registers: [registry],
    }),
    counterStoreErrors: new Counter({
      name: 'portcullis_counter_store_errors_total',
      help: 'Counter store operations that failed (reserve: the call was denied; settle: a refund was lost)',
      labelNames: ['store', 'operation'],
      registers: [registry],
    }),
    spendUSD: new Counter({
      name: 'portcullis_spend_usd_total',
      help: 'US dollars spent by calls that went ahead, by agent and tool (the cost budgets count)',
      labelNames: ['agent', 'tool'],
      registers: [registry],
    }),
    limitRejections: new Counter({
      name: 'portcullis_limit_rejections_total',
      help: 'Calls refused by a limit: rate (rateLimits), budget (budgets) or calls (callsOver), by tool and deciding rule',
      labelNames: ['limit', 'tool', 'rule'],
      registers: [registry],
    }),
    failOpen: new Counter({
      name: 'portcullis_fail_open_total',
      help: 'Calls let through unchecked (rule portcullis:fail-open): the sidecar could not decide them (cause counters_unavailable or evaluation_error) and the bundle declares the action read-only and fail-open for that cause',
      labelNames: ['cause'],
      registers: [registry],
    }),
  };
}
