// Agent identity at the sidecar, on the real API server: a spawned `portcullis sidecar` running as
// the agent's ServiceAccount (with only the access the operator grants it) exchanges its real
// ServiceAccount token at the token service, sends its agent token upstream on allowed calls,
// turns a forwarded delegated token into the delegation that DESIGN.md's no-coerced-payments
// rule denies, refuses tokens it cannot trust, and honours revokedBefore and suspension.
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { stringify } from 'yaml';
import { INJECTED_ANNOTATION } from '../../src/api/index.ts';
import type { BundleJwks } from '../../src/bundle/index.ts';
import { fromJwks } from '../../src/bundle/index.ts';
import type { RunningTokenService } from '../../src/identity/index.ts';
import { AGENT_TOKEN_AUDIENCE, startTokenService, TokenServiceClient, tokenServiceEndpoint, verifyAgentToken } from '../../src/identity/index.ts';
import { ephemeralServingTls } from '../../src/webhook/serving-certs.ts';
import type { Operator } from '../../src/operator/operator.ts';
import type { TrackedProcess } from '../harness/cluster.ts';
import { eventually, kubeConfigOf, spawnTracked } from '../harness/cluster.ts';
import { ensureNamespace, freePort, kubectl, REPO_ROOT } from '../harness/control-plane.ts';
import { agentKubeconfigFile, startScopedOperator } from '../harness/local-parts.ts';

const execFileAsync = promisify(execFile);
const plane = inject('controlPlane');
const OPERATOR_NS = 'idsc-system';
const NS = 'idsc-finance';
const owner = { name: 'Dana Ruiz', email: 'dana@example.com' };

let operator: Operator;
let tokens: RunningTokenService;
let client: TokenServiceClient;
let sidecar: TrackedProcess;
let httpBase = '';
let grpcAddress = '';
const serviceAccountTokenFile = join(plane.runDir, 'idsc-finance-agent.token');
const auditDir = join(plane.runDir, 'idsc-audit');
const auditFile = join(auditDir, 'decisions.log');
const tokenServiceCaFile = join(plane.runDir, 'idsc-token-service-ca.pem');
const portcullis = join(REPO_ROOT, 'bin', 'portcullis.js');

const apply = async (docs: unknown[]): Promise<void> => {
  await kubectl(plane, ['apply', '-f', '-'], { input: docs.map((d) => stringify(d)).join('---\n') });
};
const agent = (name: string, extra: Record<string, unknown> = {}): unknown => ({
  apiVersion: 'portcullis.dev/v1alpha1', kind: 'AgentIdentity', metadata: { name, namespace: NS }, spec: { serviceAccountName: name, owner, ...extra },
});

/** A ServiceAccount token bound to a pod of the ServiceAccount (by default its first), as the kubelet projects it. */
async function serviceAccountToken(name: string, pod = `${name}-0`): Promise<string> {
  return (await kubectl(plane, ['create', 'token', name, '-n', NS, '--audience', 'portcullis', '--duration', '1h', '--bound-object-kind', 'Pod', '--bound-object-name', pod])).stdout.trim();
}

async function exchange(serviceAccountJwt: string, body: Record<string, string> = {}): Promise<string> {
  const res = await client.request('POST', '/v1/token', { authorization: `Bearer ${serviceAccountJwt}` }, body);
  const answer = res.body as { access_token?: string; error?: string };
  if (answer.access_token === undefined) throw new Error(`exchange failed: ${String(res.status)} ${answer.error ?? ''}`);
  return answer.access_token;
}

interface HeaderOption { header: { key: string; value: string } }
interface CheckResponse { status?: { code?: number }; ok_response?: { headers?: HeaderOption[] }; denied_response?: { body?: string } }
interface Answer { decision: string; rule: string; reasons: string[] }

