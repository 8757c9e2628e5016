// The webhook's TLS: a CA and a serving certificate the operator generates into
// a Secret (shared by every replica) and renews well before expiry. The CA is
// what the webhook configurations' caBundle holds; it lives ten years, so a
// renewal of the serving certificate never changes the caBundle.

import type { CoreV1Api, V1Secret } from '@kubernetes/client-node';
import type { Pem } from './certs.ts';
import { certificateNotAfter, createCertificateAuthority, loadCertificateAuthority } from './certs.ts';

export const SERVING_DAYS = 90;
export const CA_DAYS = 3650;
/** A serving certificate is renewed once less than this is left (a third of its life). */
export const RENEW_BEFORE_MS = 30 * 86_400_000;

export interface ServingCerts {
  ca: Pem;
  serving: Pem;
}

export interface ServingIdentity {
  dnsNames: string[];
  ips: string[];
}

/** Whether a serving certificate must be replaced: close to expiry. Pure. */
export function needsRenewal(servingCertPem: string, now: Date, renewBeforeMs = RENEW_BEFORE_MS): boolean {
  return certificateNotAfter(servingCertPem).getTime() - now.getTime() < renewBeforeMs;
}

function apiCode(error: unknown): number | undefined {
  return (error as { code?: number } | null)?.code;
}

function fromSecret(secret: V1Secret): ServingCerts | undefined {
  const data = secret.data ?? {};
  const text = (key: string): string | undefined => (data[key] === undefined ? undefined : Buffer.from(data[key], 'base64').toString('utf8'));
  const [caCert, caKey, cert, key] = [text('ca.crt'), text('ca.key'), text('tls.crt'), text('tls.key')];
  if (!caCert || !caKey || !cert || !key) return undefined;
  return { ca: { cert: caCert, key: caKey }, serving: { cert, key } };
}

function toSecret(namespace: string, name: string, certs: ServingCerts, resourceVersion?: string): V1Secret {
  const b64 = (s: string): string => Buffer.from(s).toString('base64');
  return {
    metadata: { name, namespace, ...(resourceVersion ? { resourceVersion } : {}), labels: { 'app.kubernetes.io/name': 'portcullis', 'app.kubernetes.io/component': 'webhook' } },
    type: 'kubernetes.io/tls',
    data: { 'ca.crt': b64(certs.ca.cert), 'ca.key': b64(certs.ca.key), 'tls.crt': b64(certs.serving.cert), 'tls.key': b64(certs.serving.key) },
  };
}

async function issueServing(ca: Pem, identity: ServingIdentity, now: Date): Promise<Pem> {
  const authority = await loadCertificateAuthority(ca, now);
  return authority.issue({ commonName: identity.dnsNames[0] ?? 'portcullis-webhook', dnsNames: identity.dnsNames, ips: identity.ips, usage: 'server', days: SERVING_DAYS });
}

/**
 * The webhook's certificates from their Secret: created when missing (a create
 * race is settled by the API server), the serving certificate renewed when
 * close to expiry (with the resourceVersion, so two replicas never both win).
 */
export async function ensureServingCerts(core: CoreV1Api, namespace: string, name: string, identity: ServingIdentity, now: Date = new Date()): Promise<ServingCerts> {
  let secret: V1Secret | undefined;
  try {
    secret = await core.readNamespacedSecret({ name, namespace });
  } catch (error) {
    if (apiCode(error) !== 404) throw error;
  }
  const current = secret ? fromSecret(secret) : undefined;
  if (secret && current && !needsRenewal(current.serving.cert, now)) return current;

  let next: ServingCerts;
  if (current) {
    next = { ca: current.ca, serving: await issueServing(current.ca, identity, now) };
  } else {
    const ca = await createCertificateAuthority('portcullis-webhook-ca', { days: CA_DAYS, now });
    next = { ca: { cert: ca.cert, key: ca.key }, serving: await issueServing({ cert: ca.cert, key: ca.key }, identity, now) };
  }
  try {
    if (secret) await core.replaceNamespacedSecret({ name, namespace, body: toSecret(namespace, name, next, secret.metadata?.resourceVersion) });
    else await core.createNamespacedSecret({ namespace, body: toSecret(namespace, name, next) });
    return next;
  } catch (error) {
    // Another replica wrote first: use what it wrote.
    if (apiCode(error) !== 409) throw error;
    const winner = fromSecret(await core.readNamespacedSecret({ name, namespace }));
    if (!winner) throw new Error(`Secret ${namespace}/${name} holds no webhook certificates`, { cause: error });
    return winner;
  }
}
