import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import type { CoreV1Event } from './bundle-events.ts';
import { BundleEventRecorder, eventCreator } from './bundle-events.ts';

function recorder(fail = false): { events: CoreV1Event[]; paths: string[]; recorder: BundleEventRecorder } {
  const events: CoreV1Event[] = [];
  const paths: string[] = [];
  const createEvent = eventCreator((path, body) => {
    if (fail) return Promise.reject(new Error('forbidden'));
    paths.push(path);
    events.push(body as CoreV1Event);
    return Promise.resolve(body);
  });
  return { events, paths, recorder: new BundleEventRecorder({ createEvent, namespace: 'finance', instance: 'finance-agent-7d9f', log: pino({ level: 'silent' }), now: () => new Date('2026-11-23T14:00:00.123Z') }) };
}

const bundle = { name: 'portcullis-bundle', namespace: 'finance', uid: 'u-1', resourceVersion: '42' };

describe('bundle refusal events', () => {
  it('records a Warning on the bundle ConfigMap naming the reason and the revision kept', async () => {
    const { events, paths, recorder: r } = recorder();
    await r.refused({ code: 'signature_invalid', message: 'the signature does not verify', keeping: '7-aaaaaaaaaaaaaaaa', bundle });
    expect(paths).toEqual(['/api/v1/namespaces/finance/events']);
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({
      apiVersion: 'v1',
      kind: 'Event',
      metadata: { generateName: 'portcullis-bundle-refused-', namespace: 'finance' },
      type: 'Warning',
      reason: 'BundleRefused',
      involvedObject: { kind: 'ConfigMap', name: 'portcullis-bundle', namespace: 'finance', uid: 'u-1', resourceVersion: '42' },
      message: 'signature_invalid: the signature does not verify (keeping revision 7-aaaaaaaaaaaaaaaa)',
      reportingComponent: 'portcullis-sidecar',
      reportingInstance: 'finance-agent-7d9f',
      firstTimestamp: '2026-11-23T14:00:00Z',
      lastTimestamp: '2026-11-23T14:00:00Z',
      count: 1,
    });
  });

  it('reports one refusal of a bundle version once, and a new version or reason again', async () => {
    const { events, recorder: r } = recorder();
    await r.refused({ code: 'signature_invalid', message: 'x', keeping: undefined, bundle });
    await r.refused({ code: 'signature_invalid', message: 'x', keeping: undefined, bundle });
    await r.refused({ code: 'tenant_mismatch', message: 'y', keeping: undefined, bundle });
    await r.refused({ code: 'signature_invalid', message: 'x', keeping: undefined, bundle: { ...bundle, resourceVersion: '43' } });
    expect(events.map((e) => `${e.involvedObject.resourceVersion ?? ''}:${e.message}`)).toEqual([
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
