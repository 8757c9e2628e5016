// Agent tokens against a tenant's own RBAC, on the real API server: a user holding what the default
// `edit` role grants on pods and `serviceaccounts/token` mints the agent's ServiceAccount tokens
// with `kubectl create token` (bound to no pod, or bound to a pod of its own making) and presents
// them at the token service, which runs with exactly the operator's RBAC (config/rbac): the real
// TokenReview and the real pod lookup. Only a token bound to an existing, unfinished, injected pod
// of the agent's ServiceAccount is exchanged, the agent token names that pod, and no agent acts
// for itself. A spawned `portcullis sidecar` given the agent's unbound token as its projected token
// holds no agent token, and gets one once the token on file is bound to its pod.
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { mkdir, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { stringify } from 'yaml';
import { INJECTED_ANNOTATION } from '../../src/api/labels.ts';
import { tokenServiceHandler } from '../../src/identity/http.ts';
import { loadTokenKeyring, newTokenKey } from '../../src/identity/keyring.ts';
import { InformerAgentDirectory, podLookup, tokenReviewer } from '../../src/identity/kubernetes.ts';
import { AGENT_TOKEN_AUDIENCE, TokenService } from '../../src/identity/token-service.ts';
import type { AgentTokenClaims } from '../../src/identity/tokens.ts';
import { verifyAgentToken } from '../../src/identity/tokens.ts';
import { ephemeralServingTls } from '../../src/webhook/serving-certs.ts';
import type { TrackedProcess } from '../harness/cluster.ts';
import { eventually, spawnTracked } from '../harness/cluster.ts';
import { ensureNamespace, freePort, kubectl, REPO_ROOT } from '../harness/control-plane.ts';
import { serviceAccountKubeConfig } from '../harness/local-parts.ts';

const plane = inject('controlPlane');
const OPERATOR_NS = 'agent-token-attack-system';
const NS = 'agent-token-attack';
const PREFIX = 'agenttokens';
const ATTACKER = 'mallory';
const AS_ATTACKER = `--as=system:serviceaccount:${NS}:${ATTACKER}`;
const owner = { name: 'Dana Ruiz', email: 'dana@example.com' };
const ISSUER = 'https://portcullis-tokens.agent-token-attack-system.svc:8443';
const keyring = await loadTokenKeyring({ keys: [{ ...(await newTokenKey(new Date(Date.now() - 60_000))), activatesAt: new Date(Date.now() - 60_000).toISOString() }] });

let server: Server;
let url = '';
/** The same token service over TLS, as sidecars reach it. */
let tlsServer: Server;
let tlsUrl = '';
let tokenServiceCaFile = '';
let sidecar: TrackedProcess | undefined;
let agents: InformerAgentDirectory;
/** The uid of finance-agent-0, the agent's injected pod. */
let financePodUid = '';

const apply = async (docs: unknown[]): Promise<void> => {
  await kubectl(plane, ['apply', '-f', '-'], { input: docs.map((d) => stringify(d)).join('---\n') });
};

/** A pod of a ServiceAccount, as the attacker writes it; `injected` adds the annotation injection records. No scheduler runs: it stays Pending. */
async function createPod(name: string, serviceAccount: string, options: { injected?: boolean; finalizer?: boolean } = {}): Promise<string> {
  const pod = {
    apiVersion: 'v1', kind: 'Pod',
    metadata: {
      name, namespace: NS,
      ...(options.injected === true ? { annotations: { [INJECTED_ANNOTATION]: JSON.stringify({ version: '0.1.0', tenant: NS, containers: ['portcullis-authz', 'portcullis-envoy'], native: true }) } } : {}),
      ...(options.finalizer === true ? { finalizers: ['example.com/hold'] } : {}),
    },
    spec: { serviceAccountName: serviceAccount, automountServiceAccountToken: false, containers: [{ name: 'agent', image: 'example.com/agent:1' }] },
  };
  await kubectl(plane, ['create', '-f', '-', AS_ATTACKER], { input: stringify(pod) });
  return (await kubectl(plane, ['get', 'pod', name, '-n', NS, '-o', 'jsonpath={.metadata.uid}'])).stdout.trim();
}

/** `kubectl create token` as the attacker, for audience portcullis, bound to a pod when one is named. */
async function attackerToken(serviceAccount: string, pod?: string): Promise<string> {
  const bound = pod === undefined ? [] : ['--bound-object-kind', 'Pod', '--bound-object-name', pod];
  return (await kubectl(plane, ['create', 'token', serviceAccount, '-n', NS, '--audience', 'portcullis', '--duration', '10m', ...bound, AS_ATTACKER])).stdout.trim();
}

interface Answer { status: number; body: { access_token?: string; error?: string; message?: string } }

async function exchange(serviceAccountToken: string, body: Record<string, string> = {}): Promise<Answer> {
  const res = await fetch(`${url}/v1/token`, { method: 'POST', headers: { authorization: `Bearer ${serviceAccountToken}` }, body: JSON.stringify(body) });
  return { status: res.status, body: (await res.json()) as Answer['body'] };
}

async function claimsOf(token: string | undefined): Promise<AgentTokenClaims> {
  return (await verifyAgentToken(token ?? '', { issuer: ISSUER, audience: AGENT_TOKEN_AUDIENCE, keys: keyring.publicKeys, tenant: NS })).claims;
}

beforeAll(async () => {
  await ensureNamespace(plane, OPERATOR_NS);
  await ensureNamespace(plane, NS);
  // The operator's RBAC exactly as config/rbac has it, renamed into this file's namespace.
  const overlay = join(plane.runDir, `${PREFIX}-rbac`);
  await mkdir(overlay, { recursive: true });
  await writeFile(join(overlay, 'kustomization.yaml'), stringify({
    apiVersion: 'kustomize.config.k8s.io/v1beta1', kind: 'Kustomization', namespace: OPERATOR_NS, namePrefix: `${PREFIX}-`,
    resources: [relative(overlay, join(REPO_ROOT, 'config', 'rbac'))],
  }));
  await kubectl(plane, ['apply', '-k', overlay]);
  await apply([
    ...['finance-agent', 'planner-agent', ATTACKER].map((name) => ({ apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name, namespace: NS } })),
    ...['finance-agent', 'planner-agent'].map((name) => ({
      apiVersion: 'portcullis.dev/v1alpha1', kind: 'AgentIdentity', metadata: { name, namespace: NS }, spec: { serviceAccountName: name, owner, tokenTTL: '5m' },
    })),
    // What the default `edit` ClusterRole grants on these resources in the tenant namespace.
    {
      apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'Role', metadata: { name: 'edit-pods-and-tokens', namespace: NS },
      rules: [
        { apiGroups: [''], resources: ['pods'], verbs: ['create', 'delete', 'deletecollection', 'patch', 'update', 'get', 'list', 'watch'] },
        { apiGroups: [''], resources: ['serviceaccounts/token'], verbs: ['create'] },
      ],
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'RoleBinding', metadata: { name: `${ATTACKER}-edit`, namespace: NS },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'edit-pods-and-tokens' },
      subjects: [{ kind: 'ServiceAccount', name: ATTACKER, namespace: NS }],
    },
  ]);
  financePodUid = await createPod('finance-agent-0', 'finance-agent', { injected: true });
  await createPod('planner-agent-0', 'planner-agent', { injected: true });
  const operatorConfig = await serviceAccountKubeConfig(plane, OPERATOR_NS, `${PREFIX}-portcullis-operator`);
  const log = pino({ level: process.env.PORTCULLIS_TEST_LOG ?? 'silent' });
  agents = new InformerAgentDirectory(operatorConfig, log);
  await agents.start();
  const service = new TokenService({
    issuer: ISSUER,
    reviewToken: tokenReviewer(operatorConfig),
    lookupPod: podLookup(operatorConfig),
    agents,
    keyring: () => keyring,
  });
  server = createServer(tokenServiceHandler(service, log));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${String((server.address() as AddressInfo).port)}`;
  const tls = await ephemeralServingTls({ dnsNames: ['localhost'], ips: ['127.0.0.1'] });
  tlsServer = createTlsServer({ cert: tls.cert, key: tls.key }, tokenServiceHandler(service, log));
  await new Promise<void>((resolve) => tlsServer.listen(0, '127.0.0.1', resolve));
  tlsUrl = `https://127.0.0.1:${String((tlsServer.address() as AddressInfo).port)}`;
  tokenServiceCaFile = join(plane.runDir, `${PREFIX}-token-service-ca.pem`);
  await writeFile(tokenServiceCaFile, tls.ca);
  await eventually('the token service to know both agents', () => (agents.get(NS, 'finance-agent') && agents.get(NS, 'planner-agent') ? true : undefined));
}, 60_000);

