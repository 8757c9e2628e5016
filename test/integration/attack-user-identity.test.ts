// Attacks on who the user is, and on the fail modes, through a spawned
// `portcullis sidecar` that loads the operator's bundle from the real API
// server. The agent's AgentIdentity trusts user tokens of one issuer, whose
// JWKS an HTTPS server in this process serves (its CA given to the sidecar
// with NODE_EXTRA_CA_CERTS, as a private CA would be in a pod). A userAttribute
// rule holds for a genuine user token; forged ones are refused with the reason;
// a `user` written in the body is nobody. With the counters' Redis killed, a
// read-only action declared fail-open goes through, recorded as such, and a
// write is denied.
import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import type { Server } from 'node:https';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { JWTPayload } from 'jose';
import { exportJWK, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { stringify } from 'yaml';
import type { Operator } from '../../src/operator/operator.ts';
import { createCertificateAuthority } from '../../src/webhook/certs.ts';
import type { TrackedProcess } from '../harness/cluster.ts';
import { eventually, spawnTracked } from '../harness/cluster.ts';
import { ensureNamespace, freePort, kubectl, REPO_ROOT } from '../harness/control-plane.ts';
import { agentKubeconfigFile, startScopedOperator } from '../harness/local-parts.ts';
import type { RedisServer } from '../harness/redis.ts';
import { startRedis } from '../harness/redis.ts';

const execFileAsync = promisify(execFile);
const plane = inject('controlPlane');
const OPERATOR_NS = 'attack-user-system';
const NS = 'attack-user-finance';
const AGENT = 'finance-agent';
const ISSUER = 'https://idp.example.test/';
const AUDIENCE = 'finance-app';
const USER_TOKEN_HEADER = 'x-portcullis-user-token';
const EXPORTS_HOST = 'exports.tools.svc';
const FILES_HOST = 'files.tools.svc';

interface Answer { decision: string; enforced: boolean; policy: string | null; rule: string; reasons: string[]; decisionId: string; failOpen?: string }
interface HeaderOption { header: { key: string; value: string } }
interface CheckResponse {
  status?: { code?: number; message?: string };
  ok_response?: { headers?: HeaderOption[]; headers_to_remove?: string[] };
  denied_response?: { status: { code: string }; headers?: HeaderOption[]; body?: string };
}

let redis: RedisServer;
let operator: Operator;
let jwksServer: Server;
let sidecar: TrackedProcess;
let httpBase: string;
let grpcAddress: string;
let issuerKey: KeyObject;
let attackerKey: KeyObject;

function identity(jwksURL: string): unknown {
  return {
    apiVersion: 'portcullis.dev/v1alpha1',
    kind: 'AgentIdentity',
    metadata: { name: AGENT, namespace: NS },
    spec: {
      serviceAccountName: AGENT,
      owner: { name: 'Dana Ruiz', email: 'dana@example.com' },
      userTokens: { issuer: ISSUER, audiences: [AUDIENCE], jwksURL, algorithms: ['ES256'], claims: { id: 'sub', attributes: { region: 'region' } } },
    },
  };
}

/** DESIGN.md's region rule on an export tool, and a file tool whose reads may fail open and whose deletes may not; both file actions are counted (callsOver), so they need Redis. */
const POLICY = {
  apiVersion: 'portcullis.dev/v1alpha1',
  kind: 'ToolPolicy',
  metadata: { name: 'data', namespace: NS },
  spec: {
    subjects: { agents: [AGENT] },
    mode: 'enforce',
    tools: [
      { name: 'export_customer_data', http: { host: EXPORTS_HOST, actions: [{ name: 'export', method: 'POST', path: '/v1/exports' }] } },
      {
        name: 'files',
        http: {
          host: FILES_HOST,
          actions: [
            { name: 'read', method: 'GET', path: '/files/*', readOnly: true, failOpen: ['counters_unavailable'] },
            { name: 'delete', method: 'DELETE', path: '/files/*' },
          ],
        },
      },
    ],
    rules: [
      { name: 'own-region-export', tool: 'export_customer_data', decision: 'allow', when: [{ param: 'export_size_rows', max: 10000 }, { userAttribute: 'region', equalsParam: 'region' }] },
      { name: 'files-read', tool: 'files', actions: ['read'], decision: 'allow', when: [{ callsOver: { window: '1m', max: 1000 } }] },
      { name: 'files-delete', tool: 'files', actions: ['delete'], decision: 'allow', when: [{ callsOver: { window: '1m', max: 1000 } }] },
    ],
  },
};

const NOW_S = (): number => Math.floor(Date.now() / 1000);
const claims = (overrides: JWTPayload = {}): JWTPayload => ({ iss: ISSUER, aud: AUDIENCE, sub: 'alice', region: 'eu', iat: NOW_S(), exp: NOW_S() + 600, ...overrides });
const sign = (payload: JWTPayload, key: KeyObject = issuerKey, header: Record<string, unknown> = {}): Promise<string> =>
  new SignJWT(payload).setProtectedHeader({ alg: 'ES256', kid: 'idp-1', ...header }).sign(key);
const b64 = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url');

async function authorize(call: unknown, userToken?: string): Promise<Answer> {
  const response = await fetch(`${httpBase}/v1/authorize`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(userToken === undefined ? {} : { [USER_TOKEN_HEADER]: userToken }) },
    body: JSON.stringify(call),
  });
  expect(response.status).toBe(200);
  return (await response.json()) as Answer;
}

