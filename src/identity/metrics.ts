// The token service's Prometheus metrics, registered in the operator's registry.
import type { Registry } from 'prom-client';
import { Counter, Histogram } from 'prom-client';

export interface TokenServiceMetrics {
  /** Exchanges by result: `issued`, or the error code of a refusal (`agent_suspended`, ...). */
  exchanges: Counter<'result'>;
  exchangeDuration: Histogram<'result'>;
}

export function createTokenServiceMetrics(registry: Registry): TokenServiceMetrics {
  return {
    exchanges: new Counter({
      name: 'portcullis_token_exchanges_total',
      help: 'Agent token exchanges (POST /v1/token) by result: issued, or the code of the refusal',
      labelNames: ['result'],
      registers: [registry],
    }),
    exchangeDuration: new Histogram({
      name: 'portcullis_token_exchange_duration_seconds',
      help: 'Time to answer POST /v1/token (TokenReview included), by result',
      labelNames: ['result'],
      // A TokenReview round trip dominates: milliseconds to tens of milliseconds.
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers: [registry],
    }),
  };
}
