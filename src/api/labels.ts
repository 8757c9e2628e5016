// The labels and annotations users and the operator put on Kubernetes objects.

/** On a Namespace: the tenant it belongs to; default: the namespace's own name. */
export const TENANT_LABEL = 'portcullis.dev/tenant';
/** On a Namespace: `enabled` injects every pod (a pod's `portcullis.dev/inject: "false"` opts out). */
export const INJECTION_LABEL = 'portcullis.dev/injection';
/** On a Pod: `"true"` opts it in, `"false"` out. */
export const INJECT_ANNOTATION = 'portcullis.dev/inject';
/** On a Pod, written by the injector: what it injected, and which version. */
export const INJECTED_ANNOTATION = 'portcullis.dev/injected';
