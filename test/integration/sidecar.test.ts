// The sidecar against the real API server: the in-process operator writes a
// tenant's bundle, a spawned `portcullis sidecar` loads it, and Envoy's own
// ext_authz types (the Go client) and /v1/authorize get the same answers.
import { CoreV1Api } from '@kubernetes/client-node';
import { execFile } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { stringify } from 'yaml';
import type { Operator } from '../../src/operator/operator.ts';
import type { TrackedProcess } from '../harness/cluster.ts';
import { eventually, kubeConfigOf, spawnTracked } from '../harness/cluster.ts';
import { ensureNamespace, freePort, kubectl, REPO_ROOT } from '../harness/control-plane.ts';
import { serviceAccountKubeConfig, startLocalOperator } from '../harness/local-parts.ts';

const execFileAsync = promisify(execFile);
const plane = inject('controlPlane');
const core = kubeConfigOf(plane).makeApiClient(CoreV1Api);
const OPERATOR_NS = 'sidecar-system';
const NS = 'sidecar-finance';
const TENANT = 'sidecar-finance';
const AGENT = 'finance-agent';

let operator: Operator;
let sidecar: TrackedProcess;
let httpBase: string;
let grpcAddress: string;

const apply = async (docs: unknown[]): Promise<void> => {
  await kubectl(plane, ['apply', '--validate=strict', '-f', '-'], { input: docs.map((d) => stringify(d)).join('---\n') });
};

const TOOLS = [
  { name: 'stripe-payments', http: { host: 'payments.tools.svc', port: 8080, actions: [{ name: 'create_payment', method: 'POST', path: '/v1/payments' }] } },
];

/** The payments policy of DESIGN.md; `smallMax` is the bound of small-payments. */
function paymentsPolicy(smallMax: number): unknown {
  return {
    apiVersion: 'portcullis.dev/v1alpha1',
    kind: 'ToolPolicy',
    metadata: { name: 'payments', namespace: NS },
    spec: {
      subjects: { agents: [AGENT], roles: ['payments'] },
      mode: 'enforce',
      tools: TOOLS,
      rules: [
        {
          name: 'small-payments', tool: 'stripe-payments', actions: ['create_payment'], decision: 'allow',
          when: [{ param: 'amount', max: smallMax }, { param: 'currency', oneOf: ['USD', 'EUR'] }, { param: 'account', regex: '^[0-9]{10,12}$' }],
        },
        {
          name: 'over-limit', tool: 'stripe-payments', actions: ['create_payment'], decision: 'approval_needed',
          when: [{ param: 'amount', gt: 5000 }], approval: { approvers: ['group:finance-leads'], ttl: '15m' },
        },
        { name: 'no-coerced-payments', tool: 'stripe-payments', decision: 'deny', when: [{ delegatedBy: ['planner-agent'] }] },
      ],
    },
  };
}

/** The operator runs with config/rbac's permissions, renamed into its own namespace so it leaves other tests' operator alone. */
async function startOperator(): Promise<Operator> {
  await ensureNamespace(plane, OPERATOR_NS);
  const overlay = join(plane.runDir, 'sidecar-rbac');
  await mkdir(overlay, { recursive: true });
  await writeFile(join(overlay, 'kustomization.yaml'), stringify({
    apiVersion: 'kustomize.config.k8s.io/v1beta1', kind: 'Kustomization', namespace: OPERATOR_NS, namePrefix: 'sidecar-',
    resources: [relative(overlay, join(REPO_ROOT, 'config', 'rbac'))],
  }));
  await kubectl(plane, ['apply', '-k', overlay]);
  return startLocalOperator(plane, {
    kubeConfig: await serviceAccountKubeConfig(plane, OPERATOR_NS, 'sidecar-portcullis-operator'),
    namespace: OPERATOR_NS,
    identity: 'sidecar-test-operator',
  });
}

