// kubectl portcullis, as users run it: the real kubectl finds bin/kubectl-portcullis
// on PATH and runs it against the API server, with the in-process operator
// writing the bundles and status the plugin reads.

import { CoreV1Api } from '@kubernetes/client-node';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { delimiter, dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { parse, stringify } from 'yaml';
import type { Operator } from '../../src/operator/operator.ts';
import { eventually, kubeConfigOf } from '../harness/cluster.ts';
import { kubectl, REPO_ROOT, runProcess } from '../harness/control-plane.ts';
import { startScopedOperator } from '../harness/local-parts.ts';

const plane = inject('controlPlane');
const core = kubeConfigOf(plane).makeApiClient(CoreV1Api);
const OPERATOR_NS = 'kplugin-system';
const TENANT = 'kp-alpha';
const ALPHA_ONE = 'kp-alpha-one';
const ALPHA_TWO = 'kp-alpha-two';
const BETA = 'kp-beta';
/** Namespaces the operator leaves alone: no tenant label, no resources. */
const BARE = 'kp-bare';
const EMPTY = 'kp-empty';

let operator: Operator;
let kubeconfigFile: string;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** `kubectl ARGS` with bin/ on PATH and only the kubeconfig of KUBECONFIG, as a user's shell has it. */
function kubectlPlugin(args: string[], input = ''): Promise<Run> {
  return runProcess(plane.tools.kubectl, args, {
    // node for the plugin's #!/usr/bin/env node; HOME with no ~/.kube/config of its own.
    env: { PATH: [join(REPO_ROOT, 'bin'), dirname(process.execPath), '/usr/bin', '/bin'].join(delimiter), KUBECONFIG: kubeconfigFile, HOME: plane.runDir },
    input,
  });
}

const apply = async (docs: unknown[]): Promise<void> => {
  await kubectl(plane, ['apply', '--validate=strict', '-f', '-'], { input: docs.map((d) => stringify(d)).join('---\n') });
};

const namespace = (name: string, labels: Record<string, string> = {}): unknown => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } });
const agent = (ns: string, name: string): unknown => ({
  apiVersion: 'portcullis.dev/v1alpha1', kind: 'AgentIdentity', metadata: { name, namespace: ns },
  spec: { serviceAccountName: name, owner: { name: 'Dana Ruiz', email: 'dana@example.com' } },
});
const policy = (ns: string, name: string, rule: Record<string, unknown>): unknown => ({
  apiVersion: 'portcullis.dev/v1alpha1', kind: 'ToolPolicy', metadata: { name, namespace: ns },
  spec: { subjects: { agents: ['worker'] }, rules: [rule] },
});

const call = (amount: number, extra: Record<string, unknown> = {}): string => JSON.stringify({ agent: 'worker', tool: 'stripe-payments', params: { amount }, ...extra });

async function bundleRevision(ns: string): Promise<string | undefined> {
  const cm = await core.readNamespacedConfigMap({ name: 'portcullis-bundle', namespace: ns }).catch(() => undefined);
  return (JSON.parse(cm?.data?.['.manifest'] ?? '{}') as { revision?: string }).revision;
}

beforeAll(async () => {
  operator = await startScopedOperator(plane, 'kplugin', OPERATOR_NS);
  // The admin of the control plane under two contexts: the current one names no namespace, `alpha` names kp-alpha-one.
  const admin = parse(await readFile(plane.kubeconfig, 'utf8')) as { clusters: unknown[]; users: unknown[] };
  kubeconfigFile = join(plane.runDir, 'kubectl-plugin.kubeconfig');
  await writeFile(kubeconfigFile, stringify({
    apiVersion: 'v1', kind: 'Config', 'current-context': 'admin', clusters: admin.clusters, users: admin.users,
    contexts: [
      { name: 'admin', context: { cluster: 'portcullis-local', user: 'admin' } },
      { name: 'alpha', context: { cluster: 'portcullis-local', user: 'admin', namespace: ALPHA_ONE } },
    ],
  }));
  await apply([
    namespace(ALPHA_ONE, { 'portcullis.dev/tenant': TENANT }),
    namespace(ALPHA_TWO, { 'portcullis.dev/tenant': TENANT }),
    namespace(BETA),
    namespace(BARE),
    namespace(EMPTY),
    agent(ALPHA_ONE, 'worker'),
    policy(ALPHA_ONE, 'payments', { name: 'small', tool: 'stripe-payments', decision: 'allow', when: [{ param: 'amount', max: 100 }] }),
    agent(BETA, 'worker'),
  ]);
  await eventually('the bundle of kp-alpha with its policy in both namespaces', async () => {
    const revisions = await Promise.all([ALPHA_ONE, ALPHA_TWO].map(bundleRevision));
    const cm = await core.readNamespacedConfigMap({ name: 'portcullis-bundle', namespace: ALPHA_TWO }).catch(() => undefined);
    return revisions[0] !== undefined && revisions[0] === revisions[1] && (cm?.data?.['data.json'] ?? '').includes('"small"') ? true : undefined;
  }, 60_000);
}, 120_000);

