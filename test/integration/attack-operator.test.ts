// The operator's control plane against tenant RBAC, on the real API server. A user bound to
// Kubernetes' default `edit` ClusterRole in a namespace that belongs to no tenant writes a
// ConfigMap dressed as a tenant's bundle, claiming a revision at or past the highest one: the
// operator reads no bundle but the ones in the tenant's member namespaces, believes none it did
// not sign, reports the dressed one, and every change of the tenant — a suspension first — still
// reaches the spawned `portcullis sidecar`. A tenant editor who applies an invalid policy blocks
// the tenant's policies, not its kill switch: suspension, resumption and revokedBefore reach the
// sidecar while the tenant is blocked, and the invalid policy never takes effect. An older genuine
// bundle replayed by a tenant editor is refused by a sidecar that restarts, even with the operator
// down: the tenant's minimum revision sits in the operator's namespace.
import type { KubeConfig, V1ConfigMap } from '@kubernetes/client-node';
import { CoreV1Api, CustomObjectsApi } from '@kubernetes/client-node';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { stringify } from 'yaml';
import type { Bundle, BundleJwks } from '../../src/bundle/index.ts';
import { fromConfigMapData, fromJwks, parseRevision, verifyBundle } from '../../src/bundle/index.ts';
import { MAX_REVISION_SEQUENCE, minimumRevisionConfigMap } from '../../src/bundle/revision.ts';
import { createOperatorMetrics } from '../../src/operator/metrics.ts';
import type { Operator } from '../../src/operator/operator.ts';
import type { TrackedProcess } from '../harness/cluster.ts';
import { eventually, kubeConfigOf, spawnTracked } from '../harness/cluster.ts';
import { freePort, kubectl, REPO_ROOT } from '../harness/control-plane.ts';
import { agentKubeconfigFile, serviceAccountKubeConfig, startScopedOperator } from '../harness/local-parts.ts';
import { aggregateClusterRoles } from '../harness/rbac.ts';

const plane = inject('controlPlane');
const core = kubeConfigOf(plane).makeApiClient(CoreV1Api);
const custom = kubeConfigOf(plane).makeApiClient(CustomObjectsApi);
const OPERATOR_NS = 'opattack-system';
const TENANT = 'opattack';
/** The tenant's namespace: it names the tenant. */
const NS = 'opattack-finance';
/** A namespace of no tenant, where the attacker may edit. */
const LOBBY = 'opattack-lobby';
const AGENT = 'finance-agent';
const ATTACKER = 'mallory';
const EDITOR = 'eve';
const BUNDLE = 'portcullis-bundle';
const TRUST = 'portcullis-trust';
const SUSPENDED_RULE = 'portcullis:agent-suspended';
/** What the test allows for a change to reach the sidecar on a shared 2-core machine (the benchmark measures the real figure). */
const CONTAIN_BOUND_MS = 5_000;
const OUR_LABELS = { 'app.kubernetes.io/managed-by': 'portcullis-operator', 'portcullis.dev/tenant': TENANT };

const metrics = createOperatorMetrics();
let operator: Operator | undefined;
let sidecar: TrackedProcess;
let httpBase: string;
/** The API as a user bound to `edit` in LOBBY only. */
let attacker: CoreV1Api;
/** The API as a user bound to `edit` in the tenant namespace. */
let editor: KubeConfig;

const apply = async (docs: unknown[], as?: KubeConfig): Promise<void> => {
  const args = ['apply', '--validate=strict', '-f', '-'];
  if (as === undefined) {
    await kubectl(plane, args, { input: docs.map((d) => stringify(d)).join('---\n') });
    return;
  }
  const kubeconfig = join(plane.runDir, 'attack-operator-editor.kubeconfig');
  await writeFile(kubeconfig, as.exportConfig());
  await kubectl({ ...plane, kubeconfig }, args, { input: docs.map((d) => stringify(d)).join('---\n') });
};

function paymentsPolicy(name: string, max: number, regex?: string): unknown {
  return {
    apiVersion: 'portcullis.dev/v1alpha1',
    kind: 'ToolPolicy',
    metadata: { name, namespace: NS },
    spec: {
      subjects: { agents: [AGENT] },
      rules: [{
        name: 'payments',
        tool: 'stripe-payments',
        actions: ['create_payment'],
        decision: 'allow',
        when: [{ param: 'amount', max }, ...(regex === undefined ? [] : [{ param: 'account', regex }])],
      }],
    },
  };
}

