// The operator against the real API server: bundles, status, pruning and recovery.

import { CoreV1Api, CustomObjectsApi, RbacAuthorizationV1Api } from '@kubernetes/client-node';
import type { V1ConfigMap } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { stringify } from 'yaml';
import type { Bundle, BundleJwks } from '../../src/bundle/index.ts';
import { fromConfigMapData, fromJwks, parseRevision, verifyBundle } from '../../src/bundle/index.ts';
import { createOperatorMetrics } from '../../src/operator/metrics.ts';
import type { Operator } from '../../src/operator/operator.ts';
import { rotateKeyring } from '../../src/operator/signing-keys.ts';
import { join } from 'node:path';
import { eventually, kubeConfigOf } from '../harness/cluster.ts';
import { ensureNamespace, kubectl, REPO_ROOT } from '../harness/control-plane.ts';
import { serviceAccountKubeConfig, startLocalOperator } from '../harness/local-parts.ts';

const plane = inject('controlPlane');
const kc = kubeConfigOf(plane);
const core = kc.makeApiClient(CoreV1Api);
const custom = kc.makeApiClient(CustomObjectsApi);
const rbac = kc.makeApiClient(RbacAuthorizationV1Api);
const OPERATOR_NS = 'portcullis-system';
const metrics = createOperatorMetrics();

let operator: Operator;

beforeAll(async () => {
  await ensureNamespace(plane, OPERATOR_NS);
  // The operator runs with exactly the permissions config/rbac grants it.
  await kubectl(plane, ['apply', '-k', join(REPO_ROOT, 'config', 'rbac')]);
  operator = await startLocalOperator(plane, {
    kubeConfig: await serviceAccountKubeConfig(plane, OPERATOR_NS, 'portcullis-operator'),
    namespace: OPERATOR_NS,
    identity: 'in-process-operator',
    keyringRefreshMs: 500,
    metrics,
  });
});

afterAll(async () => {
  // Undefined when beforeAll failed; that failure is the one to report.
  await (operator as Operator | undefined)?.stop();
});

const apply = async (docs: unknown[]): Promise<void> => {
  await kubectl(plane, ['apply', '--validate=strict', '-f', '-'], { input: docs.map((d) => stringify(d)).join('---\n') });
};

const namespace = (name: string, labels: Record<string, string> = {}): unknown => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } });
const agent = (ns: string, name: string): unknown => ({
  apiVersion: 'portcullis.dev/v1alpha1',
  kind: 'AgentIdentity',
  metadata: { name, namespace: ns },
  spec: { serviceAccountName: name, owner: { name: 'Dana Ruiz', email: 'dana@example.com' } },
});
const policy = (ns: string, name: string, rules: unknown[]): unknown => ({
  apiVersion: 'portcullis.dev/v1alpha1',
  kind: 'ToolPolicy',
  metadata: { name, namespace: ns },
  spec: { subjects: { agents: ['worker'] }, rules },
});
const allowRule = (name: string, max: number): unknown => ({ name, tool: 'stripe-payments', decision: 'allow', when: [{ param: 'amount', max }] });

async function bundleOf(ns: string): Promise<V1ConfigMap | undefined> {
  return core.readNamespacedConfigMap({ name: 'portcullis-bundle', namespace: ns }).catch(() => undefined);
}

/** The key id in a bundle ConfigMap's signature header. */
function signatureKeyId(cm: V1ConfigMap | undefined): string {
  const jws = (JSON.parse(cm?.data?.['.signatures.json'] ?? '{"signatures":[]}') as { signatures: string[] }).signatures[0] ?? '';
  const header = JSON.parse(Buffer.from(jws.split('.')[0] ?? '', 'base64url').toString('utf8')) as { kid?: string };
  return header.kid ?? '';
}

