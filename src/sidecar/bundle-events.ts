// Events a sidecar records about the bundles it refuses, on the bundle
// ConfigMap itself, so `kubectl describe configmap portcullis-bundle` and
// `kubectl get events` show why a namespace is still on an older revision.
// One event per refused revision and reason per sidecar: a sidecar that sees
// the same bad bundle again does not flood the namespace.
import type { Logger } from 'pino';

/** Of the refused ConfigMap, what the event names. */
export interface RefusedObject {
  name: string;
  uid?: string;
  resourceVersion?: string;
}

export interface BundleRefusal {
  code: string;
  message: string;
  /** The revision still in force, if any. */
  keeping: string | undefined;
  /** The refused bundle ConfigMap's metadata (undefined when it is the trust that is wrong). */
  bundle: RefusedObject | undefined;
}

/** A core/v1 Event, as the API server takes it. */
export interface CoreV1Event {
  apiVersion: 'v1';
  kind: 'Event';
  metadata: { generateName: string; namespace: string };
  involvedObject: { apiVersion: string; kind: string; namespace: string; name: string; uid?: string; resourceVersion?: string };
  type: 'Normal' | 'Warning';
  reason: string;
  message: string;
  source: { component: string };
  reportingComponent: string;
  reportingInstance: string;
  /** RFC 3339. */
  firstTimestamp: string;
  lastTimestamp: string;
  count: number;
}

export interface BundleEventOptions {
  /** Creates the event in `namespace` (POST /api/v1/namespaces/NAMESPACE/events). */
  createEvent: (namespace: string, event: CoreV1Event) => Promise<unknown>;
  namespace: string;
  /** Who reports: the pod name, so operators can tell sidecars apart. */
  instance: string;
  log: Logger;
  now?: () => Date;
}

const REASON = 'BundleRefused';
const COMPONENT = 'portcullis-sidecar';
/** At most this many refusals remembered; older ones may be reported again. */
const REMEMBERED = 64;

/** Creates events through the API: POST to the namespace's events. */
export function eventCreator(create: (path: string, body: unknown) => Promise<unknown>): BundleEventOptions['createEvent'] {
  return (namespace, event) => create(`/api/v1/namespaces/${encodeURIComponent(namespace)}/events`, event);
}

export class BundleEventRecorder {
  private readonly options: BundleEventOptions;
  private readonly reported = new Set<string>();

  constructor(options: BundleEventOptions) {
    this.options = options;
  }

  /** Records a Warning event for a refusal not reported before; never throws (an event is best effort). */
  async refused(refusal: BundleRefusal): Promise<void> {
    const key = `${refusal.bundle?.resourceVersion ?? ''}/${refusal.code}`;
    if (this.reported.has(key)) return;
    if (this.reported.size >= REMEMBERED) this.reported.clear();
    this.reported.add(key);
    const { namespace, instance } = this.options;
    // Whole seconds: the precision of an Event's timestamps.
    const now = (this.options.now ?? ((): Date => new Date()))().toISOString().replace(/\.\d+Z$/, 'Z');
    const keeping = refusal.keeping === undefined ? 'no bundle is loaded' : `keeping revision ${refusal.keeping}`;
    try {
      await this.options.createEvent(namespace, {
        apiVersion: 'v1',
        kind: 'Event',
        metadata: { generateName: 'portcullis-bundle-refused-', namespace },
        involvedObject: {
          apiVersion: 'v1',
          kind: 'ConfigMap',
          namespace,
          name: refusal.bundle?.name ?? 'portcullis-bundle',
          ...(refusal.bundle?.uid === undefined ? {} : { uid: refusal.bundle.uid }),
          ...(refusal.bundle?.resourceVersion === undefined ? {} : { resourceVersion: refusal.bundle.resourceVersion }),
        },
        type: 'Warning',
        reason: REASON,
        message: `${refusal.code}: ${refusal.message} (${keeping})`.slice(0, 1024),
        source: { component: COMPONENT },
        reportingComponent: COMPONENT,
        reportingInstance: instance,
        firstTimestamp: now,
        lastTimestamp: now,
        count: 1,
      });
    } catch (error) {
      this.options.log.warn({ err: error, code: refusal.code }, 'could not record the bundle refusal as an event');
    }
  }
}