let checks = 0;
/** A Check as Envoy sends it, through the Go client built from go-control-plane. */
async function check(request: { method: string; host: string; path: string; headers?: Record<string, string>; body?: string }): Promise<CheckResponse> {
  const file = join(plane.runDir, `attack-user-check-${String(++checks)}.json`);
  await writeFile(file, JSON.stringify(request));
  const { stdout } = await execFileAsync(plane.tools.extauthzClient, ['-addr', grpcAddress, '-request', file]);
  return JSON.parse(stdout) as CheckResponse;
}

const exportCall = (region: string): Record<string, unknown> => ({ tool: 'export_customer_data', action: 'export', params: { export_size_rows: 10, region } });

/** The decision entry the sidecar wrote to its audit trail (standard output) for a decision id. */
function auditEntry(decisionId: string): Record<string, unknown> | undefined {
  for (const line of sidecar.output().split('\n')) {
    if (!line.includes(decisionId)) continue;
    const entry = (JSON.parse(line) as { audit?: Record<string, unknown> }).audit;
    if (entry?.type === 'decision' && entry.decisionId === decisionId) return entry;
  }
  return undefined;
}

beforeAll(async () => {
  issuerKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
  attackerKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
  const publicJwk = { ...(await exportJWK(issuerKey)), kid: 'idp-1', alg: 'ES256', use: 'sig' };
  delete publicJwk.d;
  // The issuer's JWKS over HTTPS, from a CA only the sidecar is told to trust.
  const ca = await createCertificateAuthority('attack-user-idp-ca');
  const serving = await ca.issue({ commonName: '127.0.0.1', ips: ['127.0.0.1'], usage: 'server' });
  const caFile = join(plane.runDir, 'attack-user-idp-ca.pem');
  await writeFile(caFile, ca.cert);
  jwksServer = createServer({ cert: serving.cert, key: serving.key }, (request, response) => {
    if (request.url !== '/jwks.json') {
      response.writeHead(404).end();
      return;
    }
    response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [publicJwk] }));
  });
  await new Promise<void>((resolve) => jwksServer.listen(0, '127.0.0.1', resolve));
  const jwksURL = `https://127.0.0.1:${String((jwksServer.address() as AddressInfo).port)}/jwks.json`;

  redis = await startRedis(plane);
  operator = await startScopedOperator(plane, 'attack-user', OPERATOR_NS);
  await ensureNamespace(plane, NS);
  await kubectl(plane, ['apply', '--validate=strict', '-f', '-'], { input: [identity(jwksURL), POLICY].map((d) => stringify(d)).join('---\n') });
  const kubeconfig = await agentKubeconfigFile(plane, NS, AGENT);
  const [httpPort, grpcPort] = [await freePort(), await freePort()];
  httpBase = `http://127.0.0.1:${String(httpPort)}`;
  grpcAddress = `127.0.0.1:${String(grpcPort)}`;
  sidecar = await spawnTracked(plane, process.execPath, [
    join(REPO_ROOT, 'bin', 'portcullis.js'), 'sidecar', '--kubeconfig', kubeconfig, '--agent', AGENT, '--namespace', NS, '--trust-namespace', OPERATOR_NS,
    '--http-address', `127.0.0.1:${String(httpPort)}`, '--grpc-address', grpcAddress, '--counters', 'redis', '--redis-url', redis.url,
    '--audit-checkpoint-records', '1',
  ], { NODE_EXTRA_CA_CERTS: caFile });
  await eventually('the sidecar to load the bundle', async () => ((await fetch(`${httpBase}/readyz`).catch(() => undefined))?.status === 200 ? true : undefined), 60_000)
    .catch((error: unknown) => { throw new Error(`${String(error)}\nsidecar output:\n${sidecar.output()}`); });
}, 120_000);