interface Answer { decision: string; rule: string; revision: string }

async function pay(amount: number): Promise<Answer> {
  const response = await fetch(`${httpBase}/v1/authorize`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ tool: 'stripe-payments', action: 'create_payment', params: { amount, account: 'xy' } }),
  });
  return (await response.json()) as Answer;
}

/** The status code of a refused API call, or 'allowed'. */
async function statusOf(call: Promise<unknown>): Promise<number | 'allowed'> {
  try {
    await call;
    return 'allowed';
  } catch (error) {
    return (error as { code?: number }).code ?? -1;
  }
}

async function foreignObjects(): Promise<number> {
  const metric = await metrics.registry.getSingleMetric('portcullis_foreign_objects_total')?.get();
  return metric?.values.find((v) => v.labels.kind === 'ConfigMap')?.value ?? 0;
}

/** The tenant's bundle in its namespace, verified under the operator's trust. */
async function genuineBundle(): Promise<Bundle> {
  const trust = await core.readNamespacedConfigMap({ name: TRUST, namespace: OPERATOR_NS });
  const keys = await fromJwks(JSON.parse(trust.data?.['jwks.json'] ?? '{"keys":[]}') as BundleJwks);
  const cm = await core.readNamespacedConfigMap({ name: BUNDLE, namespace: NS });
  return verifyBundle(fromConfigMapData({ data: cm.data ?? {}, binaryData: cm.binaryData ?? {} }), { publicKeys: keys, tenant: TENANT });
}

/** A ConfigMap dressed as the tenant's bundle: the operator's labels and an unsigned manifest claiming `revision`. */
function dressedBundle(name: string, revision: string, resourceVersion?: string): V1ConfigMap {
  const manifest = { revision, roots: ['portcullis'], metadata: { tenant: TENANT, resources: {} } };
  return {
    metadata: { name, namespace: LOBBY, labels: { ...OUR_LABELS, 'app.kubernetes.io/component': 'bundle' }, ...(resourceVersion === undefined ? {} : { resourceVersion }) },
    data: { '.manifest': JSON.stringify(manifest), 'data.json': '{}' },
  };
}

async function setStanding(spec: { suspended?: boolean; revokedBefore?: string }): Promise<void> {
  await kubectl(plane, ['patch', 'agentidentity', AGENT, '-n', NS, '--type=merge', '-p', JSON.stringify({ spec })]);
}

/** Milliseconds from a patch of the agent's standing to the first answer of the sidecar that `done` accepts. */
async function timeToReach(spec: { suspended?: boolean; revokedBefore?: string }, amount: number, done: (answer: Answer) => boolean): Promise<{ ms: number; answer: Answer }> {
  const started = performance.now();
  await setStanding(spec);
  const answer = await eventually('the sidecar to answer as the new standing says', async () => {
    const got = await pay(amount);
    return done(got) ? got : undefined;
  }, 30_000, 20);
  return { ms: performance.now() - started, answer };
}

async function policyCondition(name: string, type: string): Promise<{ status?: string; reason?: string; message?: string } | undefined> {
  const policy = (await custom.getNamespacedCustomObject({ group: 'portcullis.dev', version: 'v1alpha1', namespace: NS, plural: 'toolpolicies', name })) as { status?: { conditions?: { type: string; status?: string; reason?: string; message?: string }[] } };
  return policy.status?.conditions?.find((c) => c.type === type);
}

