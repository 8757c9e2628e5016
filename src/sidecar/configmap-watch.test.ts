import { describe, expect, it } from 'vitest';
import type { ConfigMap, ConfigMapApi, WatchEvent } from './configmap-watch.ts';
import { ConfigMapWatch, KubeObjectError, parseConfigMap, parseConfigMapList, parseWatchEvent } from './configmap-watch.ts';
import { KubeApiError } from './kube-client.ts';

const configMap = (resourceVersion: string, data: Record<string, string> = { v: resourceVersion }, uid = 'uid-1'): ConfigMap => ({
  metadata: { name: 'portcullis-bundle', namespace: 'finance', uid, resourceVersion },
  data,
});

const gone = (): KubeApiError => new KubeApiError('too old resource version', 410, 'Expired');

/** One answer of the fake API server, in the order the watch asks. */
type Step =
  | { list: { resourceVersion: string; item: ConfigMap | undefined } }
  | { listFails: Error }
  /** Events, then the watch ends ('end'), fails, or stays open until stopped ('open'). */
  | { watch: WatchEvent[]; then: 'end' | 'open' | Error };

/** A scripted API server: each list and watch takes the next step; past the script, a watch stays open. */
function scripted(steps: Step[]): { api: ConfigMapApi; calls: string[]; done: Promise<void> } {
  const calls: string[] = [];
  let finish = (): void => undefined;
  const done = new Promise<void>((resolve) => { finish = resolve; });
  const next = (): Step | undefined => {
    const step = steps.shift();
    if (step === undefined) finish();
    return step;
  };
  const untilAborted = (signal: AbortSignal): Promise<void> => new Promise((resolve) => {
    signal.addEventListener('abort', () => { resolve(); }, { once: true });
  });
  return {
    calls,
    done,
    api: {
      list: (namespace, name) => {
        calls.push(`list ${namespace}/${name}`);
        const step = next();
        if (step !== undefined && 'list' in step) return Promise.resolve(step.list);
        if (step !== undefined && 'listFails' in step) return Promise.reject(step.listFails);
        throw new Error(`the script expected ${JSON.stringify(step)}, not a list`);
      },
      watch: async (_namespace, _name, resourceVersion, onEvent, signal) => {
        calls.push(`watch from ${resourceVersion}`);
        const step = next();
        if (step === undefined) return untilAborted(signal);
        if (!('watch' in step)) throw new Error(`the script expected ${JSON.stringify(step)}, not a watch`);
        for (const event of step.watch) onEvent(event);
        if (step.then === 'open') return untilAborted(signal);
        if (step.then instanceof Error) throw step.then;
        return Promise.resolve();
      },
    },
  };
}

interface Run {
  watch: ConfigMapWatch;
  calls: string[];
  changes: (string | undefined)[];
  errors: { message: string; retryInMs: number }[];
  /** The delays waited, in order. */
  waited: number[];
}

/** Follows the script to its end, then stops. Time moves 10 s per look, so no watch looks cut short unless a test says so. */
async function follow(steps: Step[], options: { maxBackoffMs?: number; clock?: () => number } = {}): Promise<Run> {
  const { api, calls, done } = scripted(steps);
  const changes: (string | undefined)[] = [];
  const errors: Run['errors'] = [];
  const waited: number[] = [];
  let time = 0;
  const watch = new ConfigMapWatch({
    api,
    namespace: 'finance',
    name: 'portcullis-bundle',
    onChange: () => { changes.push(watch.current?.metadata.resourceVersion); },
    onError: (error, retryInMs) => { errors.push({ message: error instanceof Error ? error.message : String(error), retryInMs }); },
    minBackoffMs: 500,
    ...(options.maxBackoffMs === undefined ? {} : { maxBackoffMs: options.maxBackoffMs }),
    sleep: (ms) => {
      waited.push(ms);
      return Promise.resolve();
    },
    random: () => 1,
    now: options.clock ?? ((): number => (time += 10_000)),
  });
  await watch.start();
  await done;
  await watch.stop();
  return { watch, calls, changes, errors, waited };
}