afterAll(async () => {
  await sidecar?.kill('SIGTERM');
  for (const listening of [server, tlsServer]) await new Promise<void>((resolve) => { listening.close(() => { resolve(); }); listening.closeAllConnections(); });
  await agents.stop();
});

describe("a user with edit's serviceaccounts/token in the agent's namespace", () => {
  it('gets no agent token for a `kubectl create token` bound to no pod', async () => {
    const answer = await exchange(await attackerToken('finance-agent'));
    expect(answer).toMatchObject({ status: 403, body: { error: 'pod_unbound' } });
    expect(answer.body.message).toMatch(/bound to no pod.*only a pod's projected ServiceAccount token is exchanged/);
  });

  it("gets no agent token for a pod of its own making that runs as the agent's ServiceAccount without the sidecar", async () => {
    await createPod('finance-agent-plain', 'finance-agent');
    const answer = await exchange(await attackerToken('finance-agent', 'finance-agent-plain'));
    expect(answer).toMatchObject({ status: 403, body: { error: 'pod_ineligible' } });
    expect(answer.body.message).toMatch(/was not injected/);
  });

  it("cannot bind the agent's token to a pod of another ServiceAccount: the API server refuses to mint it", async () => {
    const minted = await kubectl(plane, ['create', 'token', 'finance-agent', '-n', NS, '--audience', 'portcullis', '--bound-object-kind', 'Pod', '--bound-object-name', 'planner-agent-0', AS_ATTACKER], { allowFailure: true });
    expect(minted.code).not.toBe(0);
    expect(minted.stderr).toMatch(/different serviceaccount/i);
    // The planner's own pod-bound token still names the planner, whatever agent it asks to be.
    const answer = await exchange(await attackerToken('planner-agent', 'planner-agent-0'), { agent: 'finance-agent' });
    expect(answer).toMatchObject({ status: 403, body: { error: 'service_account_mismatch' } });
  });

  it('gets no agent token for a token bound to a pod that has since been deleted', async () => {
    await createPod('finance-agent-gone', 'finance-agent', { injected: true });
    const token = await attackerToken('finance-agent', 'finance-agent-gone');
    expect((await exchange(token)).status).toBe(200);
    await kubectl(plane, ['delete', 'pod', 'finance-agent-gone', '-n', NS, '--wait=true']);
    const answer = await exchange(token);
    // The API server's TokenReview goes on authenticating it for a while after the pod is gone (its
    // pod cache); the pod lookup, a GET, refuses it at once. Either refusal is the right answer.
    expect(['pod_unknown', 'service_account_unauthenticated']).toContain(answer.body.error);
    expect(answer.status).not.toBe(200);
  });

  it('gets no agent token for a pod being deleted, while the API server still authenticates its token', async () => {
    await createPod('finance-agent-leaving', 'finance-agent', { injected: true, finalizer: true });
    const token = await attackerToken('finance-agent', 'finance-agent-leaving');
    await kubectl(plane, ['delete', 'pod', 'finance-agent-leaving', '-n', NS, '--wait=false']);
    try {
      const answer = await exchange(token);
      expect(answer).toMatchObject({ status: 403, body: { error: 'pod_ineligible' } });
      expect(answer.body.message).toMatch(/is being deleted/);
    } finally {
      await kubectl(plane, ['patch', 'pod', 'finance-agent-leaving', '-n', NS, '--type=merge', '-p', '{"metadata":{"finalizers":null}}']);
    }
  });

  it('gets no agent token for a pod that has finished', async () => {
    await createPod('finance-agent-done', 'finance-agent', { injected: true });
    const token = await attackerToken('finance-agent', 'finance-agent-done');
    await kubectl(plane, ['patch', 'pod', 'finance-agent-done', '-n', NS, '--subresource=status', '--type=merge', '-p', '{"status":{"phase":"Succeeded"}}']);
    const answer = await exchange(token);
    expect(answer).toMatchObject({ status: 403, body: { error: 'pod_ineligible' } });
    expect(answer.body.message).toMatch(/has finished \(phase Succeeded\)/);
  });
});

describe('the genuine exchange', () => {
  it("exchanges a token bound to an injected pod of the agent, and the agent token names that pod's name and uid", async () => {
    const answer = await exchange(await attackerToken('finance-agent', 'finance-agent-0'));
    expect(answer.status).toBe(200);
    const claims = await claimsOf(answer.body.access_token);
    expect(claims).toMatchObject({ sub: `agent:${NS}:finance-agent`, pod: { name: 'finance-agent-0', uid: financePodUid } });
  });

  it('exchanges the same projected token again (the sidecar refreshes with it), and only while its pod exists', async () => {
    await createPod('finance-agent-refresh', 'finance-agent', { injected: true });
    const token = await attackerToken('finance-agent', 'finance-agent-refresh');
    const first = await exchange(token);
    const again = await exchange(token);
    expect([first.status, again.status]).toEqual([200, 200]);
    expect((await claimsOf(again.body.access_token)).jti).not.toBe((await claimsOf(first.body.access_token)).jti);
    await kubectl(plane, ['delete', 'pod', 'finance-agent-refresh', '-n', NS, '--wait=true']);
    expect((await exchange(token)).status).not.toBe(200);
  });

  it('lets the operator get pods, and nothing more of them', async () => {
    const operator = `--as=system:serviceaccount:${OPERATOR_NS}:${PREFIX}-portcullis-operator`;
    const can = async (verb: string): Promise<string> => (await kubectl(plane, ['auth', 'can-i', verb, 'pods', '-n', NS, operator], { allowFailure: true })).stdout.trim();
    expect({ get: await can('get'), list: await can('list'), watch: await can('watch'), create: await can('create'), delete: await can('delete') })
      .toEqual({ get: 'yes', list: 'no', watch: 'no', create: 'no', delete: 'no' });
  });
});

describe('self-delegation', () => {
  it("refuses the finance agent exchanging its own agent token as the subject to act for itself", async () => {
    const projected = await attackerToken('finance-agent', 'finance-agent-0');
    const own = (await exchange(projected)).body.access_token ?? '';
    const answer = await exchange(projected, { subject_token: own });
    expect(answer).toMatchObject({ status: 403, body: { error: 'self_delegation' } });
  });

  it("refuses the finance agent acting again for a planner's token it already acts in", async () => {
    const planner = (await exchange(await attackerToken('planner-agent', 'planner-agent-0'))).body.access_token ?? '';
    const projected = await attackerToken('finance-agent', 'finance-agent-0');
    const delegated = await exchange(projected, { subject_token: planner });
    expect(delegated.status).toBe(200);
    expect(await claimsOf(delegated.body.access_token)).toMatchObject({ pod: { name: 'planner-agent-0' }, act: { sub: `agent:${NS}:finance-agent`, pod: { name: 'finance-agent-0' } } });
    const again = await exchange(projected, { subject_token: delegated.body.access_token ?? '' });
    expect(again).toMatchObject({ status: 403, body: { error: 'self_delegation' } });
  });
});

describe('a sidecar given what `kubectl create token` makes', () => {
  it('holds no agent token while its projected token is bound to no pod, and gets one once it is bound to its pod', async () => {
    const tokenFile = join(plane.runDir, `${PREFIX}-projected.token`);
    await writeFile(tokenFile, await attackerToken('finance-agent'));
    const httpBase = `http://127.0.0.1:${String(await freePort())}`;
    sidecar = await spawnTracked(plane, process.execPath, [
      join(REPO_ROOT, 'bin', 'portcullis.js'), 'sidecar', '--kubeconfig', plane.kubeconfig, '--agent', 'finance-agent', '--namespace', NS, '--trust-namespace', OPERATOR_NS,
      '--http-address', new URL(httpBase).host, '--grpc-address', `127.0.0.1:${String(await freePort())}`,
      '--token-service', tlsUrl, '--token-service-ca', tokenServiceCaFile, '--token-issuer', ISSUER, '--service-account-token', tokenFile, '--log-level', 'warn',
    ], { POD_NAME: 'finance-agent-0' });
    const readiness = async (): Promise<string> => (await fetch(`${httpBase}/readyz`).then((r) => r.text(), () => '')).trim();
    await eventually('the sidecar to be refused an agent token for its unbound ServiceAccount token', () => (sidecar?.output().includes('pod_unbound') === true ? true : undefined), 20_000);
    expect(await readiness()).toBe('no agent token has been issued yet');
    // The kubelet's projected token: bound to the sidecar's pod. The sidecar reads the file afresh at its next try.
    await writeFile(tokenFile, await attackerToken('finance-agent', 'finance-agent-0'));
    // No bundle is written here (no operator runs): holding a token, it waits for the bundle next.
    await eventually('the sidecar to hold an agent token', async () => ((await readiness()) === 'no valid policy bundle is loaded yet' ? true : undefined), 40_000, 200);
  }, 70_000);
});
