// Argo CD's view of our resources: the health.lua scripts of config/argocd, run by
// hack/tools/argocd-health (gopher-lua with only the libraries Argo CD opens for an argocd-cm
// script, the object as the global obj), on objects read back from the API server with the status
// the in-process operator wrote. The chart's copy and the argocd-cm rendering are held to them.

import { spawn } from 'node:child_process';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { parse, parseAllDocuments, stringify } from 'yaml';
import type { Operator } from '../../src/operator/operator.ts';
import { eventually } from '../harness/cluster.ts';
import { ensureNamespace, kubectl, REPO_ROOT, runProcess } from '../harness/control-plane.ts';
import { startScopedOperator } from '../harness/local-parts.ts';

const plane = inject('controlPlane');
const OPERATOR_NS = 'argocd-health-system';
const NS = 'argocd-health';
const HEALTH_DIR = join(REPO_ROOT, 'config', 'argocd', 'health');
const CHART_HEALTH_DIR = join(REPO_ROOT, 'charts', 'portcullis', 'argocd', 'health');
const KINDS = ['AgentIdentity', 'ToolPolicy', 'EgressRule', 'ApprovalRequest'] as const;
type Kind = (typeof KINDS)[number];
const PLURALS: Record<Kind, string> = { AgentIdentity: 'agentidentities', ToolPolicy: 'toolpolicies', EgressRule: 'egressrules', ApprovalRequest: 'approvalrequests' };

interface Health { status?: string; message?: string }
interface KubeObject {
  metadata: { name: string; generation?: number };
  spec?: Record<string, unknown>;
  status?: { observedGeneration?: number; state?: string; conditions?: { type: string; status: string; reason: string; message: string; observedGeneration?: number }[] };
}

function runner(): string {
  const path = process.env.TEST_ASSET_ARGOCD_HEALTH;
  if (path === undefined || path === '') throw new Error('TEST_ASSET_ARGOCD_HEALTH is not set: run `source hack/lib.sh && ensure_tools` (hack/build-tools.sh argocd-health builds it)');
  return path;
}

/** Runs a Lua script on an object through the gopher-lua runner; rejects with its stderr when it fails. */
async function runScript(script: string, object: unknown): Promise<Health> {
  const { code, stdout, stderr } = await runProcess(runner(), ['-script', script], { input: JSON.stringify(object) });
  if (code !== 0) throw new Error(`argocd-health exited ${code}: ${stderr.trim()}`);
  return JSON.parse(stdout) as Health;
}

const healthOf = (kind: Kind, object: unknown): Promise<Health> => runScript(join(HEALTH_DIR, `${kind}.lua`), object);

async function read(kind: Kind, name: string): Promise<KubeObject> {
  return JSON.parse((await kubectl(plane, ['get', PLURALS[kind], name, '-n', NS, '-o', 'json'])).stdout) as KubeObject;
}

const apply = async (docs: unknown[]): Promise<void> => {
  await kubectl(plane, ['apply', '--validate=strict', '-f', '-'], { input: docs.map((d) => stringify(d)).join('---\n') });
};

const ready = (object: KubeObject): { status: string; reason: string; message: string } | undefined => object.status?.conditions?.find((c) => c.type === 'Ready');
const current = (object: KubeObject): boolean => object.status?.observedGeneration === object.metadata.generation;

/** The object once the operator has reported on its generation and `until` holds of it. */
async function reconciled(kind: Kind, name: string, until: (object: KubeObject) => boolean = () => true): Promise<KubeObject> {
  return eventually(`${kind} ${name} reconciled`, async () => {
    const object = await read(kind, name);
    return current(object) && ready(object) !== undefined && until(object) ? object : undefined;
  }, 30_000);
}