beforeAll(async () => {
  await aggregateClusterRoles(plane, ['edit']);
  operator = await startScopedOperator(plane, 'opattack', OPERATOR_NS, metrics);
  const editBinding = (user: string, namespace: string): unknown => ({
    apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'RoleBinding', metadata: { name: `${user}-edit`, namespace },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'edit' },
    subjects: [{ kind: 'ServiceAccount', name: user, namespace }],
  });
  await apply([
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS, labels: { 'portcullis.dev/tenant': TENANT } } },
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: LOBBY } },
    { apiVersion: 'portcullis.dev/v1alpha1', kind: 'AgentIdentity', metadata: { name: AGENT, namespace: NS }, spec: { serviceAccountName: AGENT, owner: { name: 'Dana Ruiz', email: 'dana@example.com' } } },
    paymentsPolicy('payments', 5000),
    { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: ATTACKER, namespace: LOBBY } },
    editBinding(ATTACKER, LOBBY),
    { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: EDITOR, namespace: NS } },
    editBinding(EDITOR, NS),
    // The default roles do not aggregate Portcullis resources: a tenant's policy authors are granted them.
    { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'Role', metadata: { name: 'policy-author', namespace: NS }, rules: [{ apiGroups: ['portcullis.dev'], resources: ['toolpolicies'], verbs: ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete'] }] },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'RoleBinding', metadata: { name: `${EDITOR}-policy-author`, namespace: NS },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'policy-author' },
      subjects: [{ kind: 'ServiceAccount', name: EDITOR, namespace: NS }],
    },
  ]);
  attacker = (await serviceAccountKubeConfig(plane, LOBBY, ATTACKER)).makeApiClient(CoreV1Api);
  editor = await serviceAccountKubeConfig(plane, NS, EDITOR);
  sidecarKubeconfig = await agentKubeconfigFile(plane, NS, AGENT);
  sidecar = await startSidecar();
  await eventually('the sidecar to load the genuine bundle', async () => ((await pay(4200).catch(() => undefined))?.decision === 'allow' ? true : undefined), 60_000);
}, 120_000);

afterAll(async () => {
  await sidecar.kill('SIGTERM');
  await writeFile(join(plane.runDir, 'attack-operator-sidecar.log'), sidecar.output());
  await operator?.stop();
});

let sidecarKubeconfig: string;

/** A `portcullis sidecar` process for the agent, answering on a new port (httpBase). */
async function startSidecar(): Promise<TrackedProcess> {
  const httpPort = await freePort();
  httpBase = `http://127.0.0.1:${String(httpPort)}`;
  return spawnTracked(plane, process.execPath, [
    join(REPO_ROOT, 'bin', 'portcullis.js'), 'sidecar', '--kubeconfig', sidecarKubeconfig, '--agent', AGENT, '--namespace', NS, '--tenant', TENANT,
    '--trust-namespace', OPERATOR_NS, '--http-address', `127.0.0.1:${String(httpPort)}`, '--grpc-address', `127.0.0.1:${String(await freePort())}`,
  ]);
}

