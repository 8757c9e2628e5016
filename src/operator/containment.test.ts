import { describe, expect, it } from 'vitest';
import type { AgentData } from '../compiler/ir.ts';
import type { AgentStandingSpec } from './containment.ts';
import { standingSpecOf, withAgentStanding } from './containment.ts';

const agent = (modify: Partial<AgentData> = {}): AgentData => ({ roles: ['payer'], scopes: [], attributes: {}, autonomyLevel: 1, suspended: false, ...modify });

/** Bundle data whose agents of namespace finance are these. */
const bundleData = (agents: Record<string, AgentData>): unknown => ({ portcullis: { tenant: 'finance', agents: Object.keys(agents).length === 0 ? {} : { finance: agents }, rules: { finance: { stripe: [] } } } });

const spec = (name: string, modify: Partial<AgentStandingSpec> = {}): AgentStandingSpec => ({ namespace: 'finance', name, suspended: false, ...modify });

describe('the agents standing carried into the last good bundle', () => {
  it.each([
    ['a suspension is carried', { a: agent() }, [spec('a', { suspended: true })], { a: agent({ suspended: true }) }, [{ agent: 'finance/a', change: 'suspended' }]],
    ['a resumption is carried', { a: agent({ suspended: true }) }, [spec('a')], { a: agent() }, [{ agent: 'finance/a', change: 'resumed' }]],
    [
      'a revocation is carried in the compiler spelling',
      { a: agent() },
      [spec('a', { revokedBefore: '2026-12-05T20:00:00+01:00' })],
      { a: agent({ revokedBefore: '2026-12-05T19:00:00.000Z' }) },
      [{ agent: 'finance/a', change: 'revoked' }],
    ],
    [
      'an unreadable revocation time revokes every token',
      { a: agent() },
      [spec('a', { revokedBefore: 'yesterday' })],
      { a: agent({ revokedBefore: new Date(8.64e15).toISOString() }) },
      [{ agent: 'finance/a', change: 'revoked' }],
    ],
    ['an agent whose AgentIdentity is gone is removed', { a: agent(), b: agent() }, [spec('a')], { a: agent() }, [{ agent: 'finance/b', change: 'removed' }]],
    ['an agent the bundle does not hold is not added', { a: agent() }, [spec('a'), spec('new', { suspended: true })], { a: agent() }, []],
  ])('%s', (_name, before, specs, after, changes) => {
    const result = withAgentStanding(bundleData(before), specs);
    expect(result.changes).toEqual(changes);
    expect(result.data).toEqual(bundleData(after));
  });

  it('leaves everything else of the data, and the input, as it was', () => {
    const data = bundleData({ a: agent() });
    const copy = structuredClone(data);
    const result = withAgentStanding(data, [spec('a', { suspended: true })]);
    expect(data).toEqual(copy);
    expect((result.data as { portcullis: { rules: unknown } }).portcullis.rules).toEqual({ finance: { stripe: [] } });
  });

  it('returns the same data when no standing changed, so the same revision is written again', () => {
    const data = bundleData({ a: agent({ suspended: true }) });
    expect(withAgentStanding(data, [spec('a', { suspended: true })]).data).toBe(data);
  });

  it.each([
    ['suspended: true', { suspended: true }, true],
    ['suspended: false', { suspended: false }, false],
    ['no suspended field', {}, false],
    ['a suspended field of another type', { suspended: 'yes' }, true],
    ['no spec at all', undefined, false],
  ])('reads the standing from a spec with %s', (_name, agentSpec, suspended) => {
    expect(standingSpecOf('finance', 'a', agentSpec).suspended).toBe(suspended);
  });
});
