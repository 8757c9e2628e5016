import type { V1Lease } from '@kubernetes/client-node';
import { V1MicroTime } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { decideLeaseAction } from './leader.ts';

const lease = (holder: string, renewedAt: number, seconds = 15): V1Lease => ({
  metadata: { name: 'portcullis-operator', namespace: 'portcullis-system' },
  spec: { holderIdentity: holder, renewTime: new V1MicroTime(renewedAt), leaseDurationSeconds: seconds },
});

describe('decideLeaseAction', () => {
  it('takes a Lease that does not exist yet', () => {
    expect(decideLeaseAction(undefined, 'me', undefined, 0, 15_000)).toEqual({ kind: 'take' });
  });

  it('takes a Lease that was released (no holder)', () => {
    expect(decideLeaseAction(lease('', 0), 'me', undefined, 0, 15_000)).toEqual({ kind: 'take' });
  });

  it('renews its own Lease', () => {
    expect(decideLeaseAction(lease('me', 0), 'me', undefined, 0, 15_000)).toEqual({ kind: 'renew' });
  });

  it('waits while another holder keeps renewing, whatever the clocks say', () => {
    // The holder's renewTime is an hour old by our clock (skew), but we only just saw it change.
    const renewed = lease('other', Date.parse('2026-11-23T09:00:00Z'));
    const seen = { holder: 'other', renewTime: '2026-11-23T08:59:58.000000Z', observedAtMs: 0 };
    expect(decideLeaseAction(renewed, 'me', seen, Date.parse('2026-11-23T10:00:00Z'), 15_000)).toEqual({ kind: 'wait', holder: 'other' });
  });

  it('takes the Lease once it saw no renewal for a whole lease duration', () => {
    const stale = lease('other', 1_000);
    const seen = { holder: 'other', renewTime: stale.spec?.renewTime?.toISOString() ?? 'unset', observedAtMs: 100_000 };
    expect(decideLeaseAction(stale, 'me', seen, 114_999, 15_000)).toEqual({ kind: 'wait', holder: 'other' });
    expect(decideLeaseAction(stale, 'me', seen, 115_000, 15_000)).toEqual({ kind: 'take' });
  });

  it('compares renew times given as text the same as times given as dates', () => {
    const asText: V1Lease = { spec: { holderIdentity: 'other', renewTime: '1970-01-01T00:00:01.000000Z' as unknown as V1MicroTime, leaseDurationSeconds: 15 } };
    const seen = { holder: 'other', renewTime: '1970-01-01T00:00:01.000000Z', observedAtMs: 0 };
    expect(decideLeaseAction(asText, 'me', seen, 14_999, 15_000)).toEqual({ kind: 'wait', holder: 'other' });
    expect(decideLeaseAction(asText, 'me', seen, 15_000, 15_000)).toEqual({ kind: 'take' });
  });

  it('uses the lease duration written in the Lease', () => {
    const released = lease('other', 1_000, 1);
    const seen = { holder: 'other', renewTime: released.spec?.renewTime?.toISOString() ?? 'unset', observedAtMs: 0 };
    expect(decideLeaseAction(released, 'me', seen, 1_000, 15_000)).toEqual({ kind: 'take' });
  });
});