let requests = 0;
async function check(headers: Record<string, string> = {}, amount = 4200): Promise<CheckResponse> {
  const body = JSON.stringify({ amount, currency: 'USD', account: '1234567890' });
  const file = join(plane.runDir, `idsc-check-${String(++requests)}.json`);
  await writeFile(file, JSON.stringify({ method: 'POST', host: 'payments.tools.svc:8080', path: '/v1/payments', headers: { 'content-type': 'application/json', ...headers }, body }));
  const { stdout } = await execFileAsync(plane.tools.extauthzClient, ['-addr', grpcAddress, '-request', file]);
  return JSON.parse(stdout) as CheckResponse;
}

const denial = (response: CheckResponse): Answer => JSON.parse(response.denied_response?.body ?? '{}') as Answer;
const headerOf = (response: CheckResponse, key: string): string | undefined => response.ok_response?.headers?.find((h) => h.header.key === key)?.header.value;

async function authorize(headers: Record<string, string> = {}): Promise<Answer> {
  const res = await fetch(`${httpBase}/v1/authorize`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ tool: 'stripe-payments', action: 'create_payment', params: { amount: 4200, currency: 'USD', account: '1234567890' } }),
  });
  return (await res.json()) as Answer;
}

beforeAll(async () => {
  await ensureNamespace(plane, OPERATOR_NS);
  await apply([
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } },
    ...['finance-agent', 'planner-agent', 'ops-agent'].map((name) => ({ apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name, namespace: NS } })),
    // The agents' pods, annotated as injection leaves them (no scheduler runs: they stay Pending); finance-agent-0 is the sidecar's.
    ...['finance-agent-0', 'finance-agent-1', 'planner-agent-0', 'ops-agent-0'].map((name) => ({
      apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: NS, annotations: { [INJECTED_ANNOTATION]: '{}' } },
      spec: { serviceAccountName: name.replace(/-[0-9]+$/, ''), automountServiceAccountToken: false, containers: [{ name: 'agent', image: 'example.com/agent:1' }] },
    })),
    agent('finance-agent', { roles: ['payments'] }),
    agent('planner-agent'),
    agent('ops-agent'),
    {
      apiVersion: 'portcullis.dev/v1alpha1', kind: 'ToolPolicy', metadata: { name: 'payments', namespace: NS },
      spec: {
        subjects: { agents: ['finance-agent'] },
        tools: [{ name: 'stripe-payments', http: { host: 'payments.tools.svc', port: 8080, actions: [{ name: 'create_payment', method: 'POST', path: '/v1/payments' }] } }],
        rules: [
          { name: 'small-payments', tool: 'stripe-payments', actions: ['create_payment'], decision: 'allow', when: [{ param: 'amount', max: 5000 }] },
          { name: 'no-coerced-payments', tool: 'stripe-payments', decision: 'deny', when: [{ delegatedBy: ['planner-agent'] }] },
        ],
      },
    },
  ]);
  const admin = kubeConfigOf(plane);
  operator = await startScopedOperator(plane, 'idsc', OPERATOR_NS);
  const tls = await ephemeralServingTls({ dnsNames: ['localhost'], ips: ['127.0.0.1'] });
  tokens = await startTokenService({ kubeConfig: admin, namespace: OPERATOR_NS, host: '127.0.0.1', port: 0, log: pino({ level: 'silent' }), rateLimit: { perSecond: 100, burst: 100 }, statusIntervalMs: 0, tls: () => Promise.resolve(tls) });
  client = new TokenServiceClient(tokenServiceEndpoint(tokens.url, { ca: tls.ca }));
  await writeFile(tokenServiceCaFile, tls.ca);
  await writeFile(serviceAccountTokenFile, await serviceAccountToken('finance-agent'));

  // The sidecar's own API credentials: the agent's ServiceAccount, with what the operator grants it.
  const kubeconfig = await agentKubeconfigFile(plane, NS, 'finance-agent');
  await execFileAsync(process.execPath, [portcullis, 'audit', 'keygen', '--out', auditDir]);
  const httpPort = await freePort();
  const grpcPort = await freePort();
  httpBase = `http://127.0.0.1:${String(httpPort)}`;
  grpcAddress = `127.0.0.1:${String(grpcPort)}`;
  sidecar = await spawnTracked(plane, process.execPath, [
    join(REPO_ROOT, 'bin', 'portcullis.js'), 'sidecar', '--agent', 'finance-agent', '--namespace', NS, '--trust-namespace', OPERATOR_NS,
    '--http-address', `127.0.0.1:${String(httpPort)}`, '--grpc-address', grpcAddress, '--kubeconfig', kubeconfig,
    '--token-service', tokens.url, '--token-service-ca', tokenServiceCaFile, '--token-issuer', tokens.service.issuer, '--service-account-token', serviceAccountTokenFile,
    '--audit-file', auditFile, '--audit-key', join(auditDir, 'audit-key.pem'),
    '--shutdown-delay', '10ms', '--log-level', 'warn',
  ], { POD_NAME: 'finance-agent-0' });
  await eventually('the sidecar to be ready (bundle loaded, agent token held)', async () => ((await fetch(`${httpBase}/readyz`).catch(() => undefined))?.status === 200 ? true : undefined), 30_000);
});

