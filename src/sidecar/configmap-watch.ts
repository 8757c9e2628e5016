// Follows one named ConfigMap as client-go's reflector follows a resource: list
// it (a field selector on its name, so no other ConfigMap of the namespace is
// ever read), then watch from the list's resourceVersion with bookmarks;
// watch again from where it was when the server ends a watch, list again at
// once on 410 Gone (the resourceVersion is too old to watch from), and list
// again after a jittered, capped exponential backoff on any other failure.
import type { KubeClient } from './kube-client.ts';
import { apiErrorOf, KubeApiError } from './kube-client.ts';

export interface ConfigMap {
  metadata: { name: string; namespace: string; uid?: string; resourceVersion: string };
  data?: Record<string, string>;
  binaryData?: Record<string, string>;
}

export type WatchEvent =
  | { type: 'ADDED' | 'MODIFIED' | 'DELETED'; object: ConfigMap }
  | { type: 'BOOKMARK'; resourceVersion: string }
  /** The watch failed on the server's side (410 Gone: the resourceVersion expired). */
  | { type: 'ERROR'; error: KubeApiError };

/** An answer of the API server that is not what its API promises. */
export class KubeObjectError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KubeObjectError';
  }
}

type Fields = Readonly<Record<string, unknown>>;

function fieldsAt(value: unknown, where: string): Fields {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new KubeObjectError(`${where} is not an object`);
  return value as Fields;
}

function stringAt(fields: Fields, name: string, where: string): string {
  const value = fields[name];
  if (typeof value !== 'string' || value === '') throw new KubeObjectError(`${where}.${name} is not a non-empty string`);
  return value;
}

function stringMapAt(fields: Fields, name: string, where: string): Record<string, string> | undefined {
  const value = fields[name];
  if (value === undefined || value === null) return undefined;
  const map = fieldsAt(value, `${where}.${name}`);
  const strings: Record<string, string> = {};
  for (const [key, entry] of Object.entries(map)) {
    if (typeof entry !== 'string') throw new KubeObjectError(`${where}.${name}[${JSON.stringify(key)}] is not a string`);
    strings[key] = entry;
  }
  return strings;
}

export function parseConfigMap(value: unknown, where: string): ConfigMap {
  const fields = fieldsAt(value, where);
  const metadata = fieldsAt(fields.metadata, `${where}.metadata`);
  const uid = metadata.uid;
  if (uid !== undefined && typeof uid !== 'string') throw new KubeObjectError(`${where}.metadata.uid is not a string`);
  const data = stringMapAt(fields, 'data', where);
  const binaryData = stringMapAt(fields, 'binaryData', where);
  return {
    metadata: {
      name: stringAt(metadata, 'name', `${where}.metadata`),
      namespace: stringAt(metadata, 'namespace', `${where}.metadata`),
      ...(uid === undefined ? {} : { uid }),
      resourceVersion: stringAt(metadata, 'resourceVersion', `${where}.metadata`),
    },
    ...(data === undefined ? {} : { data }),
    ...(binaryData === undefined ? {} : { binaryData }),
  };
}

/** A list asked for one name: its resourceVersion and the ConfigMap, if it exists. */
export function parseConfigMapList(value: unknown, name: string, where: string): { resourceVersion: string; item: ConfigMap | undefined } {
  const fields = fieldsAt(value, where);
  const resourceVersion = stringAt(fieldsAt(fields.metadata, `${where}.metadata`), 'resourceVersion', `${where}.metadata`);
  if (!Array.isArray(fields.items)) throw new KubeObjectError(`${where}.items is not a list`);
  const items = fields.items.map((item: unknown, index) => parseConfigMap(item, `${where}.items[${index}]`));
  const strangers = items.filter((item) => item.metadata.name !== name);
  if (items.length > 1 || strangers.length > 0) throw new KubeObjectError(`${where} holds ${items.map((i) => i.metadata.name).join(', ')}, asked for ${name} only`);
  return { resourceVersion, item: items[0] };
}

const OBJECT_EVENTS = new Set(['ADDED', 'MODIFIED', 'DELETED']);

export function parseWatchEvent(value: unknown, where: string): WatchEvent {
  const fields = fieldsAt(value, where);
  const type = fields.type;
  if (type === 'BOOKMARK') {
    const metadata = fieldsAt(fieldsAt(fields.object, `${where}.object`).metadata, `${where}.object.metadata`);
    return { type, resourceVersion: stringAt(metadata, 'resourceVersion', `${where}.object.metadata`) };
  }
  if (type === 'ERROR') {
    const status = fieldsAt(fields.object, `${where}.object`);
    const code = typeof status.code === 'number' ? status.code : 0;
    return { type, error: apiErrorOf(where, code, status) };
  }
  if (typeof type === 'string' && OBJECT_EVENTS.has(type)) return { type: type as 'ADDED' | 'MODIFIED' | 'DELETED', object: parseConfigMap(fields.object, `${where}.object`) };
  throw new KubeObjectError(`${where}.type ${JSON.stringify(type)} is not ADDED, MODIFIED, DELETED, BOOKMARK or ERROR`);
}

/** What the watch needs of the API server: tests drive it without one. */
export interface ConfigMapApi {
  list(namespace: string, name: string, signal: AbortSignal): Promise<{ resourceVersion: string; item: ConfigMap | undefined }>;
  /** Resolves when the server ends the watch; rejects on any failure. */
  watch(namespace: string, name: string, resourceVersion: string, onEvent: (event: WatchEvent) => void, signal: AbortSignal): Promise<void>;
}

/** A watch lasts 5 to 10 minutes, as client-go's do, so the watches of many pods do not end together. */
function watchSeconds(): number {
  return Math.floor(300 + Math.random() * 300);
}