describe('a user bound to edit in a namespace of no tenant', () => {
  it('cannot read or write anything of the tenant namespace, but can write ConfigMaps of its own (the role is what it says)', async () => {
    expect(await statusOf(attacker.readNamespacedConfigMap({ name: BUNDLE, namespace: NS }))).toBe(403);
    expect(await statusOf(attacker.createNamespacedConfigMap({ namespace: NS, body: { metadata: { name: 'probe' }, data: {} } }))).toBe(403);
    expect(await statusOf(attacker.createNamespacedConfigMap({ namespace: LOBBY, body: { metadata: { name: 'probe' }, data: {} } }))).toBe('allowed');
    expect(await statusOf(attacker.deleteNamespacedConfigMap({ name: 'probe', namespace: LOBBY }))).toBe('allowed');
  });

  it('dressing a ConfigMap as the tenant bundle at a revision of twenty nines: the operator reads no field of it, and a suspension reaches the sidecar', async () => {
    const before = await genuineBundle();
    const reportedBefore = await foreignObjects();
    const dressed = dressedBundle(BUNDLE, `99999999999999999999-${'a'.repeat(16)}`);
    expect(await statusOf(attacker.createNamespacedConfigMap({ namespace: LOBBY, body: dressed }))).toBe('allowed');
    // Reconciled because of it (it carries the tenant's label), and reported, not believed.
    await eventually('the dressed ConfigMap to be reported', async () => ((await foreignObjects()) > reportedBefore ? true : undefined));

    const { ms, answer } = await timeToReach({ suspended: true }, 4200, (a) => a.decision === 'deny' && a.rule === SUSPENDED_RULE);
    expect(ms).toBeLessThan(CONTAIN_BOUND_MS);
    const after = await genuineBundle();
    expect(answer.revision).toBe(after.manifest.revision);
    expect(parseRevision(after.manifest.revision).sequence).toBe(parseRevision(before.manifest.revision).sequence + 1n);
    await timeToReach({ suspended: false }, 4200, (a) => a.decision === 'allow');
  });

  it('is reported with a Warning Event in its namespace, and left there: it is not the operator\'s to delete', async () => {
    const events = await eventually('a ForeignObjectIgnored event', async () => {
      const list = await core.listNamespacedEvent({ namespace: LOBBY, fieldSelector: `involvedObject.name=${BUNDLE}` });
      const found = list.items.filter((e) => e.reason === 'ForeignObjectIgnored');
      return found.length > 0 ? found : undefined;
    });
    expect(events[0]?.type).toBe('Warning');
    expect(events[0]?.involvedObject.kind).toBe('ConfigMap');
    expect(events[0]?.message).toContain(`bundle of tenant ${TENANT}`);
    expect(events[0]?.message).toContain('the operator did not sign it');
    const dressed = await core.readNamespacedConfigMap({ name: BUNDLE, namespace: LOBBY });
    expect(JSON.parse(dressed.data?.['.manifest'] ?? '{}')).toMatchObject({ revision: `99999999999999999999-${'a'.repeat(16)}` });
  });

  it('claiming the revision just below the highest: every later change of the tenant still goes out, numbered after the genuine one', async () => {
    const before = await genuineBundle();
    const reportedBefore = await foreignObjects();
    const current = await attacker.readNamespacedConfigMap({ name: BUNDLE, namespace: LOBBY });
    const dressed = dressedBundle(BUNDLE, `${(MAX_REVISION_SEQUENCE - 1n).toString()}-${'a'.repeat(16)}`, current.metadata?.resourceVersion ?? '');
    expect(await statusOf(attacker.replaceNamespacedConfigMap({ name: BUNDLE, namespace: LOBBY, body: dressed }))).toBe('allowed');
    await eventually('the changed ConfigMap to be reported again', async () => ((await foreignObjects()) > reportedBefore ? true : undefined));

    await apply([paymentsPolicy('payments', 6000)]);
    const raised = await eventually('the sidecar to load the raised bound', async () => {
      const answer = await pay(5500);
      return answer.decision === 'allow' ? answer : undefined;
    }, 30_000);
    expect(parseRevision(raised.revision).sequence).toBe(parseRevision(before.manifest.revision).sequence + 1n);
    await timeToReach({ suspended: true }, 5500, (a) => a.rule === SUSPENDED_RULE);
    await timeToReach({ suspended: false }, 5500, (a) => a.decision === 'allow');
    expect(parseRevision((await genuineBundle()).manifest.revision).sequence).toBeLessThan(100n);
  });

  it('a ConfigMap of another name carrying the operator labels is reported and ignored', async () => {
    const reportedBefore = await foreignObjects();
    expect(await statusOf(attacker.createNamespacedConfigMap({ namespace: LOBBY, body: { metadata: { name: 'portcullis-settings', labels: OUR_LABELS }, data: { a: 'b' } } }))).toBe('allowed');
    await eventually('it to be reported', async () => ((await foreignObjects()) > reportedBefore ? true : undefined));
    await eventually('a ForeignObjectIgnored event about it', async () => {
      const list = await core.listNamespacedEvent({ namespace: LOBBY, fieldSelector: 'involvedObject.name=portcullis-settings' });
      return list.items.some((e) => e.reason === 'ForeignObjectIgnored') ? true : undefined;
    });
    expect((await core.readNamespacedConfigMap({ name: 'portcullis-settings', namespace: LOBBY })).data).toEqual({ a: 'b' });
  });
});