async function verifiedBundle(ns: string, tenant: string): Promise<Bundle> {
  const cm = await bundleOf(ns);
  if (!cm) throw new Error(`no bundle in ${ns}`);
  const trust = await core.readNamespacedConfigMap({ name: 'portcullis-trust', namespace: OPERATOR_NS });
  const publicKeys = await fromJwks(JSON.parse(trust.data?.['jwks.json'] ?? '{}') as BundleJwks);
  return verifyBundle(fromConfigMapData({ data: cm.data ?? {}, binaryData: cm.binaryData ?? {} }), { publicKeys, tenant });
}

interface Conditioned {
  metadata: { generation: number };
  status?: { observedGeneration?: number; bundleRevision?: string; ruleCount?: number; conditions?: { type: string; status: string; reason: string; message: string }[] };
}

async function toolPolicy(ns: string, name: string): Promise<Conditioned> {
  return (await custom.getNamespacedCustomObject({ group: 'portcullis.dev', version: 'v1alpha1', namespace: ns, plural: 'toolpolicies', name })) as Conditioned;
}

function ready(object: Conditioned): { status: string; reason: string; message: string } | undefined {
  return object.status?.conditions?.find((c) => c.type === 'Ready');
}

describe('the operator', () => {
  it('writes a signed bundle to every namespace of a tenant, and the status of each resource', async () => {
    await apply([
      namespace('alpha-one', { 'portcullis.dev/tenant': 'alpha' }),
      namespace('alpha-two', { 'portcullis.dev/tenant': 'alpha' }),
      agent('alpha-one', 'worker'),
      policy('alpha-one', 'payments', [allowRule('small', 100)]),
    ]);
    for (const ns of ['alpha-one', 'alpha-two']) {
      // The namespace may first get a bundle from before the policy arrived.
      const bundle = await eventually(`a bundle holding the policy in ${ns}`, async () => {
        const b = await verifiedBundle(ns, 'alpha');
        return JSON.stringify(b.data).includes('"small"') ? b : undefined;
      });
      expect(bundle.manifest.metadata.tenant).toBe('alpha');
    }
    // The tenant may be rebuilt once more as its second namespace arrives: status follows the last bundle.
    const status = await eventually('payments to be Ready at the revision in force', async () => {
      const p = await toolPolicy('alpha-one', 'payments');
      const inForce = (await verifiedBundle('alpha-one', 'alpha')).manifest.revision;
      return ready(p)?.status === 'True' && p.status?.bundleRevision === inForce ? p : undefined;
    });
    expect(status.status?.ruleCount).toBe(1);
    expect(status.status?.observedGeneration).toBe(status.metadata.generation);
    expect(status.status?.bundleRevision).toBe((await verifiedBundle('alpha-one', 'alpha')).manifest.revision);
    const cm = await bundleOf('alpha-two');
    expect(cm?.metadata?.labels).toMatchObject({ 'portcullis.dev/tenant': 'alpha', 'app.kubernetes.io/managed-by': 'portcullis-operator' });
  });

  it("lets the agents' ServiceAccounts of each member namespace read their bundle, and nobody else", async () => {
    const canI = async (verb: string, resource: string, as: string, ns: string): Promise<string> => {
      const result = await kubectl(plane, ['auth', 'can-i', verb, resource, '-n', ns, `--as=system:serviceaccount:${as}`], { allowFailure: true });
      return result.stdout.trim();
    };
    await eventually('the worker to be able to watch its bundle in alpha-one', async () => ((await canI('watch', 'configmaps/portcullis-bundle', 'alpha-one:worker', 'alpha-one')) === 'yes' ? true : undefined));
    expect(await canI('get', 'configmaps/portcullis-bundle', 'alpha-one:worker', 'alpha-one')).toBe('yes');
    // The application's own ConfigMaps are not the sidecar's to read.
    expect(await canI('get', 'configmaps/app-settings', 'alpha-one:worker', 'alpha-one')).toBe('no');
    expect(await canI('list', 'configmaps', 'alpha-one:worker', 'alpha-one')).toBe('no');
    expect(await canI('create', 'events', 'alpha-one:worker', 'alpha-one')).toBe('yes');
    expect(await canI('update', 'configmaps', 'alpha-one:worker', 'alpha-one')).toBe('no');
    expect(await canI('get', 'secrets', 'alpha-one:worker', 'alpha-one')).toBe('no');
    expect(await canI('watch', 'configmaps', 'alpha-one:default', 'alpha-one')).toBe('no');
    // alpha-two holds no AgentIdentity: its binding names nobody.
    expect(await canI('watch', 'configmaps', 'alpha-one:worker', 'alpha-two')).toBe('no');
  });

  it('grows the revision when a rule changes, and the new bundle holds the change', async () => {
    const before = (await verifiedBundle('alpha-one', 'alpha')).manifest.revision;
    await apply([policy('alpha-one', 'payments', [allowRule('small', 100), allowRule('medium', 1000)])]);
    const after = await eventually('a new revision', async () => {
      const b = await verifiedBundle('alpha-two', 'alpha');
      return b.manifest.revision !== before ? b : undefined;
    });
    expect(parseRevision(after.manifest.revision).sequence).toBe(parseRevision(before).sequence + 1n);
    expect(JSON.stringify(after.data)).toContain('"medium"');
    const p = await eventually('ruleCount 2', async () => {
      const got = await toolPolicy('alpha-one', 'payments');
      return got.status?.ruleCount === 2 ? got : undefined;
    });
    expect(ready(p)?.status).toBe('True');
  });

  it('keeps the last good bundle when a policy is invalid, and says why in status and an event', async () => {
    const goodRevision = (await verifiedBundle('alpha-one', 'alpha')).manifest.revision;
    const good = await bundleOf('alpha-one');
    // RE2 has no look-behind; the API server cannot know, the compiler does.
    await apply([policy('alpha-one', 'broken', [{ name: 'lookbehind', tool: 'stripe-payments', decision: 'allow', when: [{ param: 'account', regex: '(?<=x)y' }] }])]);
    const broken = await eventually('broken to be Ready=False', async () => {
      const p = await toolPolicy('alpha-one', 'broken');
      return ready(p)?.status === 'False' ? p : undefined;
    });
    expect(ready(broken)?.reason).toBe('RegexError');
    expect(ready(broken)?.message).toContain('rule lookbehind');
    expect(ready(broken)?.message).toContain(`revision ${goodRevision} stays in force`);
    expect(broken.status?.conditions?.find((c) => c.type === 'Compiled')?.status).toBe('False');
    // The valid policy stays Ready: its generation is in the bundle in force.
    expect(ready(await toolPolicy('alpha-one', 'payments'))?.status).toBe('True');
    expect((await bundleOf('alpha-one'))?.data).toEqual(good?.data);
    expect((await bundleOf('alpha-one'))?.binaryData).toEqual(good?.binaryData);
    const events = await eventually('a warning event', async () => {
      const list = await core.listNamespacedEvent({ namespace: 'alpha-one', fieldSelector: 'involvedObject.name=broken' });
      return list.items.length > 0 ? list.items : undefined;
    });
    expect(events[0]?.reason).toBe('InvalidPolicy');
    expect(events[0]?.type).toBe('Warning');

    // Even while the tenant is invalid, a bundle edited by hand is put back.
    await core.patchNamespacedConfigMap({ name: 'portcullis-bundle', namespace: 'alpha-one', body: [{ op: 'replace', path: '/data/data.json', value: '{}' }] });
    await eventually('the last good bundle to be put back', async () => ((await bundleOf('alpha-one'))?.data?.['data.json'] === good?.data?.['data.json'] ? true : undefined));
    expect((await verifiedBundle('alpha-one', 'alpha')).manifest.revision).toBe(goodRevision);

    // A valid change elsewhere in the tenant waits too, and says so.
    await apply([policy('alpha-one', 'payments', [allowRule('small', 100)])]);
    const blocked = await eventually('payments to be TenantBlocked', async () => {
      const p = await toolPolicy('alpha-one', 'payments');
      return ready(p)?.reason === 'TenantBlocked' ? p : undefined;
    });
    expect(ready(blocked)?.message).toContain('ToolPolicy alpha-one/broken');

    await kubectl(plane, ['delete', 'toolpolicy', 'broken', '-n', 'alpha-one']);
    const fixed = await eventually('payments Ready again', async () => {
      const p = await toolPolicy('alpha-one', 'payments');
      return ready(p)?.status === 'True' && p.status?.ruleCount === 1 ? p : undefined;
    });
    expect(fixed.status?.bundleRevision).not.toBe(goodRevision);
  });

  it('gives a policy with a thousand invalid regexes a status the API server accepts: the first problems, then a count', async () => {
    await ensureNamespace(plane, 'regex-thousand');
    const rules = Array.from({ length: 1000 }, (_, i) => ({ name: `r${i}`, tool: 'stripe-payments', decision: 'allow', when: [{ param: 'account', regex: `(?<=x${i})y` }] }));
    await kubectl(plane, ['apply', '--server-side', '-f', '-'], { input: stringify(policy('regex-thousand', 'thousand', rules)) });
    const refused = await eventually('the thousand-regex policy to be Ready=False', async () => {
      const p = await toolPolicy('regex-thousand', 'thousand');
      return ready(p)?.status === 'False' ? p : undefined;
    }, 60_000);
    expect(ready(refused)?.reason).toBe('RegexError');
    expect(ready(refused)?.message).toContain('rule r0,');
    expect(ready(refused)?.message).toMatch(/and 99\d more problems/);
    expect(ready(refused)?.message.length).toBeLessThan(5_000);
    const events = await eventually('its warning event', async () => {
      const list = await core.listNamespacedEvent({ namespace: 'regex-thousand', fieldSelector: 'involvedObject.name=thousand' });
      return list.items.length > 0 ? list.items : undefined;
    });
    expect(events[0]?.message?.length).toBeLessThanOrEqual(1_024);
    expect(events[0]?.message).toMatch(/more problems$/);
    await kubectl(plane, ['delete', 'namespace', 'regex-thousand', '--wait=false']);
  });

  it('prunes the bundle from a namespace that leaves the tenant, and gives it the new tenant\'s', async () => {
    await apply([namespace('alpha-two', { 'portcullis.dev/tenant': 'beta' })]);
    const moved = await eventually('alpha-two to carry the beta bundle', async () => {
      const cm = await bundleOf('alpha-two');
      return cm?.metadata?.labels?.['portcullis.dev/tenant'] === 'beta' ? cm : undefined;
    });
    expect(moved.metadata?.labels?.['portcullis.dev/tenant']).toBe('beta');
    await verifiedBundle('alpha-two', 'beta');
    await expect(verifiedBundle('alpha-two', 'alpha')).rejects.toThrow(/tenant/);
    // Whichever tenant reconciled first, the sidecar access in alpha-two ends up beta's, not deleted.
    const binding = await eventually("alpha-two's sidecar RoleBinding to be beta's", async () => {
      const rb = await rbac.readNamespacedRoleBinding({ name: 'portcullis-sidecar', namespace: 'alpha-two' }).catch(() => undefined);
      return rb?.metadata?.labels?.['portcullis.dev/tenant'] === 'beta' ? rb : undefined;
    });
    expect(binding.roleRef.name).toBe('portcullis-sidecar');
    await operator.idle();
    expect((await rbac.readNamespacedRole({ name: 'portcullis-sidecar', namespace: 'alpha-two' })).metadata?.labels?.['portcullis.dev/tenant']).toBe('beta');
  });

  it('prunes bundles when a namespace no longer takes one', async () => {
    await apply([namespace('gamma'), agent('gamma', 'worker')]);
    await eventually('a bundle in gamma', () => bundleOf('gamma'));
    await kubectl(plane, ['delete', 'agentidentity', 'worker', '-n', 'gamma']);
    await eventually('the gamma bundle to be pruned', async () => ((await bundleOf('gamma')) === undefined ? true : undefined));
    const trust = await core.readNamespacedConfigMap({ name: 'portcullis-trust', namespace: 'gamma' }).catch(() => undefined);
    expect(trust).toBeUndefined();
  });

  it('puts back a bundle that was edited by hand', async () => {
    const original = await bundleOf('alpha-one');
    await core.patchNamespacedConfigMap(
      { name: 'portcullis-bundle', namespace: 'alpha-one', body: [{ op: 'replace', path: '/data/data.json', value: '{"tampered":true}' }] },
    );
    const restored = await eventually('the bundle to be restored', async () => {
      const cm = await bundleOf('alpha-one');
      return cm?.data?.['data.json'] === original?.data?.['data.json'] ? cm : undefined;
    });
    expect(restored.data).toEqual(original?.data);
  });

  it('rotates the signing key with an overlap: new key published first, old bundles still verify', async () => {
    const before = await bundleOf('alpha-one');
    const oldKid = signatureKeyId(before);
    const newKid = await rotateKeyring(core, OPERATOR_NS, 'portcullis-signing-keys');
    expect(newKid).not.toBe(oldKid);
    const resigned = await eventually('the bundle to be signed with the new key', async () => {
      const cm = await bundleOf('alpha-one');
      return signatureKeyId(cm) === newKid ? cm : undefined;
    });
    // The content did not change, so neither did the revision.
    expect(resigned.metadata?.annotations?.['portcullis.dev/revision']).toBe(before?.metadata?.annotations?.['portcullis.dev/revision']);
    const trust = await core.readNamespacedConfigMap({ name: 'portcullis-trust', namespace: OPERATOR_NS });
    const publicKeys = await fromJwks(JSON.parse(trust.data?.['jwks.json'] ?? '{}') as BundleJwks);
    expect([...publicKeys.keys()].sort()).toEqual([oldKid, newKid].sort());
    // A sidecar still holding the bundle signed with the old key can verify it.
    await expect(verifyBundle(fromConfigMapData({ data: before?.data ?? {}, binaryData: before?.binaryData ?? {} }), { publicKeys, tenant: 'alpha' })).resolves.toBeDefined();
    await verifiedBundle('alpha-one', 'alpha');
  });

  it('recovers when kube-apiserver restarts mid-run, losing nothing', async () => {
    const before = (await verifiedBundle('alpha-one', 'alpha')).manifest.revision;
    const response = await fetch(`${plane.controlUrl}/restart-apiserver`, { method: 'POST' });
    expect(response.status).toBe(200);
    await apply([policy('alpha-one', 'after-restart', [allowRule('after', 5)])]);
    const after = await eventually('a bundle with the change made after the restart', async () => {
      const b = await verifiedBundle('alpha-one', 'alpha');
      return b.manifest.revision !== before && JSON.stringify(b.data).includes('"after"') ? b : undefined;
    }, 60_000, 250);
    expect(parseRevision(after.manifest.revision).sequence).toBeGreaterThan(parseRevision(before).sequence);
    expect(JSON.stringify(after.data)).toContain('"small"');
  });

  it('makes 200 policies applied at once Ready with a handful of compiles, not 200', async () => {
    const reconcilesBefore = (await metrics.reconcileTotal.get()).values.reduce((n, v) => n + v.value, 0);
    const docs = [namespace('burst'), agent('burst', 'worker'), ...Array.from({ length: 200 }, (_, i) => policy('burst', `p-${String(i).padStart(3, '0')}`, [allowRule(`r${i}`, i + 1)]))];
    await apply(docs);
    await eventually('all 200 policies Ready', async () => {
      const list = (await custom.listNamespacedCustomObject({ group: 'portcullis.dev', version: 'v1alpha1', namespace: 'burst', plural: 'toolpolicies' })) as { items: Conditioned[] };
      const readyCount = list.items.filter((p) => ready(p)?.status === 'True' && p.status?.observedGeneration === p.metadata.generation).length;
      return readyCount === 200 ? true : undefined;
    }, 60_000, 250);
    const bundle = await verifiedBundle('burst', 'burst');
    expect((JSON.stringify(bundle.data).match(/"r\d+"/g) ?? []).length).toBe(200);
    const reconciles = (await metrics.reconcileTotal.get()).values.reduce((n, v) => n + v.value, 0) - reconcilesBefore;
    expect(reconciles).toBeLessThan(40);
  }, 90_000);
});