afterAll(async () => {
  await (sidecar as TrackedProcess | undefined)?.kill('SIGTERM');
  (client as TokenServiceClient | undefined)?.close();
  await (tokens as RunningTokenService | undefined)?.stop();
  await (operator as Operator | undefined)?.stop();
});

describe('agent identity at the sidecar', () => {
  it('sends its own agent token upstream on an allowed call, and the tool can verify it against the JWKS', async () => {
    const response = await check();
    expect(response.status?.code ?? 0).toBe(0);
    const token = headerOf(response, 'x-portcullis-agent-token');
    expect(token).toBeDefined();
    const jwks = (await client.request('GET', '/.well-known/jwks.json')).body as BundleJwks;
    const verified = await verifyAgentToken(token ?? '', { issuer: tokens.service.issuer, audience: AGENT_TOKEN_AUDIENCE, keys: await fromJwks(jwks), tenant: NS });
    expect({ sub: verified.claims.sub, agent: verified.claims.agent_id, delegation: verified.delegation }).toEqual({ sub: `agent:${NS}:finance-agent`, agent: 'finance-agent', delegation: [] });
  });

  it("turns a planner's token delegated to the finance agent into delegation, which no-coerced-payments denies on both paths", async () => {
    const planner = await exchange(await serviceAccountToken('planner-agent'));
    const delegated = await exchange(await serviceAccountToken('finance-agent'), { subject_token: planner });
    const response = await check({ 'x-portcullis-agent-token': delegated });
    expect(denial(response)).toMatchObject({ decision: 'deny', rule: 'no-coerced-payments' });
    expect(await authorize({ 'x-portcullis-agent-token': delegated })).toMatchObject({ decision: 'deny', rule: 'no-coerced-payments' });
  });

  it('refuses a forwarded token that names another agent as the actor, or does not verify', async () => {
    const planner = await exchange(await serviceAccountToken('planner-agent'));
    const notOurs = denial(await check({ 'x-portcullis-agent-token': planner }));
    expect(notOurs).toMatchObject({ decision: 'deny', rule: 'portcullis:untrusted-token' });
    expect(notOurs.reasons[0]).toMatch(/is for agent:idsc-finance:planner-agent to act, not for this agent/);
    const [header = '', payload = ''] = planner.split('.');
    const tampered = `${header}.${payload}.${Buffer.from('not the signature').toString('base64url')}`;
    expect((await authorize({ 'x-portcullis-agent-token': tampered })).reasons[0]).toMatch(/token_signature_invalid|signature/);
  });

  it('refuses a forwarded token the finance agent exchanged in another of its pods', async () => {
    const planner = await exchange(await serviceAccountToken('planner-agent'));
    const elsewhere = await exchange(await serviceAccountToken('finance-agent', 'finance-agent-1'), { subject_token: planner });
    const refused = await authorize({ 'x-portcullis-agent-token': elsewhere });
    expect(refused).toMatchObject({ decision: 'deny', rule: 'portcullis:untrusted-token' });
    expect(refused.reasons[0]).toMatch(/to act from pod finance-agent-1, not from this pod \(finance-agent-0\)/);
  });

  it('refuses a forwarded token of an agent suspended since, through the bundle', async () => {
    const ops = await exchange(await serviceAccountToken('ops-agent'));
    const delegated = await exchange(await serviceAccountToken('finance-agent'), { subject_token: ops });
    expect(await authorize({ 'x-portcullis-agent-token': delegated })).toMatchObject({ decision: 'allow' });
    await kubectl(plane, ['patch', 'agentidentity', 'ops-agent', '-n', NS, '--type=merge', '-p', '{"spec":{"suspended":true}}']);
    const refused = await eventually('the suspension to reach the sidecar', async () => {
      const answer = await authorize({ 'x-portcullis-agent-token': delegated });
      return answer.rule === 'portcullis:untrusted-token' ? answer : undefined;
    });
    expect(refused.reasons[0]).toMatch(/agent:idsc-finance:ops-agent, which is suspended/);
  });

  it('refuses every call once its own token is revoked, until a token issued after revokedBefore is held', async () => {
    expect((await authorize()).decision).toBe('allow');
    // A whole second: tokens carry iat in whole seconds, so one issued after it is never read as before it.
    const revokedAt = Math.ceil(Date.now() / 1000) * 1000 + 1000;
    const revokedBefore = new Date(revokedAt).toISOString();
    await kubectl(plane, ['patch', 'agentidentity', 'finance-agent', '-n', NS, '--type=merge', '-p', JSON.stringify({ spec: { revokedBefore } })]);
    const refused = await eventually('the revocation to reach the sidecar', async () => {
      const answer = await authorize();
      return answer.rule === 'portcullis:untrusted-token' ? answer : undefined;
    });
    expect(refused.reasons[0]).toMatch(/are revoked/);
    // The ServiceAccount token on file predates the revocation too: the token service refuses it.
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, revokedAt + 100 - Date.now())));
    expect((await authorize()).rule).toBe('portcullis:untrusted-token');
    // The kubelet rotates the projected token; the sidecar reads it afresh at its next exchange.
    await writeFile(serviceAccountTokenFile, await serviceAccountToken('finance-agent'));
    const recovered = await eventually('the sidecar to hold a token issued after revokedBefore', async () => {
      const answer = await authorize();
      // Thrown, so a timeout names the last refusal and the sidecar's own account of its token exchanges.
      if (answer.decision !== 'allow') throw new Error(`${answer.reasons.join('; ')}; sidecar log: ${sidecar.output().split('\n').filter((l) => l.includes('token')).slice(-3).join(' | ')}`);
      return answer;
    });
    expect(recovered.rule).toBe('small-payments');
  });

  it('is ready with a bundle and a token, exits cleanly after draining on SIGTERM, and leaves an audit trail that verifies', async () => {
    expect((await fetch(`${httpBase}/readyz`)).status).toBe(200);
    await sidecar.kill('SIGTERM');
    expect(await sidecar.exited).toBe(0);
    const { stdout } = await execFileAsync(process.execPath, [portcullis, 'audit', 'verify', auditFile, '--key', join(auditDir, 'audit-key.pub.pem'), '--json']);
    const report = JSON.parse(stdout) as { verdict: string; lines: { audit: number } };
    expect(report.verdict).toBe('verified');
    expect(report.lines.audit).toBeGreaterThan(10);
    // Each entry names the deciding rule and never the parameters themselves.
    const log = await readFile(auditFile, 'utf8');
    const rules = log.split('\n').filter(Boolean).map((line) => (JSON.parse(line) as { audit?: { type?: string; rule?: string } }).audit).filter((a) => a?.type === 'decision').map((a) => a?.rule);
    expect(rules).toEqual(expect.arrayContaining(['small-payments', 'no-coerced-payments', 'portcullis:untrusted-token']));
    expect(log).not.toContain('1234567890');
  });
});