describe('a namespace that leaves the tenant', () => {
  it('loses the genuine bundle the operator wrote there, while the dressed one of the namespace of no tenant stays and the tenant goes on', async () => {
    const leaving = 'opattack-leaving';
    await apply([{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: leaving, labels: { 'portcullis.dev/tenant': TENANT } } }]);
    await eventually('the bundle to be written to the new member', async () => ((await statusOf(core.readNamespacedConfigMap({ name: BUNDLE, namespace: leaving }))) === 'allowed' ? true : undefined), 30_000);
    await kubectl(plane, ['label', 'namespace', leaving, 'portcullis.dev/tenant-']);
    await eventually('the bundle to be pruned', async () => ((await statusOf(core.readNamespacedConfigMap({ name: BUNDLE, namespace: leaving }))) === 404 ? true : undefined), 30_000);
    expect(await statusOf(core.readNamespacedConfigMap({ name: BUNDLE, namespace: LOBBY }))).toBe('allowed');
    expect((await pay(4200)).decision).toBe('allow');
  });
});

describe('a tenant editor who applies an invalid policy', () => {
  it('blocks the tenant, yet a suspension reaches the sidecar within the containment bound', async () => {
    const before = await genuineBundle();
    // RE2 has no look-behind: the API server takes it, the compiler refuses it. Were it in force it would allow a million.
    await apply([paymentsPolicy('broken', 10_000_000, '(?<=x)y')], editor);
    await eventually('broken to be refused', async () => ((await policyCondition('broken', 'Compiled'))?.status === 'False' ? true : undefined), 30_000);

    const { ms, answer } = await timeToReach({ suspended: true }, 4200, (a) => a.decision === 'deny' && a.rule === SUSPENDED_RULE);
    expect(ms).toBeLessThan(CONTAIN_BOUND_MS);
    const contained = await genuineBundle();
    expect(answer.revision).toBe(contained.manifest.revision);
    expect(parseRevision(contained.manifest.revision).sequence).toBe(parseRevision(before.manifest.revision).sequence + 1n);
    // The policies are the last good ones: the broken policy is nowhere in the bundle.
    expect(JSON.stringify(contained.data)).not.toContain('broken');
    expect((await policyCondition('broken', 'Ready'))?.status).toBe('False');
    // The agent's status says its suspension is in force, not that it waits.
    const agent = await eventually('the agent status to name the revision its standing is in', async () => {
      const got = (await custom.getNamespacedCustomObject({ group: 'portcullis.dev', version: 'v1alpha1', namespace: NS, plural: 'agentidentities', name: AGENT })) as { status?: { suspended?: boolean; conditions?: { type: string; message?: string }[] } };
      const ready = got.status?.conditions?.find((c) => c.type === 'Ready');
      return ready?.message?.includes(`its suspension and revokedBefore are in force at revision ${contained.manifest.revision}`) === true ? got : undefined;
    });
    expect(agent.status?.suspended).toBe(true);
  });

  it('a resumption reaches it too, and the invalid policy never takes effect', async () => {
    await timeToReach({ suspended: false }, 4200, (a) => a.decision === 'allow');
    expect((await pay(1_000_000)).decision).toBe('deny');
  });

  it('revokedBefore reaches the bundle the sidecar runs while the tenant is blocked', async () => {
    const revokedBefore = new Date(Date.now() - 1000).toISOString();
    await setStanding({ revokedBefore });
    const bundle = await eventually('the revocation to be in the bundle', async () => {
      const got = await genuineBundle();
      const agents = (got.data as { portcullis: { agents: Record<string, Record<string, { revokedBefore?: string }>> } }).portcullis.agents;
      return agents[NS]?.[AGENT]?.revokedBefore === revokedBefore ? got : undefined;
    }, CONTAIN_BOUND_MS);
    await eventually('the sidecar to run that bundle', async () => ((await pay(4200)).revision === bundle.manifest.revision ? true : undefined), CONTAIN_BOUND_MS);
    expect((await policyCondition('broken', 'Compiled'))?.status).toBe('False');
  });

  it('fixed, the tenant is compiled again from its policies, at a higher revision', async () => {
    const contained = await genuineBundle();
    await kubectl(plane, ['delete', 'toolpolicy', 'broken', '-n', NS]);
    const rebuilt = await eventually('the tenant bundle to be rebuilt', async () => {
      const got = await genuineBundle();
      return got.manifest.revision === contained.manifest.revision ? undefined : got;
    }, 30_000);
    expect(parseRevision(rebuilt.manifest.revision).sequence).toBeGreaterThan(parseRevision(contained.manifest.revision).sequence);
    await eventually('the sidecar to answer from it', async () => ((await pay(4200)).revision === rebuilt.manifest.revision ? true : undefined), 30_000);
  });
});

