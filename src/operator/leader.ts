// Leader election on a coordination.k8s.io/v1 Lease, with client-go's
// defaults and semantics: a candidate takes the Lease when it is free or
// when its holder has not renewed it for a whole lease duration *as this
// process observed it* (its own clock, so skew between machines does not
// matter); the leader renews every retry period and steps down when it could
// not renew within the renew deadline. Updates use the resourceVersion, so two
// candidates never both win.

import type { CoordinationV1Api, V1Lease } from '@kubernetes/client-node';
import { V1MicroTime } from '@kubernetes/client-node';

export interface LeaderElectionOptions {
  namespace: string;
  name: string;
  identity: string;
  leaseDurationMs: number;
  renewDeadlineMs: number;
  retryPeriodMs: number;
}

export const DEFAULT_LEASE_TIMINGS = { leaseDurationMs: 15_000, renewDeadlineMs: 10_000, retryPeriodMs: 2_000 } as const;

export interface LeaderCallbacks {
  onStartedLeading(): void;
  onStoppedLeading(): void;
  onNewLeader?(identity: string): void;
  onError?(error: unknown): void;
}

/** What a candidate should do with the Lease it just read. Pure. */
export type LeaseAction = { kind: 'take' } | { kind: 'renew' } | { kind: 'wait'; holder: string };

export interface Observation {
  /** The holder and renew time last seen, and when (local clock) they were first seen. */
  holder: string;
  renewTime: string;
  observedAtMs: number;
}

/** The client returns MicroTime fields as strings or Dates depending on the path; compare them as text. */
function timeText(value: unknown): string {
  if (value instanceof Date) return value.toISOString();
  return typeof value === 'string' ? value : '';
}

export function decideLeaseAction(lease: V1Lease | undefined, identity: string, observation: Observation | undefined, nowMs: number, leaseDurationMs: number): LeaseAction {
  const holder = lease?.spec?.holderIdentity ?? '';
  if (!lease || holder === '') return { kind: 'take' };
  if (holder === identity) return { kind: 'renew' };
  const renewTime = timeText(lease.spec?.renewTime);
  const unchangedSince = observation?.holder === holder && observation.renewTime === renewTime ? observation.observedAtMs : nowMs;
  const durationMs = (lease.spec?.leaseDurationSeconds ?? leaseDurationMs / 1000) * 1000;
  return nowMs - unchangedSince >= durationMs ? { kind: 'take' } : { kind: 'wait', holder };
}

function isConflict(error: unknown): boolean {
  const code = (error as { code?: number } | null)?.code;
  return code === 409 || code === 404;
}

export class LeaderElector {
  private readonly api: CoordinationV1Api;
  private readonly options: LeaderElectionOptions;
  private readonly callbacks: LeaderCallbacks;
  private observation: Observation | undefined;
  private leading = false;
  private lastRenewMs = 0;
  private stopped = false;
  private timer: NodeJS.Timeout | undefined;
  private lastLeader = '';

  constructor(api: CoordinationV1Api, options: LeaderElectionOptions, callbacks: LeaderCallbacks) {
    this.api = api;
    this.options = options;
    this.callbacks = callbacks;
  }

  /** Read through a getter: stop() may flip it while a tick awaits. */
  private get campaigning(): boolean {
    return !this.stopped;
  }

  get isLeader(): boolean {
    return this.leading;
  }

  start(): void {
    this.stopped = false;
    void this.tick();
  }

  /** Stops campaigning; a leader releases the Lease so another replica takes over at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (!this.leading) return;
    this.setLeading(false);
    try {
      const lease = await this.api.readNamespacedLease({ name: this.options.name, namespace: this.options.namespace });
      if (lease.spec?.holderIdentity !== this.options.identity) return;
      lease.spec.holderIdentity = '';
      lease.spec.leaseDurationSeconds = 1;
      lease.spec.renewTime = new V1MicroTime();
      await this.api.replaceNamespacedLease({ name: this.options.name, namespace: this.options.namespace, body: lease });
    } catch (error) {
      this.callbacks.onError?.(error);
    }
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    try {
      await this.tryAcquireOrRenew();
    } catch (error) {
      this.callbacks.onError?.(error);
    }
    if (this.leading && Date.now() - this.lastRenewMs > this.options.renewDeadlineMs) this.setLeading(false);
    if (!this.campaigning) return;
    this.timer = setTimeout(() => { void this.tick(); }, this.options.retryPeriodMs);
  }

  private async tryAcquireOrRenew(): Promise<void> {
    const { name, namespace, identity } = this.options;
    let lease: V1Lease | undefined;
    try {
      lease = await this.api.readNamespacedLease({ name, namespace });
    } catch (error) {
      if ((error as { code?: number } | null)?.code !== 404) throw error;
    }
    const now = Date.now();
    const action = decideLeaseAction(lease, identity, this.observation, now, this.options.leaseDurationMs);
    this.observe(lease, now);
    if (action.kind === 'wait') {
      if (this.leading) this.setLeading(false);
      this.announce(action.holder);
      return;
    }
    const renewTime = new V1MicroTime(now);
    const durationSeconds = Math.round(this.options.leaseDurationMs / 1000);
    try {
      if (!lease) {
        await this.api.createNamespacedLease({
          namespace,
          body: {
            metadata: { name, namespace },
            spec: { holderIdentity: identity, leaseDurationSeconds: durationSeconds, acquireTime: renewTime, renewTime, leaseTransitions: 0 },
          },
        });
      } else {
        const spec = lease.spec ?? {};
        if (action.kind === 'take') {
          spec.acquireTime = renewTime;
          spec.leaseTransitions = (spec.leaseTransitions ?? 0) + (spec.holderIdentity ? 1 : 0);
        }
        spec.holderIdentity = identity;
        spec.leaseDurationSeconds = durationSeconds;
        spec.renewTime = renewTime;
        lease.spec = spec;
        await this.api.replaceNamespacedLease({ name, namespace, body: lease });
      }
    } catch (error) {
      if (isConflict(error)) return; // someone else wrote first; read again next period
      throw error;
    }
    this.lastRenewMs = now;
    this.announce(identity);
    if (!this.leading) this.setLeading(true);
  }

  private observe(lease: V1Lease | undefined, now: number): void {
    const holder = lease?.spec?.holderIdentity ?? '';
    const renewTime = timeText(lease?.spec?.renewTime);
    if (this.observation?.holder !== holder || this.observation.renewTime !== renewTime) {
      this.observation = { holder, renewTime, observedAtMs: now };
    }
  }

  private announce(holder: string): void {
    if (holder === this.lastLeader) return;
    this.lastLeader = holder;
    this.callbacks.onNewLeader?.(holder);
  }

  private setLeading(leading: boolean): void {
    this.leading = leading;
    if (leading) this.callbacks.onStartedLeading();
    else this.callbacks.onStoppedLeading();
  }
}