afterAll(async () => {
  await sidecar.kill('SIGTERM');
  await operator.stop();
  await redis.stop();
  await new Promise((resolve) => jwksServer.close(resolve));
});

describe('a userAttribute rule and the user token', () => {
  it('holds for the region of a genuine user token, and the audit entry names that user', async () => {
    const answer = await authorize(exportCall('eu'), await sign(claims()));
    expect(answer).toMatchObject({ decision: 'allow', rule: 'own-region-export' });
    expect(answer.reasons).toContain('user.attributes.region "eu" equals params.region "eu"');
    await eventually('the audit entry', () => auditEntry(answer.decisionId));
    expect(auditEntry(answer.decisionId)).toMatchObject({ user: 'alice', rule: 'own-region-export' });
  });

  it('does not hold for another region than the token says', async () => {
    expect(await authorize(exportCall('us'), await sign(claims()))).toMatchObject({ decision: 'deny', rule: 'portcullis:default-deny' });
  });

  it('does not hold without a user token: a call with no token has no user', async () => {
    const answer = await authorize(exportCall('eu'));
    expect(answer).toMatchObject({ decision: 'deny', rule: 'portcullis:default-deny' });
    expect(answer.reasons.join('\n')).toContain('user.attributes.region is missing');
  });

  it('ignores a user written in the body: a caller claiming region eu is nobody', async () => {
    const answer = await authorize({ ...exportCall('eu'), user: { id: 'mallory', attributes: { region: 'eu' } } });
    expect(answer).toMatchObject({ decision: 'deny', rule: 'portcullis:default-deny' });
    expect(answer.reasons.join('\n')).toContain('user.attributes.region is missing');
  });

  it('ignores a user written in the body beside a genuine token: the token says us, the body eu', async () => {
    const answer = await authorize({ ...exportCall('eu'), user: { id: 'mallory', attributes: { region: 'eu' } } }, await sign(claims({ region: 'us' })));
    expect(answer).toMatchObject({ decision: 'deny', rule: 'portcullis:default-deny' });
    await eventually('the audit entry', () => auditEntry(answer.decisionId));
    expect(auditEntry(answer.decisionId)).toMatchObject({ user: 'alice' });
  });

  it.each([
    { name: 'a token signed by the attacker under the issuer\'s key id', token: () => sign(claims(), attackerKey), code: 'user_token_signature_invalid' },
    { name: 'a genuine token whose region was changed', token: async () => { const [h, , s] = (await sign(claims({ region: 'us' }))).split('.'); return `${h ?? ''}.${b64(claims())}.${s ?? ''}`; }, code: 'user_token_signature_invalid' },
    { name: 'an unsigned token (alg none)', token: () => Promise.resolve(`${b64({ alg: 'none', kid: 'idp-1' })}.${b64(claims())}.`), code: 'user_token_algorithm' },
    { name: 'a token of another issuer', token: () => sign(claims({ iss: 'https://evil.example.test/' })), code: 'user_token_issuer' },
    { name: 'a token for another application', token: () => sign(claims({ aud: 'other-app' })), code: 'user_token_audience' },
    { name: 'an expired token', token: () => sign(claims({ exp: NOW_S() - 3600 })), code: 'user_token_expired' },
    { name: 'a token naming a key the issuer does not publish', token: () => sign(claims(), attackerKey, { kid: 'attacker-1' }), code: 'user_token_key_unknown' },
  ])('refuses $name, naming why ($code)', async ({ token, code }) => {
    const answer = await authorize(exportCall('eu'), await token());
    expect(answer).toMatchObject({ decision: 'deny', rule: 'portcullis:untrusted-token' });
    expect(answer.reasons.join('\n')).toContain(`the user token is refused (${code})`);
  });

  it('verifies the user token of a proxied request as Envoy sends it: genuine passes without it, forged is denied', async () => {
    const request = (token: string): Parameters<typeof check>[0] => ({
      method: 'POST', host: EXPORTS_HOST, path: '/v1/exports', headers: { 'content-type': 'application/json', [USER_TOKEN_HEADER]: token }, body: JSON.stringify({ export_size_rows: 10, region: 'eu' }),
    });
    const allowed = await check(request(await sign(claims())));
    expect(allowed.ok_response).toBeDefined();
    // The user token is for the sidecar alone: Envoy removes it before the request goes upstream.
    expect(allowed.ok_response?.headers_to_remove).toEqual([USER_TOKEN_HEADER]);
    const denied = await check(request(await sign(claims(), attackerKey)));
    expect(denied.denied_response?.body).toContain('user_token_signature_invalid');
    expect(JSON.parse(denied.denied_response?.body ?? '{}')).toMatchObject({ decision: 'deny', rule: 'portcullis:untrusted-token' });
  });
});