/** A kubeconfig file for the agent's ServiceAccount, which may only read the namespace's ConfigMaps. */
async function agentKubeconfig(): Promise<string> {
  await apply([
    { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: AGENT, namespace: NS } },
    { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'Role', metadata: { name: 'portcullis-sidecar', namespace: NS }, rules: [{ apiGroups: [''], resources: ['configmaps'], verbs: ['get', 'list', 'watch'] }] },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'RoleBinding', metadata: { name: 'portcullis-sidecar', namespace: NS },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'portcullis-sidecar' }, subjects: [{ kind: 'ServiceAccount', name: AGENT, namespace: NS }],
    },
  ]);
  const token = (await kubectl(plane, ['create', 'token', AGENT, '-n', NS, '--duration=2h'])).stdout.trim();
  const path = join(plane.runDir, 'sidecar-agent.kubeconfig');
  await writeFile(path, stringify({
    apiVersion: 'v1', kind: 'Config', 'current-context': 'agent',
    clusters: [{ name: 'local', cluster: { server: plane.server, 'certificate-authority-data': Buffer.from(plane.caCert).toString('base64') } }],
    users: [{ name: 'agent', user: { token } }],
    contexts: [{ name: 'agent', context: { cluster: 'local', user: 'agent' } }],
  }));
  return path;
}

interface Answer { decision: string; enforced: boolean; policy: string | null; rule: string; revision: string; reasons: string[]; decisionId: string; approval?: string }

async function authorize(call: unknown): Promise<{ status: number; body: Answer; header: string | null }> {
  const response = await fetch(`${httpBase}/v1/authorize`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(call) });
  return { status: response.status, body: (await response.json()) as Answer, header: response.headers.get('x-portcullis-decision-id') };
}

interface HeaderOption { header: { key: string; value: string } }
interface CheckResponse {
  status?: { code?: number; message?: string };
  ok_response?: { headers?: HeaderOption[] };
  denied_response?: { status: { code: string }; headers?: HeaderOption[]; body?: string };
}

let requests = 0;
/** Sends a Check through the Go client built from go-control-plane, as Envoy would. */
async function check(request: { method: string; host: string; path: string; headers?: Record<string, string>; body?: string; pack_as_bytes?: boolean }): Promise<CheckResponse> {
  const file = join(plane.runDir, `sidecar-check-${++requests}.json`);
  await writeFile(file, JSON.stringify(request));
  const { stdout } = await execFileAsync(plane.tools.extauthzClient, ['-addr', grpcAddress, '-request', file]);
  return JSON.parse(stdout) as CheckResponse;
}

const headerOf = (headers: HeaderOption[] | undefined, key: string): string | undefined => headers?.find((h) => h.header.key === key)?.header.value;
const paymentRequest = (body: string, packAsBytes = false): Parameters<typeof check>[0] => ({
  method: 'POST', host: 'payments.tools.svc:8080', path: '/v1/payments', headers: { 'content-type': 'application/json' }, body, pack_as_bytes: packAsBytes,
});
const payment = (amount: number, currency = 'USD'): Record<string, unknown> => ({ amount, currency, account: '1234567890' });
const paymentCall = (amount: number, currency = 'USD'): Record<string, unknown> => ({ tool: 'stripe-payments', action: 'create_payment', params: payment(amount, currency) });

async function metric(name: string): Promise<string[]> {
  const text = await (await fetch(`${httpBase}/metrics`)).text();
  return text.split('\n').filter((line) => line.startsWith(name));
}