describe('following one ConfigMap', () => {
  it('lists it, then watches from the list, applying adds, changes and deletes in order', async () => {
    const run = await follow([
      { list: { resourceVersion: '10', item: undefined } },
      { watch: [{ type: 'ADDED', object: configMap('11') }, { type: 'MODIFIED', object: configMap('12') }, { type: 'DELETED', object: configMap('13') }, { type: 'ADDED', object: configMap('14', {}, 'uid-2') }], then: 'end' },
    ]);
    expect(run.calls).toEqual(['list finance/portcullis-bundle', 'watch from 10', 'watch from 14']);
    // The first list is news even when it finds nothing: the ConfigMap is now known to be absent.
    expect(run.changes).toEqual([undefined, '11', '12', undefined, '14']);
    expect(run.watch.current?.metadata).toEqual({ name: 'portcullis-bundle', namespace: 'finance', uid: 'uid-2', resourceVersion: '14' });
    expect(run.errors).toEqual([]);
  });

  it('watches again from the last event or bookmark when the server ends a watch, without listing again', async () => {
    const run = await follow([
      { list: { resourceVersion: '10', item: configMap('9') } },
      { watch: [{ type: 'MODIFIED', object: configMap('11') }], then: 'end' },
      { watch: [{ type: 'BOOKMARK', resourceVersion: '20' }], then: 'end' },
      { watch: [], then: 'end' },
    ]);
    expect(run.calls).toEqual(['list finance/portcullis-bundle', 'watch from 10', 'watch from 11', 'watch from 20', 'watch from 20']);
    expect(run.changes).toEqual(['9', '11']);
    expect(run.errors).toEqual([]);
  });

  it('lists again at once on 410 Gone, and a list that finds it unchanged is no change', async () => {
    const run = await follow([
      { list: { resourceVersion: '10', item: configMap('9') } },
      { watch: [{ type: 'BOOKMARK', resourceVersion: '15' }], then: 'end' },
      { watch: [{ type: 'ERROR', error: gone() }], then: 'open' },
      { list: { resourceVersion: '90', item: configMap('9') } },
    ]);
    expect(run.calls).toEqual(['list finance/portcullis-bundle', 'watch from 10', 'watch from 15', 'list finance/portcullis-bundle', 'watch from 90']);
    expect(run.changes).toEqual(['9']);
    expect({ errors: run.errors, waited: run.waited }).toEqual({ errors: [], waited: [] });
  });

  it('backs off when a fresh list is Gone at once, rather than listing in a tight loop', async () => {
    const run = await follow([
      { list: { resourceVersion: '10', item: undefined } },
      { watch: [], then: gone() },
      { list: { resourceVersion: '11', item: undefined } },
    ]);
    expect(run.calls).toEqual(['list finance/portcullis-bundle', 'watch from 10', 'list finance/portcullis-bundle', 'watch from 11']);
    expect(run.errors).toEqual([{ message: 'too old resource version', retryInMs: 500 }]);
  });

  it('reports each failure and lists again after a doubling, capped, jittered backoff, reset once a watch delivers', async () => {
    const refused = new KubeApiError('forbidden', 403, 'Forbidden');
    const run = await follow([
      { listFails: refused },
      { listFails: refused },
      { listFails: refused },
      { listFails: refused },
      { list: { resourceVersion: '10', item: configMap('9') } },
      { watch: [{ type: 'MODIFIED', object: configMap('11') }], then: new Error('connection reset') },
      { list: { resourceVersion: '12', item: configMap('11') } },
    ], { maxBackoffMs: 1500 });
    expect(run.errors.map((e) => `${e.message} ${e.retryInMs}`)).toEqual(['forbidden 500', 'forbidden 1000', 'forbidden 1500', 'forbidden 1500', 'connection reset 500']);
    expect(run.waited).toEqual([500, 1000, 1500, 1500, 500]);
    expect(run.changes).toEqual(['9', '11']);
  });

  it('waits a jittered half to whole of the backoff', async () => {
    const { api } = scripted([{ listFails: new Error('refused') }, { list: { resourceVersion: '1', item: undefined } }]);
    const errors: number[] = [];
    const watch = new ConfigMapWatch({
      api, namespace: 'finance', name: 'portcullis-bundle', onChange: () => undefined, onError: (_e, ms) => { errors.push(ms); },
      minBackoffMs: 1000, sleep: () => Promise.resolve(), random: () => 0,
    });
    await watch.start();
    await watch.stop();
    expect(errors[0]).toBe(500);
  });

  it('takes a watch the server ends at once, with no event, as a failure', async () => {
    const run = await follow([
      { list: { resourceVersion: '10', item: undefined } },
      { watch: [], then: 'end' },
      { list: { resourceVersion: '11', item: undefined } },
    ], { clock: () => 0 });
    expect(run.errors).toEqual([{ message: 'the API server ended the watch of ConfigMap finance/portcullis-bundle at once', retryInMs: 500 }]);
  });

  it('refuses an event for another ConfigMap, and lists again', async () => {
    const stranger = { ...configMap('11'), metadata: { ...configMap('11').metadata, name: 'other' } };
    const run = await follow([
      { list: { resourceVersion: '10', item: undefined } },
      { watch: [{ type: 'ADDED', object: stranger }], then: 'open' },
      { list: { resourceVersion: '12', item: undefined } },
    ]);
    expect(run.errors.map((e) => e.message)).toEqual(['a watch of ConfigMap finance/portcullis-bundle sent finance/other']);
    // Only the first list, which found nothing, was news; the stranger and the second list changed nothing.
    expect(run.changes).toEqual([undefined]);
  });

  it('starts without waiting for an API server that fails, and picks the ConfigMap up once it answers', async () => {
    const run = await follow([
      { listFails: new Error('connect ECONNREFUSED 127.0.0.1:6443') },
      { list: { resourceVersion: '10', item: configMap('9') } },
    ]);
    expect(run.watch.current?.metadata.resourceVersion).toBe('9');
  });

  it('is synced once a list has answered, and says so even when the ConfigMap does not exist', async () => {
    const run = await follow([
      { listFails: new Error('connect ECONNREFUSED 127.0.0.1:6443') },
      { list: { resourceVersion: '10', item: undefined } },
    ]);
    expect(run.watch.synced).toBe(true);
    expect(run.watch.current).toBeUndefined();
    expect(run.changes).toEqual([undefined]);
  });
});

