// Events a sidecar records about the bundles it refuses, on the bundle
// ConfigMap itself, so `kubectl describe configmap portcullis-bundle` and
// `kubectl get events` show why a namespace is still on an older revision.
// One event per refused revision and reason per sidecar: a sidecar that sees
// the same bad bundle again does not flood the namespace.
import type { CoreV1Api, V1ObjectMeta } from '@kubernetes/client-node';
import type { Logger } from 'pino';

export interface BundleRefusal {
  code: string;
  message: string;
  /** The revision still in force, if any. */
  keeping: string | undefined;
  /** The refused bundle ConfigMap's metadata (undefined when it is the trust that is wrong). */
  bundle: V1ObjectMeta | undefined;
}

export interface BundleEventOptions {
  core: Pick<CoreV1Api, 'createNamespacedEvent'>;
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
    const now = (this.options.now ?? ((): Date => new Date()))();
    const keeping = refusal.keeping === undefined ? 'no bundle is loaded' : `keeping revision ${refusal.keeping}`;
    try {
      await this.options.core.createNamespacedEvent({
        namespace,
        body: {
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
        },
      });
    } catch (error) {
      this.options.log.warn({ err: error, code: refusal.code }, 'could not record the bundle refusal as an event');
    }
  }
}