afterAll(async () => {
  await (operator as Operator | undefined)?.stop();
});

describe('kubectl portcullis', () => {
  it('is found by kubectl on PATH as a plugin, with no .js in its name', async () => {
    const list = await kubectlPlugin(['plugin', 'list']);
    expect(list.stdout).toContain(join(REPO_ROOT, 'bin', 'kubectl-portcullis'));
    expect(list.stdout).not.toContain('kubectl-portcullis.js');
    const help = await kubectlPlugin(['portcullis', 'status', '--help']);
    expect(help).toMatchObject({ code: 0, stdout: expect.stringContaining('Usage: kubectl portcullis status') as string });
  });

  it('status: the tenant Ready, its counts, its revision in force and its namespaces, as a table and as JSON', async () => {
    const revision = await bundleRevision(ALPHA_ONE);
    const table = await eventually('kp-alpha Ready at the revision in force', async () => {
      const run = await kubectlPlugin(['portcullis', 'status', TENANT, '--operator-namespace', OPERATOR_NS]);
      const row = run.stdout.split('\n')[1] ?? '';
      return run.code === 0 && row.split(/\s+/).join(' ') === `${TENANT} True 1 1 0 ${revision ?? ''} ${ALPHA_ONE},${ALPHA_TWO}` ? run.stdout : undefined;
    }, 30_000);
    expect(table.split('\n')[0]?.split(/\s+/)).toEqual(['TENANT', 'READY', 'AGENTS', 'POLICIES', 'EGRESS', 'REVISION', 'NAMESPACES']);
    const json = await kubectlPlugin(['portcullis', 'status', '-n', ALPHA_TWO, '-o', 'json', '--operator-namespace', OPERATOR_NS]);
    expect(json.stderr).toBe('');
    expect(JSON.parse(json.stdout)).toEqual({
      tenants: [{
        tenant: TENANT, ready: 'True', agents: 1, toolPolicies: 1, egressRules: 0, revisions: [revision],
        namespaces: [{ name: ALPHA_ONE, revision, verified: true }, { name: ALPHA_TWO, revision, verified: true }], notReady: [],
      }],
    });
  });

  it('status: without the trust, the revisions are shown unverified, and a warning says so', async () => {
    const run = await kubectlPlugin(['portcullis', 'status', TENANT, '--operator-namespace', 'kp-nowhere', '-o', 'json']);
    expect(run.code).toBe(0);
    expect(run.stderr).toContain('portcullis: warning: the bundles are not verified: no ConfigMap kp-nowhere/portcullis-trust');
    expect((JSON.parse(run.stdout) as { tenants: { namespaces: { verified: boolean }[] }[] }).tenants[0]?.namespaces.map((n) => n.verified)).toEqual([false, false]);
  });

  it('status: says which resource keeps a tenant from Ready, and why, as the operator wrote it', async () => {
    await apply([policy(BETA, 'broken', { name: 'odd', tool: 'stripe-payments', decision: 'allow', when: [{ param: 'account', regex: '([' }] })]);
    const run = await eventually('kp-beta not Ready', async () => {
      const r = await kubectlPlugin(['portcullis', 'status', BETA, '--operator-namespace', OPERATOR_NS]);
      return r.stdout.includes(`ToolPolicy ${BETA}/broken: Ready=False`) ? r : undefined;
    }, 30_000);
    expect(run.stdout.split('\n')[1]?.split(/\s+/).slice(0, 2)).toEqual([BETA, 'False']);
    expect(run.stdout).toContain(`Tenant ${BETA} is not Ready:`);
  });

  it('why: decides a call against the bundle in force, in the namespace of --context or of -n', async () => {
    const revision = await bundleRevision(ALPHA_ONE);
    const byContext = await kubectlPlugin(['portcullis', 'why', '--context', 'alpha', '--operator-namespace', OPERATOR_NS, '-i', '-'], call(50));
    expect(byContext.code).toBe(0);
    expect(JSON.parse(byContext.stdout)).toMatchObject({ decision: 'allow', rule: 'small', revision });
    expect(byContext.stderr).toContain(`${ALPHA_ONE}/portcullis-bundle: tenant ${TENANT}, revision ${revision ?? ''}, verified with ${OPERATOR_NS}/portcullis-trust`);
    const byFlag = await kubectlPlugin(['portcullis', 'why', '-n', ALPHA_ONE, '--operator-namespace', OPERATOR_NS, '-i', '-', '--exit-code'], call(500));
    expect(byFlag.code).toBe(3);
    expect(JSON.parse(byFlag.stdout)).toMatchObject({ decision: 'deny' });
  });

  it('why: refuses -n and a call naming another namespace, rather than pick one', async () => {
    const run = await kubectlPlugin(['portcullis', 'why', '-n', ALPHA_ONE, '--operator-namespace', OPERATOR_NS, '-i', '-'], call(50, { namespace: ALPHA_TWO }));
    expect(run.code).toBe(2);
    expect(run.stderr).toContain(`the call names namespace ${ALPHA_TWO} and -n names ${ALPHA_ONE}`);
    expect(run.stdout).toBe('');
  });

  it('why: a tampered bundle is refused, never used to decide', async () => {
    const real = await core.readNamespacedConfigMap({ name: 'portcullis-bundle', namespace: ALPHA_ONE });
    // The limit of rule small raised from 100 to a million: the call of 5000 would be allowed by it.
    const raised = (real.data?.['data.json'] ?? '').replace('"bound":100,', '"bound":1000000,');
    expect(raised).toContain('"bound":1000000,');
    const copy = (data: Record<string, string> | undefined): unknown => ({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'portcullis-bundle', namespace: BARE }, data, binaryData: real.binaryData });
    const why = ['portcullis', 'why', '-n', BARE, '--tenant', TENANT, '--operator-namespace', OPERATOR_NS, '-i', '-'];
    // As written, the copy verifies and denies the call: the refusal below is the tampering's.
    await apply([copy(real.data)]);
    const untouched = await kubectlPlugin(why, call(5000));
    expect(JSON.parse(untouched.stdout)).toMatchObject({ decision: 'deny' });
    await apply([copy({ ...real.data, 'data.json': raised })]);
    const run = await kubectlPlugin(why, call(5000));
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('bundle refused (bundle_digest_mismatch)');
    expect(run.stdout).toBe('');
  });

  it("why: another tenant's bundle copied into a namespace is refused there (signed for kp-alpha, not kp-bare)", async () => {
    const real = await core.readNamespacedConfigMap({ name: 'portcullis-bundle', namespace: ALPHA_ONE });
    await apply([{ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'portcullis-bundle', namespace: BARE }, data: real.data, binaryData: real.binaryData }]);
    const run = await kubectlPlugin(['portcullis', 'why', '-n', BARE, '--operator-namespace', OPERATOR_NS, '-i', '-'], call(50));
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('bundle refused (bundle_tenant_mismatch)');
    expect(run.stderr).toContain(`tenant ${BARE}`);
    expect(run.stdout).toBe('');
  });

  it('suspend --wait: in force at a new revision, and why then denies the agent; resume --wait allows it again', async () => {
    const before = await bundleRevision(ALPHA_ONE);
    const suspended = await kubectlPlugin(['portcullis', 'suspend', 'worker', '--context', 'alpha', '--wait', '--timeout', '30s']);
    expect(suspended.stderr).toBe('');
    expect(suspended.code).toBe(0);
    expect(suspended.stdout).toContain(`agentidentity.portcullis.dev/worker -n ${ALPHA_ONE} suspended (spec.suspended: false -> true)`);
    const revision = /suspended in bundle revision (\S+), in force/.exec(suspended.stdout)?.[1];
    expect(revision).toBeDefined();
    expect(revision).not.toBe(before);
    const managers = await kubectl(plane, ['get', 'agentidentity', 'worker', '-n', ALPHA_ONE, '--show-managed-fields', '-o', 'json']);
    expect(JSON.stringify((JSON.parse(managers.stdout) as { metadata: { managedFields: unknown } }).metadata.managedFields)).toContain('"manager":"kubectl-portcullis"');
    const denied = await eventually('the suspension in the bundle why reads', async () => {
      const run = await kubectlPlugin(['portcullis', 'why', '--context', 'alpha', '--operator-namespace', OPERATOR_NS, '-i', '-'], call(50));
      return run.stdout.includes('"deny"') ? run : undefined;
    });
    expect(JSON.parse(denied.stdout)).toMatchObject({ decision: 'deny', reasons: [`agent ${ALPHA_ONE}/worker is suspended`] });
    const again = await kubectlPlugin(['portcullis', 'suspend', 'worker', '-n', ALPHA_ONE]);
    expect(again.stdout).toContain('already suspended (unchanged)');

    const resumed = await kubectlPlugin(['portcullis', 'resume', 'worker', '-n', ALPHA_ONE, '--wait']);
    expect(resumed.code).toBe(0);
    expect(resumed.stdout).toContain('resumed (spec.suspended: true -> false)');
    expect(resumed.stdout).toMatch(/not suspended in bundle revision \S+, in force/);
    const allowed = await eventually('the resumption in the bundle why reads', async () => {
      const run = await kubectlPlugin(['portcullis', 'why', '-n', ALPHA_ONE, '--operator-namespace', OPERATOR_NS, '-i', '-'], call(50));
      return run.stdout.includes('"allow"') ? run : undefined;
    });
    expect(allowed.code).toBe(0);
  }, 60_000);

  it.each([
    { name: 'no such agent', args: ['suspend', 'nobody', '-n', ALPHA_ONE], input: '', code: 1, says: `no AgentIdentity nobody in namespace ${ALPHA_ONE} (context admin)` },
    { name: 'no bundle in the namespace', args: ['why', '-n', EMPTY, '--operator-namespace', OPERATOR_NS, '-i', '-'], input: call(50), code: 1, says: `no bundle: namespace ${EMPTY} holds no ConfigMap portcullis-bundle` },
    { name: 'no trust in the operator namespace named', args: ['why', '-n', ALPHA_ONE, '--operator-namespace', 'kp-nowhere', '-i', '-'], input: call(50), code: 1, says: 'no trust: no ConfigMap kp-nowhere/portcullis-trust' },
    { name: 'a context the kubeconfig does not have', args: ['status', '--context', 'prod'], input: '', code: 2, says: '--context prod: no such context in the kubeconfig (it has: admin, alpha)' },
    { name: 'a call that is not strict JSON', args: ['why', '-n', ALPHA_ONE, '-i', '-'], input: '{"amount":1,"amount":2}', code: 2, says: '--input - is not strict JSON' },
  ])('says clearly what is wrong: $name', async ({ args, input, code, says }) => {
    const run = await kubectlPlugin(['portcullis', ...args], input);
    expect(run.stderr).toContain(says);
    expect(run.code).toBe(code);
    expect(run.stdout).toBe('');
  });
});

