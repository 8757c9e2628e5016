// The operator's serving certificates (the webhook's, the token service's): a
// CA and a serving certificate the operator generates into a Secret (shared by
// every replica) and renews well before expiry, or that renews when the names
// it must carry change. The CA is what clients trust (the webhook
// configurations' caBundle; the sidecars, given it at injection); it lives ten
// years, so a renewal of the serving certificate never changes it. Or, with
// cert-manager, the files of its Secret, mounted into the operator.

import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
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

/** Whether a certificate names every DNS name and IP address of the identity (exactly, no wildcards). Pure. */
export function namesIdentity(servingCertPem: string, identity: ServingIdentity): boolean {
  const cert = new X509Certificate(servingCertPem);
  return identity.dnsNames.every((name) => cert.checkHost(name, { wildcards: false, subject: 'never' }) !== undefined)
    && identity.ips.every((ip) => cert.checkIP(ip) !== undefined);
}

/** What a serving certificate is for: its CA's name and the component label of its Secret. */
export interface ServingPurpose {
  caCommonName: string;
  component: string;
}

export const WEBHOOK_PURPOSE: ServingPurpose = { caCommonName: 'portcullis-webhook-ca', component: 'webhook' };

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

function toSecret(namespace: string, name: string, certs: ServingCerts, component: string, resourceVersion?: string): V1Secret {
  const b64 = (s: string): string => Buffer.from(s).toString('base64');
  return {
    metadata: { name, namespace, ...(resourceVersion ? { resourceVersion } : {}), labels: { 'app.kubernetes.io/name': 'portcullis', 'app.kubernetes.io/component': component } },
    type: 'kubernetes.io/tls',
    data: { 'ca.crt': b64(certs.ca.cert), 'ca.key': b64(certs.ca.key), 'tls.crt': b64(certs.serving.cert), 'tls.key': b64(certs.serving.key) },
  };
}

async function issueServing(ca: Pem, identity: ServingIdentity, now: Date): Promise<Pem> {
  const authority = await loadCertificateAuthority(ca, now);
  return authority.issue({ commonName: identity.dnsNames[0] ?? 'portcullis-webhook', dnsNames: identity.dnsNames, ips: identity.ips, usage: 'server', days: SERVING_DAYS });
}

/**
 * Serving certificates from their Secret: created when missing (a create race
 * is settled by the API server), the serving certificate renewed under the same
 * CA when close to expiry or when it does not name the identity (with the
 * resourceVersion, so two replicas never both win).
 */
export async function ensureServingCerts(core: CoreV1Api, namespace: string, name: string, identity: ServingIdentity, now: Date = new Date(), purpose: ServingPurpose = WEBHOOK_PURPOSE): Promise<ServingCerts> {
  let secret: V1Secret | undefined;
  try {
    secret = await core.readNamespacedSecret({ name, namespace });
  } catch (error) {
    if (apiCode(error) !== 404) throw error;
  }
  const current = secret ? fromSecret(secret) : undefined;
  if (secret && current && !needsRenewal(current.serving.cert, now) && namesIdentity(current.serving.cert, identity)) return current;

  let next: ServingCerts;
  if (current) {
    next = { ca: current.ca, serving: await issueServing(current.ca, identity, now) };
  } else {
    const ca = await createCertificateAuthority(purpose.caCommonName, { days: CA_DAYS, now });
    next = { ca: { cert: ca.cert, key: ca.key }, serving: await issueServing({ cert: ca.cert, key: ca.key }, identity, now) };
  }
  try {
    if (secret) await core.replaceNamespacedSecret({ name, namespace, body: toSecret(namespace, name, next, purpose.component, secret.metadata?.resourceVersion) });
    else await core.createNamespacedSecret({ namespace, body: toSecret(namespace, name, next, purpose.component) });
    return next;
  } catch (error) {
    // Another replica wrote first: use what it wrote.
    if (apiCode(error) !== 409) throw error;
    const winner = fromSecret(await core.readNamespacedSecret({ name, namespace }));
    if (!winner) throw new Error(`Secret ${namespace}/${name} holds no serving certificates`, { cause: error });
    return winner;
  }
}

/** A certificate to serve with and the CA bundle its clients verify it with. */
export interface ServingTlsFiles extends Pem {
  ca: string;
}

/**
 * The serving certificate of a cert-manager Certificate, from its Secret mounted at `dir`
 * (tls.crt, tls.key, ca.crt), read afresh each time since cert-manager renews it in place.
 * ca.crt is required: clients are given it to trust, and no other CA.
 */
export async function mountedServingTls(dir: string): Promise<ServingTlsFiles> {
  const read = async (file: string): Promise<string> => {
    try {
      return await readFile(join(dir, file), 'utf8');
    } catch (error) {
      throw new Error(`${join(dir, file)} cannot be read (${(error as NodeJS.ErrnoException).code ?? String(error)}): mount the Certificate's Secret there, with ${file}`, { cause: error });
    }
  };
  const [cert, key, ca] = await Promise.all([read('tls.crt'), read('tls.key'), read('ca.crt')]);
  if (ca.trim() === '') throw new Error(`${join(dir, 'ca.crt')} is empty: the Certificate's issuer must be a CA issuer, whose CA the clients are given`);
  return { cert, key, ca };
}

/**
 * A CA and a serving certificate held in memory only, for a server whose clients are given the CA
 * by the same program (tests, benchmarks, local runs): nothing is stored, nothing renews.
 */
export async function ephemeralServingTls(identity: ServingIdentity, purpose: ServingPurpose = WEBHOOK_PURPOSE): Promise<ServingTlsFiles> {
  const ca = await createCertificateAuthority(purpose.caCommonName, { days: CA_DAYS });
  const serving = await ca.issue({ commonName: identity.dnsNames[0] ?? identity.ips[0] ?? purpose.component, dnsNames: identity.dnsNames, ips: identity.ips, usage: 'server', days: SERVING_DAYS });
  return { ...serving, ca: ca.cert };
}