describe("the agent's ServiceAccount", () => {
  it('reads its bundle by name, and no other ConfigMap of its namespace', async () => {
    await core.createNamespacedConfigMap({ namespace: NS, body: { metadata: { name: 'app-settings' }, data: { 'api-key-hint': 'the application keeps this' } } });
    const canI = async (verb: string, resource: string): Promise<string> =>
      (await kubectl(plane, ['auth', 'can-i', verb, resource, '-n', NS, `--as=system:serviceaccount:${NS}:${AGENT}`], { allowFailure: true })).stdout.trim();
    expect(await canI('watch', `configmaps/${BUNDLE}`)).toBe('yes');
    expect(await canI('get', 'configmaps/app-settings')).toBe('no');
    expect(await canI('list', 'configmaps')).toBe('no');
  });
});

describe('a tenant editor who replays an older genuine bundle and restarts the pod', () => {
  it('finds the restarted sidecar refusing it, even with the operator down: the minimum revision is out of the editor\'s reach', async () => {
    const editorApi = editor.makeApiClient(CoreV1Api);
    const older = await core.readNamespacedConfigMap({ name: BUNDLE, namespace: NS });
    await timeToReach({ suspended: true }, 4200, (a) => a.rule === SUSPENDED_RULE);
    const newer = await genuineBundle();
    const minimumName = minimumRevisionConfigMap(TENANT);
    await eventually('the minimum revision to reach the suspension', async () => {
      const record = await core.readNamespacedConfigMap({ name: minimumName, namespace: OPERATOR_NS }).catch(() => undefined);
      return record?.data?.revision === newer.manifest.revision ? true : undefined;
    });
    // The editor can neither write the record nor read past it.
    expect(await statusOf(editorApi.patchNamespacedConfigMap({ name: minimumName, namespace: OPERATOR_NS, body: [{ op: 'replace', path: '/data/revision', value: older.metadata?.annotations?.['portcullis.dev/revision'] ?? '' }] }))).toBe(403);

    await operator?.stop();
    operator = undefined;
    const current = await editorApi.readNamespacedConfigMap({ name: BUNDLE, namespace: NS });
    expect(await statusOf(editorApi.replaceNamespacedConfigMap({ name: BUNDLE, namespace: NS, body: { metadata: current.metadata, data: older.data ?? {}, binaryData: older.binaryData ?? {} } }))).toBe('allowed');
    await sidecar.kill('SIGTERM');
    await writeFile(join(plane.runDir, 'attack-operator-sidecar-1.log'), sidecar.output());
    sidecar = await startSidecar();
    const answer = await eventually('the restarted sidecar to answer', () => pay(4200).catch(() => undefined), 30_000);
    expect(answer.decision).toBe('deny');
    expect(answer.rule).toBe('portcullis:no-bundle');
    await eventually('the replay to be refused as regressed', () => (sidecar.output().includes('bundle_revision_regressed') ? true : undefined));

    // The operator back, its bundle is put back and the suspension holds.
    operator = await startScopedOperator(plane, 'opattack', OPERATOR_NS, metrics);
    await eventually('the sidecar to load the bundle in force', async () => ((await pay(4200)).rule === SUSPENDED_RULE ? true : undefined), 30_000);
    await timeToReach({ suspended: false }, 4200, (a) => a.decision === 'allow');
  }, 120_000);

  it("lets the agent's ServiceAccount read its tenant's minimum revision by name, and nothing else of the operator namespace", async () => {
    const canI = async (verb: string, resource: string): Promise<string> =>
      (await kubectl(plane, ['auth', 'can-i', verb, resource, '-n', OPERATOR_NS, `--as=system:serviceaccount:${NS}:${AGENT}`], { allowFailure: true })).stdout.trim();
    expect(await canI('watch', `configmaps/${minimumRevisionConfigMap(TENANT)}`)).toBe('yes');
    expect(await canI('list', 'configmaps')).toBe('no');
    expect(await canI('get', 'secrets/portcullis-signing-keys')).toBe('no');
  });
});