describe('the kind script and the krew manifest', () => {
  it.each(['hack/kind.sh', 'plugins/krew/release.sh'])('%s is valid bash', async (script) => {
    await expect(promisify(execFile)('bash', ['-n', join(REPO_ROOT, script)])).resolves.toMatchObject({ stderr: '' });
  });

  it('release.sh fills every placeholder of the krew manifest: version, download address and SHA-256 of the archive', async () => {
    const archive = join(plane.runDir, 'kubectl-portcullis-test.tar.gz');
    await writeFile(archive, 'not really an archive');
    const url = 'https://example.com/releases/kubectl-portcullis-test.tar.gz';
    await promisify(execFile)('bash', [join(REPO_ROOT, 'plugins/krew/release.sh'), '--manifest-only', archive, url], { env: { ...process.env, PORTCULLIS_KREW_OUT: plane.runDir } });
    const text = await readFile(join(plane.runDir, 'portcullis.yaml'), 'utf8');
    expect(text).not.toContain('{{');
    const version = (JSON.parse(await readFile(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
    const manifest = parse(text) as { apiVersion: string; kind: string; metadata: { name: string }; spec: { version: string; platforms: { uri: string; sha256: string; bin: string }[] } };
    expect(manifest).toMatchObject({ apiVersion: 'krew.googlecontainertools.github.com/v1alpha2', kind: 'Plugin', metadata: { name: 'portcullis' }, spec: { version: `v${version}` } });
    const sha256 = createHash('sha256').update('not really an archive').digest('hex');
    expect(manifest.spec.platforms.length).toBeGreaterThan(0);
    for (const platform of manifest.spec.platforms) expect(platform).toEqual({ selector: expect.anything() as unknown, uri: url, sha256, bin: 'kubectl-portcullis/node_modules/portcullis/bin/kubectl-portcullis' });
  });
});
