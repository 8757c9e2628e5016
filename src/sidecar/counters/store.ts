// The CounterStore the Authorizer calls, over a backend that keeps the numbers
// (memory.ts for one replica, redis.ts for all replicas of an agent). Plans the
// reservation, hands the policy its counters, settles the outcome, says when to
// retry, and reports the backend's health in metrics and the log.
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { AuthorizationDecision, Obligations } from '../../compiler/index.ts';
import type { CounterStore, Reservation, RetryHint } from '../authorizer.ts';
import type { SidecarMetrics } from '../metrics.ts';
import { fromMicros } from './money.ts';
import type { CounterScope } from './acl.ts';
import type { Adjustment, CountedCall, ReservationPlan, Reserved, Settled } from './plan.ts';
import { adjustmentFor, countersOf, isNoop, passes, planReservation, refusingLimit, retryAdvice, windowMaxima } from './plan.ts';

export type CounterStoreKind = 'memory' | 'redis';

/** Where the numbers live. Each operation is atomic over all the items of a plan. */
export interface CounterBackend {
  readonly kind: CounterStoreKind;
  /** Takes a token from each bucket that has one, adds the cost to each spend it fits, adds the call to each window. */
  reserve(plan: ReservationPlan, member: string): Promise<Reserved>;
  settle(plan: ReservationPlan, reserved: Reserved, member: string, adjustment: Adjustment): Promise<Settled>;
  /** Resolves once the backend answers (a connected client); rejects when its first attempt fails. */
  ready(): Promise<void>;
  close(): Promise<void>;
}

export interface CountingStoreOptions {
  backend: CounterBackend;
  metrics: Pick<SidecarMetrics, 'counterStoreUp' | 'counterStoreErrors' | 'spendUSD' | 'limitRejections'>;
  log: Logger;
  /** Names the call in sliding windows, so a refund removes exactly it. */
  newMember?: () => string;
}

export class CountingStore implements CounterStore {
  readonly kind: CounterStoreKind;
  private readonly options: CountingStoreOptions;
  private readonly newMember: () => string;
  private up = true;

  constructor(options: CountingStoreOptions) {
    this.options = options;
    this.kind = options.backend.kind;
    this.newMember = options.newMember ?? randomUUID;
    options.metrics.counterStoreUp.set({ store: this.kind }, 1);
  }

  async reserve(scope: CounterScope, call: CountedCall, obligations: Obligations, now: Date): Promise<Reservation> {
    let plan: ReservationPlan;
    try {
      plan = planReservation(scope, call, obligations, now.getTime());
    } catch (error) {
      // Obligations a compiled bundle cannot hold (an unknown zone, a window that is no duration): the call is denied.
      this.options.log.error({ tool: call.tool, err: error instanceof Error ? error.message : String(error) }, 'cannot plan the counters of a call');
      throw error;
    }
    const member = this.newMember();
    let reserved: Reserved;
    try {
      reserved = await this.options.backend.reserve(plan, member);
    } catch (error) {
      this.failed('reserve', error);
      throw error;
    }
    this.succeeded();
    return {
      counters: countersOf(plan, reserved),
      settle: (decision) => this.settle({ scope, tool: call.tool, plan, reserved, member }, decision),
    };
  }

  /** Resolves once the backend answers; calls made before are denied (fail closed), not held. */
  ready(): Promise<void> {
    return this.options.backend.ready();
  }

  close(): Promise<void> {
    return this.options.backend.close();
  }

  private async settle(held: { scope: CounterScope; tool: string; plan: ReservationPlan; reserved: Reserved; member: string }, decision: AuthorizationDecision): Promise<RetryHint | undefined> {
    const { plan, reserved } = held;
    const goesAhead = passes(decision);
    const limit = refusingLimit(decision);
    const adjustment = adjustmentFor(plan, reserved, goesAhead, limit === 'calls' ? windowMaxima(decision) : undefined);
    let settled: Settled | undefined;
    if (!isNoop(adjustment)) {
      try {
        settled = await this.options.backend.settle(plan, reserved, held.member, adjustment);
        this.succeeded();
      } catch (error) {
        // What the call reserved stays reserved: the limits err on the side of refusing.
        this.failed('settle', error);
      }
    }
    if (goesAhead) this.countSpend(held.scope, plan);
    if (limit === undefined) return undefined;
    this.options.metrics.limitRejections.inc({ limit, tool: held.tool, rule: decision.rule });
    return retryAdvice(limit, decision, plan, reserved, settled);
  }

  /** The cost of a call that went ahead, once per budgeted tool. */
  private countSpend(scope: CounterScope, plan: ReservationPlan): void {
    const costs = new Map<string, number>();
    for (const spend of plan.spends) {
      if (spend.costMicros !== undefined && !costs.has(spend.counter)) costs.set(spend.counter, spend.costMicros);
    }
    for (const [tool, micros] of costs) {
      if (micros > 0) this.options.metrics.spendUSD.inc({ agent: scope.agent, tool }, fromMicros(micros));
    }
  }

  private failed(operation: 'reserve' | 'settle', error: unknown): void {
    const { metrics, log } = this.options;
    metrics.counterStoreErrors.inc({ store: this.kind, operation });
    metrics.counterStoreUp.set({ store: this.kind }, 0);
    const message = error instanceof Error ? error.message : String(error);
    if (this.up) log.warn({ store: this.kind, operation, err: message }, 'counter store unavailable: calls with stateful conditions are denied until it answers again');
    else log.debug({ store: this.kind, operation, err: message }, 'counter store still unavailable');
    this.up = false;
  }

  private succeeded(): void {
    if (this.up) return;
    this.up = true;
    this.options.metrics.counterStoreUp.set({ store: this.kind }, 1);
    this.options.log.info({ store: this.kind }, 'counter store available again');
  }
}