describe('fail modes with the counters\' Redis down', () => {
  it('lets a read-only fail-open read through, recorded and counted as fail-open, and denies a write', async () => {
    await redis.kill();
    try {
      const read = await authorize({ tool: 'files', action: 'read', params: { path: 'a' } });
      expect(read).toMatchObject({ decision: 'allow', rule: 'portcullis:fail-open', policy: null, failOpen: 'counters_unavailable' });
      expect(read.reasons.join('\n')).toContain('declared failOpen for counters_unavailable');
      const write = await authorize({ tool: 'files', action: 'delete', params: { path: 'a' } });
      expect(write).toMatchObject({ decision: 'deny', rule: 'portcullis:state-unavailable' });
      expect(write).not.toHaveProperty('failOpen');

      // The proxied path maps the same requests to the same actions.
      const proxiedRead = await check({ method: 'GET', host: FILES_HOST, path: '/files/a' });
      expect(proxiedRead.ok_response?.headers?.find((h) => h.header.key === 'x-portcullis-decision')?.header.value).toBe('allow');
      const proxiedWrite = await check({ method: 'DELETE', host: FILES_HOST, path: '/files/a' });
      expect(JSON.parse(proxiedWrite.denied_response?.body ?? '{}')).toMatchObject({ decision: 'deny', rule: 'portcullis:state-unavailable' });

      await eventually('the audit entry of the fail-open read', () => auditEntry(read.decisionId));
      expect(auditEntry(read.decisionId)).toMatchObject({ decision: 'allow', rule: 'portcullis:fail-open', failOpen: 'counters_unavailable', tool: 'files', action: 'read' });
      const metrics = await (await fetch(`${httpBase}/metrics`)).text();
      expect(metrics).toContain('portcullis_fail_open_total{cause="counters_unavailable"} 2');
    } finally {
      await redis.start();
    }
    await eventually('a read to be decided by the policy again', async () => ((await authorize({ tool: 'files', action: 'read', params: { path: 'a' } })).rule === 'files-read' ? true : undefined), 20_000, 100);
  });
});

describe('what the API server refuses', () => {
  const applyDryRun = (doc: unknown): Promise<{ code: number; stderr: string }> =>
    kubectl(plane, ['apply', '--validate=strict', '--dry-run=server', '-f', '-'], { input: stringify(doc), allowFailure: true });
  const withUserTokens = (userTokens: Record<string, unknown>): unknown => {
    const doc = identity('https://idp.example.test/jwks.json') as { spec: { userTokens: Record<string, unknown> } };
    doc.spec.userTokens = userTokens;
    return doc;
  };
  const withFilesAction = (action: Record<string, unknown>): unknown => ({
    ...POLICY,
    metadata: { name: 'writes-open', namespace: NS },
    spec: { ...POLICY.spec, tools: [{ name: 'files', http: { host: FILES_HOST, actions: [action] } }], rules: [] },
  });

  it.each([
    { name: 'a write declared fail-open', doc: () => withFilesAction({ name: 'delete', method: 'DELETE', path: '/files/*', failOpen: ['counters_unavailable'] }), message: 'failOpen goes only with readOnly: true' },
    { name: 'a JWKS fetched over plain http', doc: () => withUserTokens({ issuer: ISSUER, audiences: [AUDIENCE], jwksURL: 'http://idp.example.test/jwks.json' }), message: 'jwksURL' },
    { name: 'user tokens of no audience', doc: () => withUserTokens({ issuer: ISSUER, audiences: [], jwksURL: 'https://idp.example.test/jwks.json' }), message: 'audiences' },
    { name: 'user tokens signed with HS256', doc: () => withUserTokens({ issuer: ISSUER, audiences: [AUDIENCE], jwksURL: 'https://idp.example.test/jwks.json', algorithms: ['HS256'] }), message: 'algorithms' },
    { name: 'both a JWKS URL and inline keys', doc: () => withUserTokens({ issuer: ISSUER, audiences: [AUDIENCE], jwksURL: 'https://idp.example.test/jwks.json', jwks: { keys: [{ kty: 'EC' }] } }), message: 'must state exactly one of jwksURL or jwks' },
  ])('refuses $name', async ({ doc, message }) => {
    const result = await applyDryRun(doc());
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain(message);
  });
});