beforeAll(async () => {
  operator = await startOperator();
  await apply([
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS, labels: { 'portcullis.dev/tenant': TENANT } } },
    { apiVersion: 'portcullis.dev/v1alpha1', kind: 'AgentIdentity', metadata: { name: AGENT, namespace: NS }, spec: { serviceAccountName: AGENT, owner: { name: 'Dana Ruiz', email: 'dana@example.com' }, roles: ['payments'] } },
    paymentsPolicy(5000),
  ]);
  const kubeconfig = await agentKubeconfig();
  const tools = join(plane.runDir, 'sidecar-tools.yaml');
  await writeFile(tools, stringify(TOOLS));
  const [httpPort, grpcPort] = [await freePort(), await freePort()];
  httpBase = `http://127.0.0.1:${httpPort}`;
  grpcAddress = `127.0.0.1:${grpcPort}`;
  sidecar = await spawnTracked(plane, process.execPath, [
    join(REPO_ROOT, 'bin', 'portcullis.js'), 'sidecar', '--kubeconfig', kubeconfig, '--agent', AGENT, '--namespace', NS, '--tenant', TENANT,
    '--tools', tools, '--http-address', `127.0.0.1:${httpPort}`, '--grpc-address', grpcAddress,
  ]);
  await eventually('the sidecar to be ready', async () => ((await fetch(`${httpBase}/readyz`).catch(() => undefined))?.status === 200 ? true : undefined), 60_000);
});

afterAll(async () => {
  await sidecar.kill('SIGTERM');
  await operator.stop();
});

