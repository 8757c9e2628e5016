import type { CoreV1ApiCreateNamespacedEventRequest, CoreV1Event } from '@kubernetes/client-node';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { BundleEventRecorder } from './bundle-events.ts';

function recorder(fail = false): { events: CoreV1Event[]; recorder: BundleEventRecorder } {
  const events: CoreV1Event[] = [];
  const core = {
    createNamespacedEvent: (request: CoreV1ApiCreateNamespacedEventRequest): Promise<CoreV1Event> => {
      if (fail) return Promise.reject(new Error('forbidden'));
      events.push(request.body);
      return Promise.resolve(request.body);
    },
  };
  return { events, recorder: new BundleEventRecorder({ core, namespace: 'finance', instance: 'finance-agent-7d9f', log: pino({ level: 'silent' }), now: () => new Date('2026-11-23T14:00:00Z') }) };
}

const bundle = { name: 'portcullis-bundle', namespace: 'finance', uid: 'u-1', resourceVersion: '42' };

describe('bundle refusal events', () => {
  it('records a Warning on the bundle ConfigMap naming the reason and the revision kept', async () => {
    const { events, recorder: r } = recorder();
    await r.refused({ code: 'signature_invalid', message: 'the signature does not verify', keeping: '7-aaaaaaaaaaaaaaaa', bundle });
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({
      type: 'Warning',
      reason: 'BundleRefused',
      involvedObject: { kind: 'ConfigMap', name: 'portcullis-bundle', namespace: 'finance', uid: 'u-1', resourceVersion: '42' },
      message: 'signature_invalid: the signature does not verify (keeping revision 7-aaaaaaaaaaaaaaaa)',
      reportingComponent: 'portcullis-sidecar',
      reportingInstance: 'finance-agent-7d9f',
    });
  });

  it('reports one refusal of a bundle version once, and a new version or reason again', async () => {
    const { events, recorder: r } = recorder();
    await r.refused({ code: 'signature_invalid', message: 'x', keeping: undefined, bundle });
    await r.refused({ code: 'signature_invalid', message: 'x', keeping: undefined, bundle });
    await r.refused({ code: 'tenant_mismatch', message: 'y', keeping: undefined, bundle });
    await r.refused({ code: 'signature_invalid', message: 'x', keeping: undefined, bundle: { ...bundle, resourceVersion: '43' } });
    expect(events.map((e) => `${e.involvedObject.resourceVersion ?? ''}:${e.message ?? ''}`)).toEqual([
      '42:signature_invalid: x (no bundle is loaded)',
      '42:tenant_mismatch: y (no bundle is loaded)',
      '43:signature_invalid: x (no bundle is loaded)',
    ]);
  });

  it('never throws when the event cannot be written', async () => {
    const { recorder: r } = recorder(true);
    await expect(r.refused({ code: 'signature_invalid', message: 'x', keeping: undefined, bundle })).resolves.toBeUndefined();
  });
});