describe('what the API server answers', () => {
  it('keeps of a ConfigMap its name, namespace, uid, resourceVersion, data and binaryData', () => {
    const parsed = parseConfigMap({
      apiVersion: 'v1', kind: 'ConfigMap',
      metadata: { name: 'portcullis-bundle', namespace: 'finance', uid: 'u', resourceVersion: '7', labels: { a: 'b' }, managedFields: [{}] },
      data: { 'manifest.json': '{}' }, binaryData: { 'policy.wasm': 'AGFzbQ==' },
    }, 'cm');
    expect(parsed).toEqual({ metadata: { name: 'portcullis-bundle', namespace: 'finance', uid: 'u', resourceVersion: '7' }, data: { 'manifest.json': '{}' }, binaryData: { 'policy.wasm': 'AGFzbQ==' } });
  });

  it.each([
    ['not an object', [], 'cm is not an object'],
    ['no metadata', {}, 'cm.metadata is not an object'],
    ['no resourceVersion', { metadata: { name: 'a', namespace: 'b' } }, 'cm.metadata.resourceVersion is not a non-empty string'],
    ['a uid that is not a string', { metadata: { name: 'a', namespace: 'b', resourceVersion: '1', uid: 1 } }, 'cm.metadata.uid is not a string'],
    ['data that is not a map of strings', { metadata: { name: 'a', namespace: 'b', resourceVersion: '1' }, data: { k: 1 } }, 'cm.data["k"] is not a string'],
    ['binaryData that is a list', { metadata: { name: 'a', namespace: 'b', resourceVersion: '1' }, binaryData: ['x'] }, 'cm.binaryData is not an object'],
  ])('refuses a ConfigMap with %s, naming the field', (_what, value, message) => {
    expect(() => parseConfigMap(value, 'cm')).toThrow(new KubeObjectError(message));
  });

  it('reads a list of the one ConfigMap asked for, and refuses one holding others', () => {
    const item = { metadata: { name: 'portcullis-bundle', namespace: 'finance', resourceVersion: '7' } };
    expect(parseConfigMapList({ metadata: { resourceVersion: '9' }, items: [] }, 'portcullis-bundle', 'list')).toEqual({ resourceVersion: '9', item: undefined });
    expect(parseConfigMapList({ metadata: { resourceVersion: '9' }, items: [item] }, 'portcullis-bundle', 'list').item?.metadata.resourceVersion).toBe('7');
    expect(() => parseConfigMapList({ metadata: { resourceVersion: '9' }, items: [{ ...item, metadata: { ...item.metadata, name: 'x' } }] }, 'portcullis-bundle', 'list')).toThrow('list holds x, asked for portcullis-bundle only');
    expect(() => parseConfigMapList({ metadata: {}, items: [] }, 'portcullis-bundle', 'list')).toThrow('list.metadata.resourceVersion is not a non-empty string');
    expect(() => parseConfigMapList({ metadata: { resourceVersion: '9' } }, 'portcullis-bundle', 'list')).toThrow('list.items is not a list');
  });

  it('reads watch events: objects, bookmarks, and an ERROR as the KubeApiError of its Status', () => {
    const object = { metadata: { name: 'a', namespace: 'b', resourceVersion: '3' } };
    expect(parseWatchEvent({ type: 'MODIFIED', object }, 'e')).toEqual({ type: 'MODIFIED', object: { metadata: { name: 'a', namespace: 'b', resourceVersion: '3' } } });
    expect(parseWatchEvent({ type: 'BOOKMARK', object: { kind: 'ConfigMap', metadata: { resourceVersion: '40' } } }, 'e')).toEqual({ type: 'BOOKMARK', resourceVersion: '40' });
    const error = parseWatchEvent({ type: 'ERROR', object: { kind: 'Status', code: 410, reason: 'Expired', message: 'too old resource version: 3 (40)' } }, 'e');
    expect(error.type === 'ERROR' ? { status: error.error.status, message: error.error.message } : undefined).toEqual({ status: 410, message: 'e: 410 Expired: too old resource version: 3 (40)' });
    expect(() => parseWatchEvent({ type: 'SYNC', object }, 'e')).toThrow('e.type "SYNC" is not ADDED, MODIFIED, DELETED, BOOKMARK or ERROR');
    expect(() => parseWatchEvent({ type: 'ADDED' }, 'e')).toThrow('e.object is not an object');
  });
});