describe('the sidecar', () => {
  it('answers Envoy Check requests with allow, approval_needed and deny as documented', async () => {
    const allowed = await check(paymentRequest(JSON.stringify(payment(4200))));
    expect(allowed.status?.code ?? 0).toBe(0);
    expect(headerOf(allowed.ok_response?.headers, 'x-portcullis-decision')).toBe('allow');
    expect(headerOf(allowed.ok_response?.headers, 'x-portcullis-decision-id')).toMatch(/^[0-9a-f-]{36}$/);

    const packed = await check(paymentRequest(JSON.stringify(payment(4200)), true));
    expect(headerOf(packed.ok_response?.headers, 'x-portcullis-decision')).toBe('allow');

    const approval = await check(paymentRequest(JSON.stringify(payment(50_000))));
    expect(approval.status?.code).toBe(7);
    expect(approval.denied_response?.status.code).toBe('Conflict');
    const approvalBody = JSON.parse(approval.denied_response?.body ?? '{}') as Answer;
    expect(approvalBody).toMatchObject({ decision: 'approval_needed', policy: 'payments', rule: 'over-limit' });
    expect(headerOf(approval.denied_response?.headers, 'x-portcullis-approval')).toBe(approvalBody.approval);

    const denied = await check(paymentRequest(JSON.stringify(payment(10, 'GBP'))));
    expect(denied.denied_response?.status.code).toBe('Forbidden');
    const deniedBody = JSON.parse(denied.denied_response?.body ?? '{}') as Answer;
    expect(deniedBody).toMatchObject({ decision: 'deny', policy: null, rule: 'portcullis:default-deny' });
    expect(deniedBody.decisionId).toBe(headerOf(denied.denied_response?.headers, 'x-portcullis-decision-id'));
  });

  it('denies a Check whose body repeats a key or was truncated, never judging a part of it', async () => {
    const duplicate = await check(paymentRequest('{"amount": 10, "currency": "USD", "account": "1234567890", "amount": 90000}'));
    expect(JSON.parse(duplicate.denied_response?.body ?? '{}')).toMatchObject({ decision: 'deny', rule: 'portcullis:uninspectable-request' });
    const truncated = await check({ ...paymentRequest('{"amount": 10, "currency": "USD", "acc'), pack_as_bytes: true });
    expect(JSON.parse(truncated.denied_response?.body ?? '{}')).toMatchObject({ decision: 'deny', rule: 'portcullis:uninspectable-request' });
  });

  it('gives the same answers on /v1/authorize, under its own agent whatever the caller says', async () => {
    const allowed = await authorize({ ...paymentCall(4200), agent: 'someone-else', delegation: ['planner-agent'] });
    expect(allowed.status).toBe(200);
    expect(allowed.body).toMatchObject({ decision: 'allow', enforced: true, policy: 'payments', rule: 'small-payments' });
    expect(allowed.header).toBe(allowed.body.decisionId);
    const approval = await authorize(paymentCall(50_000));
    expect(approval.body).toMatchObject({ decision: 'approval_needed', rule: 'over-limit' });
    const viaEnvoy = await check(paymentRequest(JSON.stringify(payment(50_000))));
    expect(approval.body.approval).toBe((JSON.parse(viaEnvoy.denied_response?.body ?? '{}') as Answer).approval);
    expect((await authorize(paymentCall(10, 'GBP'))).body).toMatchObject({ decision: 'deny', rule: 'portcullis:default-deny' });
    const malformed = await authorize({ tool: 'stripe-payments', params: 'amount=5' });
    expect(malformed.status).toBe(400);
  });

  it('reports the round-trip time of Check and /v1/authorize (figures, not a pass mark)', async () => {
    const file = join(plane.runDir, 'sidecar-check-timing.json');
    await writeFile(file, JSON.stringify(paymentRequest(JSON.stringify(payment(4200)))));
    const { stdout, stderr } = await execFileAsync(plane.tools.extauthzClient, ['-addr', grpcAddress, '-request', file, '-repeat', '2000']);
    expect(headerOf((JSON.parse(stdout) as CheckResponse).ok_response?.headers, 'x-portcullis-decision')).toBe('allow');
    const times: number[] = [];
    for (let i = 0; i < 1000; i++) {
      const started = performance.now();
      expect((await authorize(paymentCall(4200))).body.decision).toBe('allow');
      times.push(performance.now() - started);
    }
    times.sort((a, b) => a - b);
    const at = (q: number): string => (times[Math.floor(q * (times.length - 1))] ?? 0).toFixed(3);
    console.info(`sidecar: Check over gRPC, one connection: ${stderr.trim()}`);
    console.info(`sidecar: /v1/authorize over HTTP/1.1 keep-alive (fetch): checks=1000 p50=${at(0.5)}ms p99=${at(0.99)}ms`);
  });

  it('answers from a changed rule soon after the change is applied', async () => {
    const before = (await authorize(paymentCall(4200))).body;
    const applied = Date.now();
    await apply([paymentsPolicy(3000)]);
    const after = await eventually('the sidecar to answer from the new revision', async () => {
      const answer = (await authorize(paymentCall(4200))).body;
      return answer.revision !== before.revision ? answer : undefined;
    }, 30_000, 20);
    const delayMs = Date.now() - applied;
    console.info(`sidecar: a rule change reached the sidecar ${delayMs} ms after kubectl apply returned (revision ${before.revision} → ${after.revision})`);
    expect(after).toMatchObject({ decision: 'deny', rule: 'portcullis:default-deny' });
    expect((await metric('portcullis_bundle_revision_sequence'))[0]).toContain(`tenant="${TENANT}"`);
  });

  it('refuses a tampered bundle ConfigMap, counts it, and keeps answering from the last good revision', async () => {
    const good = (await authorize(paymentCall(2000))).body;
    expect(good.decision).toBe('allow');
    const configMap = await core.readNamespacedConfigMap({ name: 'portcullis-bundle', namespace: NS });
    const data = { ...configMap.data };
    // Raise the small-payments bound without re-signing: the digest no longer matches.
    data['data.json'] = (data['data.json'] ?? '').replace('"bound":3000', '"bound":3000000');
    expect(data['data.json']).toContain('"bound":3000000');
    configMap.data = data;
    await core.replaceNamespacedConfigMap({ name: 'portcullis-bundle', namespace: NS, body: configMap });
    const refused = await eventually('the sidecar to count the refusal', async () => {
      const lines = await metric('portcullis_bundle_rejections_total{code="bundle_digest_mismatch"}');
      return lines.length > 0 ? lines : undefined;
    });
    expect(refused[0]).toMatch(/ [1-9]\d*$/);
    const after = (await authorize(paymentCall(2000))).body;
    expect(after).toMatchObject({ decision: 'allow', revision: good.revision });
    expect((await authorize(paymentCall(4200))).body).toMatchObject({ decision: 'deny', revision: good.revision });
  });
});
