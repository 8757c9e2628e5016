// X.509 for Portcullis: a CA and the certificates it issues (the webhook's
// serving certificate; in tests, the API server's and an admin's), and the
// service-account signing key of the test control plane. @peculiar/x509 over
// WebCrypto does the X.509 work.

// @peculiar/x509 resolves its ASN.1 handlers through tsyringe, which needs the
// Reflect metadata API before it loads.
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';

type CryptoKey = webcrypto.CryptoKey;
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto);

const EC_P256 = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGNING = { name: 'ECDSA', hash: 'SHA-256' } as const;

export interface Pem {
  cert: string;
  key: string;
}

async function privateKeyPem(key: CryptoKey): Promise<string> {
  const der = await webcrypto.subtle.exportKey('pkcs8', key);
  return x509.PemConverter.encode(der, 'PRIVATE KEY');
}

function serial(): string {
  // A positive 16-byte serial number, as RFC 5280 asks.
  const bytes = webcrypto.getRandomValues(new Uint8Array(16));
  bytes[0] = (bytes[0] ?? 0) & 0x7f;
  return Buffer.from(bytes).toString('hex');
}

function validity(days: number, now: Date): { notBefore: Date; notAfter: Date } {
  // A minute of slack for clocks that are a little behind.
  const notBefore = new Date(now.getTime() - 60_000);
  return { notBefore, notAfter: new Date(notBefore.getTime() + days * 86_400_000) };
}

export interface IssueOptions {
  commonName: string;
  organizations?: string[];
  dnsNames?: string[];
  ips?: string[];
  usage: 'server' | 'client';
  /** Days of validity (default 30). */
  days?: number;
}

export interface CertificateAuthority extends Pem {
  issue(options: IssueOptions): Promise<Pem>;
}

export async function createCertificateAuthority(commonName: string, options: { days?: number; now?: Date } = {}): Promise<CertificateAuthority> {
  const now = options.now ?? new Date();
  const keys = await webcrypto.subtle.generateKey(EC_P256, true, ['sign', 'verify']);
  const caCert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=${commonName}`,
    ...validity(options.days ?? 365, now),
    keys,
    signingAlgorithm: SIGNING,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return signerOf(caCert, keys.privateKey, now);
}

/** A CA loaded back from its PEM certificate and PKCS#8 key (e.g. from a Secret). */
export async function loadCertificateAuthority(pem: Pem, now: Date = new Date()): Promise<CertificateAuthority> {
  const caCert = new x509.X509Certificate(pem.cert);
  const der = x509.PemConverter.decode(pem.key)[0];
  if (der === undefined) throw new Error('the CA key is not PEM');
  const privateKey = await webcrypto.subtle.importKey('pkcs8', der, EC_P256, true, ['sign']);
  return signerOf(caCert, privateKey, now);
}

/** When a PEM certificate stops being valid. */
export function certificateNotAfter(certPem: string): Date {
  return new x509.X509Certificate(certPem).notAfter;
}

async function signerOf(caCert: x509.X509Certificate, caKey: CryptoKey, now: Date): Promise<CertificateAuthority> {
  const caPem = { cert: caCert.toString('pem'), key: await privateKeyPem(caKey) };
  return {
    ...caPem,
    async issue({ commonName: cn, organizations = [], dnsNames = [], ips = [], usage, days = 30 }): Promise<Pem> {
      const leafKeys = await webcrypto.subtle.generateKey(EC_P256, true, ['sign', 'verify']);
      const subject = [`CN=${cn}`, ...organizations.map((o) => `O=${o}`)].join(', ');
      const names = [
        ...dnsNames.map((value) => ({ type: 'dns' as const, value })),
        ...ips.map((value) => ({ type: 'ip' as const, value })),
      ];
      const cert = await x509.X509CertificateGenerator.create({
        serialNumber: serial(),
        subject,
        issuer: caCert.subject,
        ...validity(days, now),
        publicKey: leafKeys.publicKey,
        signingKey: caKey,
        signingAlgorithm: SIGNING,
        extensions: [
          new x509.BasicConstraintsExtension(false, undefined, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
          new x509.ExtendedKeyUsageExtension([
            usage === 'server' ? x509.ExtendedKeyUsage.serverAuth : x509.ExtendedKeyUsage.clientAuth,
          ]),
          await x509.AuthorityKeyIdentifierExtension.create(caCert),
          ...(names.length > 0 ? [new x509.SubjectAlternativeNameExtension(names)] : []),
        ],
      });
      return { cert: cert.toString('pem'), key: await privateKeyPem(leafKeys.privateKey) };
    },
  };
}

/** An ECDSA key pair for signing service-account tokens: private (PKCS#8) and public (SPKI) PEM. */
export async function createServiceAccountSigningKey(): Promise<{ privateKey: string; publicKey: string }> {
  const keys = await webcrypto.subtle.generateKey(EC_P256, true, ['sign', 'verify']);
  const spki = await webcrypto.subtle.exportKey('spki', keys.publicKey);
  return { privateKey: await privateKeyPem(keys.privateKey), publicKey: x509.PemConverter.encode(spki, 'PUBLIC KEY') };
}