/** How long past the server's own end of a watch a silent connection is given up. */
const WATCH_GRACE_S = 30;

export function configMapApi(client: KubeClient): ConfigMapApi {
  const path = (namespace: string): string => `/api/v1/namespaces/${encodeURIComponent(namespace)}/configmaps`;
  return {
    async list(namespace, name, signal) {
      const answer = await client.get(path(namespace), { fieldSelector: `metadata.name=${name}` }, signal);
      return parseConfigMapList(answer, name, `the list of ConfigMap ${namespace}/${name}`);
    },
    async watch(namespace, name, resourceVersion, onEvent, signal) {
      const seconds = watchSeconds();
      const where = `a watch event of ConfigMap ${namespace}/${name}`;
      await client.watch(path(namespace), { fieldSelector: `metadata.name=${name}`, resourceVersion, allowWatchBookmarks: true, timeoutSeconds: seconds }, (event) => {
        onEvent(parseWatchEvent(event, where));
      }, { signal, idleTimeoutMs: (seconds + WATCH_GRACE_S) * 1000 });
    },
  };
}

export interface ConfigMapWatchOptions {
  api: ConfigMapApi;
  namespace: string;
  name: string;
  /** Called when the ConfigMap appears, changes or goes; not when a relist finds it as it was. */
  onChange: () => void;
  /** A failure; the ConfigMap is listed again after `retryInMs`. */
  onError: (error: unknown, retryInMs: number) => void;
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** Waits `ms`, or until the signal aborts (tests pass one that does not wait). */
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
  random?: () => number;
  now?: () => number;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

/** A watch that ended sooner than this without an event is a failure, so a server that ends every watch at once is not asked again in a tight loop. */
const SHORTEST_WATCH_MS = 1_000;

export class ConfigMapWatch {
  private object: ConfigMap | undefined;
  private listedOnce = false;
  private readonly options: ConfigMapWatchOptions;
  private readonly controller = new AbortController();
  private running: Promise<void> | undefined;

  constructor(options: ConfigMapWatchOptions) {
    this.options = options;
  }

  /** The ConfigMap as last seen, or undefined when it does not exist (or was not listed yet). */
  get current(): ConfigMap | undefined {
    return this.object;
  }

  /** Whether a list has answered: `current` then says what the API server holds, absent included. */
  get synced(): boolean {
    return this.listedOnce;
  }

  /** Starts following; resolves once the first list has answered or failed (it is retried in the background). */
  start(): Promise<void> {
    return new Promise((resolve) => {
      this.running = this.run(resolve);
    });
  }

  async stop(): Promise<void> {
    this.controller.abort();
    await this.running;
  }

  private async run(listed: () => void): Promise<void> {
    const { api, namespace, name } = this.options;
    const minBackoffMs = this.options.minBackoffMs ?? 500;
    const maxBackoffMs = this.options.maxBackoffMs ?? 30_000;
    const wait = this.options.sleep ?? sleep;
    const random = this.options.random ?? Math.random;
    const now = this.options.now ?? Date.now;
    const signal = this.controller.signal;
    // A function, so the check after each await is not narrowed away.
    const stopped = (): boolean => signal.aborted;
    let backoffMs = minBackoffMs;
    let resourceVersion: string | undefined;
    while (!stopped()) {
      // Whether the watch failed before any event since the last list: a Gone then is not answered by listing at once again.
      let freshList = false;
      try {
        if (resourceVersion === undefined) {
          const list = await api.list(namespace, name, signal);
          // The first answer is news even when the ConfigMap does not exist: that too is now known.
          const first = !this.listedOnce;
          this.listedOnce = true;
          this.apply(list.item, first);
          resourceVersion = list.resourceVersion;
          freshList = true;
          listed();
        }
        const startedAt = now();
        let events = 0;
        await api.watch(namespace, name, resourceVersion, (event) => {
          resourceVersion = this.follow(event);
          events += 1;
          freshList = false;
          backoffMs = minBackoffMs;
        }, signal);
        if (events === 0 && now() - startedAt < SHORTEST_WATCH_MS) throw new KubeObjectError(`the API server ended the watch of ConfigMap ${namespace}/${name} at once`);
        backoffMs = minBackoffMs;
      } catch (error) {
        if (stopped()) break;
        listed();
        resourceVersion = undefined;
        if (error instanceof KubeApiError && error.status === 410 && !freshList) continue;
        const delay = Math.round(backoffMs * (0.5 + random() / 2));
        backoffMs = Math.min(backoffMs * 2, maxBackoffMs);
        this.options.onError(error, delay);
        await wait(delay, signal);
      }
    }
    listed();
  }

  /** Applies one event; the resourceVersion to watch from next. */
  private follow(event: WatchEvent): string {
    switch (event.type) {
      case 'ERROR':
        throw event.error;
      case 'BOOKMARK':
        return event.resourceVersion;
      case 'ADDED':
      case 'MODIFIED':
      case 'DELETED': {
        const { name, namespace } = event.object.metadata;
        if (name !== this.options.name || namespace !== this.options.namespace) throw new KubeObjectError(`a watch of ConfigMap ${this.options.namespace}/${this.options.name} sent ${namespace}/${name}`);
        this.apply(event.type === 'DELETED' ? undefined : event.object);
        return event.object.metadata.resourceVersion;
      }
    }
  }

  private apply(next: ConfigMap | undefined, news = false): void {
    const previous = this.object;
    const same = previous?.metadata.uid === next?.metadata.uid && previous?.metadata.resourceVersion === next?.metadata.resourceVersion;
    if (!news && same && (previous === undefined) === (next === undefined)) return;
    this.object = next;
    this.options.onChange();
  }
}