const agent = (name: string, suspended = false): unknown => ({
  apiVersion: 'portcullis.dev/v1alpha1', kind: 'AgentIdentity', metadata: { name, namespace: NS },
  spec: { serviceAccountName: name, owner: { name: 'Dana Ruiz', email: 'dana@example.com' }, suspended },
});
const policy = (name: string, rules: unknown[]): unknown => ({
  apiVersion: 'portcullis.dev/v1alpha1', kind: 'ToolPolicy', metadata: { name, namespace: NS },
  spec: { subjects: { agents: ['worker'] }, rules },
});
const allowRule = (name: string, max: number): unknown => ({ name, tool: 'stripe-payments', decision: 'allow', when: [{ param: 'amount', max }] });
const egress = (name: string, host: string): unknown => ({
  apiVersion: 'portcullis.dev/v1alpha1', kind: 'EgressRule', metadata: { name, namespace: NS },
  spec: { subjects: { agents: ['worker'] }, allow: [{ host, ports: [443] }] },
});

let operator: Operator | undefined;
const startOperator = async (): Promise<void> => { operator = await startScopedOperator(plane, 'argocd', OPERATOR_NS); };
const stopOperator = async (): Promise<void> => {
  await operator?.stop();
  operator = undefined;
};

beforeAll(async () => {
  runner();
  await startOperator();
  await ensureNamespace(plane, NS, { 'portcullis.dev/tenant': NS });
});

afterAll(async () => {
  await stopOperator();
});

describe('the runner loads a script as Argo CD does', () => {
  const probe = async (lua: string): Promise<Health> => {
    const script = join(plane.runDir, 'argocd-probe.lua');
    await writeFile(script, lua);
    return runScript(script, { metadata: { name: 'probe', generation: 7 } });
  };

  it.each([
    ['the object is the global obj, its integers numbers', 'return { status = "Healthy", message = type(obj.metadata.generation) .. " " .. tostring(obj.metadata.generation + 1) }', 'number 8'],
    ['the table library is open', 'return { status = "Healthy", message = table.concat({ "a", "b" }, ",") }', 'a,b'],
    ['require("os") gives os.time and os.date only', 'local os = require("os"); return { status = "Healthy", message = type(os.time()) .. " " .. type(os.date) .. " " .. type(os.execute) .. " " .. type(os.getenv) }', 'number function nil nil'],
    ['no global os, io, string, math or debug', 'return { status = "Healthy", message = type(os) .. type(io) .. type(string) .. type(math) .. type(debug) }', 'nilnilnilnilnil'],
  ])('%s', async (_name, lua, message) => {
    expect(await probe(lua)).toEqual({ status: 'Healthy', message });
  });

  it('fails a script that calls a string method, as Argo CD would', async () => {
    await expect(probe('return { status = ("Healthy"):sub(1) }')).rejects.toThrow(/non-table object\(string\)/);
  });

  it('turns a status Argo CD does not know into Unknown', async () => {
    expect(await probe('return { status = "Fine" }')).toEqual({ status: 'Unknown', message: 'Lua returned an invalid health status' });
  });
});

describe('Argo CD health of the resources the operator reconciles', () => {
  it('is Healthy for a valid AgentIdentity, ToolPolicy and EgressRule once Ready=True, with the revision in force', async () => {
    await apply([agent('worker'), policy('payments', [allowRule('small', 100)]), egress('stripe', 'api.stripe.com')]);
    for (const [kind, name] of [['AgentIdentity', 'worker'], ['ToolPolicy', 'payments'], ['EgressRule', 'stripe']] as const) {
      const object = await reconciled(kind, name, (o) => ready(o)?.status === 'True');
      const health = await healthOf(kind, object);
      expect(health.status, `${kind} ${name}`).toBe('Healthy');
      expect(health.message).toBe(ready(object)?.message);
      expect(health.message).toMatch(/^in force at bundle revision /);
    }
  });

  it('is Progressing for a resource the operator has not seen yet, and for a spec change it has not reconciled', async () => {
    await stopOperator();
    try {
      await apply([policy('payments', [allowRule('small', 100), allowRule('medium', 1000)]), policy('fresh', [allowRule('tiny', 5)])]);
      const changed = await read('ToolPolicy', 'payments');
      expect(changed.status?.observedGeneration).toBeLessThan(changed.metadata.generation ?? 0);
      expect(ready(changed)?.status).toBe('True');
      expect(await healthOf('ToolPolicy', changed)).toEqual({
        status: 'Progressing',
        message: `Waiting for the Portcullis operator to reconcile generation ${changed.metadata.generation ?? 0} (status is of generation ${changed.status?.observedGeneration ?? 0})`,
      });
      const fresh = await read('ToolPolicy', 'fresh');
      expect(fresh.status).toBeUndefined();
      expect(await healthOf('ToolPolicy', fresh)).toEqual({ status: 'Progressing', message: 'Waiting for the Portcullis operator to reconcile' });
    } finally {
      await startOperator();
    }
    const caughtUp = await reconciled('ToolPolicy', 'payments', (o) => ready(o)?.status === 'True');
    expect((await healthOf('ToolPolicy', caughtUp)).status).toBe('Healthy');
    expect((await healthOf('ToolPolicy', await reconciled('ToolPolicy', 'fresh'))).status).toBe('Healthy');
  });

  it.each([
    ['Ready is Unknown', (o: KubeObject): void => { const c = ready(o); if (c) c.status = 'Unknown'; }, 'Waiting for the Ready condition'],
    ['Ready is absent', (o: KubeObject): void => { if (o.status) o.status.conditions = o.status.conditions?.filter((c) => c.type !== 'Ready'); }, 'Waiting for the Ready condition'],
    ['Ready speaks of an older generation than the status', (o: KubeObject): void => { const c = o.status?.conditions?.find((x) => x.type === 'Ready'); if (c) c.observedGeneration = (o.metadata.generation ?? 1) - 1; }, 'Waiting for the Ready condition of generation'],
  ])('is Progressing when %s (the operator\'s status, altered)', async (_name, alter, message) => {
    const object = await reconciled('ToolPolicy', 'payments', (o) => ready(o)?.status === 'True' && (o.metadata.generation ?? 0) > 1);
    alter(object);
    const health = await healthOf('ToolPolicy', object);
    expect(health.status).toBe('Progressing');
    expect(health.message).toContain(message);
  });

  it('is Degraded for an invalid policy, with the operator\'s message: what is wrong and which revision stays in force', async () => {
    await apply([policy('broken', [{ name: 'lookbehind', tool: 'stripe-payments', decision: 'allow', when: [{ param: 'account', regex: '(?<=x)y' }] }])]);
    const broken = await reconciled('ToolPolicy', 'broken', (o) => ready(o)?.status === 'False');
    const health = await healthOf('ToolPolicy', broken);
    expect(health.status).toBe('Degraded');
    expect(health.message).toBe(ready(broken)?.message);
    expect(health.message).toContain('rule lookbehind');
    expect(health.message).toMatch(/revision \S+ stays in force/);
  });

  it('is Degraded for a valid change the invalid policy blocks, naming the blocker', async () => {
    await apply([policy('fresh', [allowRule('tiny', 6)])]);
    const blocked = await reconciled('ToolPolicy', 'fresh', (o) => ready(o)?.reason === 'TenantBlocked');
    const health = await healthOf('ToolPolicy', blocked);
    expect(health.status).toBe('Degraded');
    expect(health.message).toContain(`ToolPolicy ${NS}/broken`);
    await kubectl(plane, ['delete', 'toolpolicy', 'broken', '-n', NS]);
    expect((await healthOf('ToolPolicy', await reconciled('ToolPolicy', 'fresh', (o) => ready(o)?.status === 'True'))).status).toBe('Healthy');
  });

  it('is Suspended for an agent whose kill switch is in force, and Healthy again once resumed', async () => {
    await apply([agent('worker', true)]);
    const suspended = await reconciled('AgentIdentity', 'worker', (o) => ready(o)?.status === 'True');
    expect(suspended.spec?.suspended).toBe(true);
    const health = await healthOf('AgentIdentity', suspended);
    expect(health.status).toBe('Suspended');
    expect(health.message).toBe(`Suspended: every call of the agent is denied and its tokens are refused; ${ready(suspended)?.message ?? ''}`);
    // A ToolPolicy or EgressRule has no kill switch: the same field means nothing to its script.
    expect((await healthOf('ToolPolicy', { ...suspended, kind: 'ToolPolicy' })).status).toBe('Healthy');

    await apply([agent('worker', false)]);
    expect((await healthOf('AgentIdentity', await reconciled('AgentIdentity', 'worker', (o) => ready(o)?.status === 'True'))).status).toBe('Healthy');
  });
});

describe('Argo CD health of an ApprovalRequest', () => {
  const request = (name: string): unknown => ({
    apiVersion: 'portcullis.dev/v1alpha1', kind: 'ApprovalRequest', metadata: { name, namespace: NS },
    spec: {
      key: `key-${name}`, agent: 'worker', tool: 'stripe-payments', action: 'create_payment', policy: 'payments', rule: 'over-limit',
      approvers: ['group:finance-leads', 'user:dana'], expiresAt: '2030-01-01T00:00:00Z',
    },
  });

  // No component writes an ApprovalRequest's status yet: the test writes it through the status subresource.
  async function withState(name: string, status: Record<string, string> | undefined): Promise<KubeObject> {
    await apply([request(name)]);
    if (status !== undefined) {
      await kubectl(plane, ['patch', 'approvalrequest', name, '-n', NS, '--subresource=status', '--type=merge', '-p', JSON.stringify({ status })]);
    }
    return read('ApprovalRequest', name);
  }

  it.each([
    ['with no state yet: waiting on a human', 'new', undefined, { status: 'Suspended', message: 'Waiting for a decision on stripe-payments/create_payment by agent worker from group:finance-leads, user:dana until 2030-01-01T00:00:00Z' }],
    ['Pending: waiting on a human', 'pending', { state: 'Pending' }, { status: 'Suspended', message: 'Waiting for a decision on stripe-payments/create_payment by agent worker from group:finance-leads, user:dana until 2030-01-01T00:00:00Z' }],
    ['Approved: the decision it exists to get', 'approved', { state: 'Approved', decidedBy: 'user:dana', decidedAt: '2029-06-01T10:00:00Z' }, { status: 'Healthy', message: 'Approved stripe-payments/create_payment by agent worker by user:dana at 2029-06-01T10:00:00Z' }],
    ['Denied: a refusal is an answer, not a fault', 'denied', { state: 'Denied', decidedBy: 'user:dana', decidedAt: '2029-06-01T10:00:00Z', comment: 'not this quarter' }, { status: 'Healthy', message: 'Denied stripe-payments/create_payment by agent worker by user:dana at 2029-06-01T10:00:00Z: not this quarter' }],
    ['Expired: nobody answered in time', 'expired', { state: 'Expired' }, { status: 'Degraded', message: 'Expired without a decision: stripe-payments/create_payment by agent worker was refused (expired at 2030-01-01T00:00:00Z)' }],
  ])('is %s', async (_name, name, status, expected) => {
    const object = await withState(name, status);
    expect(object.status?.state).toBe(status?.state);
    expect(await healthOf('ApprovalRequest', object)).toEqual(expected);
  });
});

describe('the argocd-cm keys', () => {
  const keyOf = (kind: Kind): string => `resource.customizations.health.portcullis.dev_${kind}`;
  const scriptsByKey = async (): Promise<Record<string, string>> =>
    Object.fromEntries(await Promise.all(KINDS.map(async (kind) => [keyOf(kind), await readFile(join(HEALTH_DIR, `${kind}.lua`), 'utf8')] as const)));

  it('has one script per kind, and the chart carries the same scripts', async () => {
    expect((await readdir(HEALTH_DIR)).sort()).toEqual(KINDS.map((k) => `${k}.lua`).sort());
    expect((await readdir(CHART_HEALTH_DIR)).sort()).toEqual(KINDS.map((k) => `${k}.lua`).sort());
    for (const kind of KINDS) {
      expect(await readFile(join(CHART_HEALTH_DIR, `${kind}.lua`), 'utf8'), `charts/portcullis/argocd/health/${kind}.lua is a copy of config/argocd/health/${kind}.lua`)
        .toBe(await readFile(join(HEALTH_DIR, `${kind}.lua`), 'utf8'));
    }
  });

  it('renders from config/argocd as argocd-cm that server-side apply merges into Argo CD\'s own, keeping its settings', async () => {
    const rendered = parse((await kubectl(plane, ['kustomize', join(REPO_ROOT, 'config', 'argocd')])).stdout) as { kind: string; metadata: { name: string; namespace: string }; data: Record<string, string> };
    expect(rendered).toMatchObject({ kind: 'ConfigMap', metadata: { name: 'argocd-cm', namespace: 'argocd' } });
    expect(rendered.data).toEqual(await scriptsByKey());

    await ensureNamespace(plane, 'argocd');
    await kubectl(plane, ['create', 'configmap', 'argocd-cm', '-n', 'argocd', '--from-literal=url=https://argocd.example.com', '--from-literal=resource.customizations.health.example.com_Widget=return {status = "Healthy"}']);
    await kubectl(plane, ['apply', '--server-side', '--field-manager=portcullis', '-f', '-'], { input: stringify(rendered) });
    const merged = JSON.parse((await kubectl(plane, ['get', 'configmap', 'argocd-cm', '-n', 'argocd', '-o', 'json'])).stdout) as { data: Record<string, string> };
    expect(merged.data).toEqual({ ...(await scriptsByKey()), url: 'https://argocd.example.com', 'resource.customizations.health.example.com_Widget': 'return {status = "Healthy"}' });
  });

  it('renders from the chart, when asked, as ConfigMap portcullis-argocd-health-checks holding the same keys, which merge into argocd-cm as the README says', async () => {
    const helm = process.env.TEST_ASSET_HELM;
    if (helm === undefined || helm === '') throw new Error('TEST_ASSET_HELM is not set: run `source hack/lib.sh && ensure_tools`');
    const render = (set: string[]): Promise<{ stdout: string }> => new Promise((resolve, reject) => {
      const child = spawn(helm, ['template', 'portcullis', join(REPO_ROOT, 'charts', 'portcullis'), '--namespace', 'portcullis-system', ...set.flatMap((s) => ['--set', s])]);
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
      child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
      child.on('close', (code) => { if (code === 0) resolve({ stdout }); else reject(new Error(`helm template: ${stderr}`)); });
    });
    const carriers = async (set: string[]): Promise<{ metadata: { name: string }; data: Record<string, string> }[]> =>
      parseAllDocuments((await render(set)).stdout).map((d) => d.toJS() as { kind?: string; metadata: { name: string }; data: Record<string, string> })
        .filter((o) => o.kind === 'ConfigMap' && o.metadata.name === 'portcullis-argocd-health-checks');
    expect(await carriers([])).toEqual([]);
    const [carrier] = await carriers(['argocd.healthChecks.enabled=true']);
    expect(carrier?.data).toEqual(await scriptsByKey());

    // The README's merge: the carrier's data, read with -o jsonpath='{.data}', as a merge patch of argocd-cm.
    await ensureNamespace(plane, 'portcullis-system');
    await kubectl(plane, ['apply', '-f', '-'], { input: stringify(carrier) });
    await ensureNamespace(plane, 'argocd');
    await kubectl(plane, ['create', 'configmap', 'argocd-cm', '-n', 'argocd', '--from-literal=url=https://argocd.example.com'], { allowFailure: true });
    await kubectl(plane, ['patch', 'configmap', 'argocd-cm', '-n', 'argocd', '--type=merge', '-p', '{"data":{"resource.customizations.health.portcullis.dev_ToolPolicy":"stale"}}']);
    const data = (await kubectl(plane, ['get', 'configmap', 'portcullis-argocd-health-checks', '-n', 'portcullis-system', '-o', 'jsonpath={.data}'])).stdout;
    await kubectl(plane, ['patch', 'configmap', 'argocd-cm', '-n', 'argocd', '--type', 'merge', '-p', `{"data": ${data}}`]);
    const merged = JSON.parse((await kubectl(plane, ['get', 'configmap', 'argocd-cm', '-n', 'argocd', '-o', 'json'])).stdout) as { data: Record<string, string> };
    expect(merged.data).toMatchObject({ ...(await scriptsByKey()), url: 'https://argocd.example.com' });
  });
});
