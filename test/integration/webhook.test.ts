// The injector as the API server calls it: over TLS, for pods created through
// the real control plane, with the ValidatingAdmissionPolicy behind it.

import { execFile } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CoreV1Api } from '@kubernetes/client-node';
import type { V1Pod } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, inject as injectContext, it } from 'vitest';
import { stringify } from 'yaml';
import { envoyBootstrap, startWebhook } from '../../src/webhook/index.ts';
import type { RunningWebhook } from '../../src/webhook/index.ts';
import { AUTHZ_CONTAINER, ENVOY_CONTAINER, INJECTED_ANNOTATION } from '../../src/webhook/inject.ts';
import { INJECTOR_NAME, REQUIRE_INJECTION_POLICY } from '../../src/webhook/configurations.ts';
import { eventually, kubeConfigOf } from '../harness/cluster.ts';
import { localWebhookOptions, serviceAccountKubeConfig } from '../harness/local-parts.ts';
import { freePort, kubectl, REPO_ROOT } from '../harness/control-plane.ts';

const plane = injectContext('controlPlane');
const kc = kubeConfigOf(plane);
const core = kc.makeApiClient(CoreV1Api);
const run = promisify(execFile);
// The operator's own namespace, where config/rbac grants it its Secrets.
const SYSTEM_NS = 'portcullis-system';

let webhook: RunningWebhook;

function podManifest(namespace: string, name: string, annotations: Record<string, string> = {}): string {
  return stringify({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace, annotations },
    spec: { serviceAccountName: 'agent', containers: [{ name: 'agent', image: 'agent:1' }] },
  });
}

async function createPod(namespace: string, name: string, annotations: Record<string, string> = {}): Promise<V1Pod> {
  await kubectl(plane, ['apply', '-f', '-'], { input: podManifest(namespace, name, annotations) });
  return core.readNamespacedPod({ name, namespace });
}

const sidecarNames = (pod: V1Pod): string[] => [...(pod.spec?.initContainers ?? []), ...(pod.spec?.containers ?? [])].map((c) => c.name).filter((n) => n.startsWith('portcullis-'));

beforeAll(async () => {
  for (const [name, labels] of [
    [SYSTEM_NS, {}],
    ['inject-on', { 'portcullis.dev/injection': 'enabled' }],
    ['inject-off', {}],
  ] as const) {
    await kubectl(plane, ['apply', '-f', '-'], { input: stringify({ apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } }) });
  }
  // The webhook runs with exactly the permissions config/rbac grants the operator.
  await kubectl(plane, ['apply', '-k', join(REPO_ROOT, 'config', 'rbac')]);
  const operatorClient = await serviceAccountKubeConfig(plane, SYSTEM_NS, 'portcullis-operator');
  webhook = await startWebhook(localWebhookOptions(operatorClient, SYSTEM_NS, await freePort()));
  // The API server needs a moment to see new admission configurations.
  await eventually('the injector to be called', async () => {
    const probe = await createPod('inject-on', `probe-${Date.now()}`);
    return sidecarNames(probe).length > 0 ? true : undefined;
  }, 30_000, 500);
});

afterAll(async () => {
  await webhook.stop();
  // Leave no admission object behind for the other test files.
  await kubectl(plane, ['delete', 'mutatingwebhookconfiguration', INJECTOR_NAME, '--ignore-not-found']);
  await kubectl(plane, ['delete', 'validatingadmissionpolicybinding,validatingadmissionpolicy', '-l', 'app.kubernetes.io/component=webhook', '--ignore-not-found']);
});

describe('the injector, called by the API server over TLS', () => {
  it('injects every pod of a namespace labelled for injection, as native sidecars', async () => {
    const pod = await createPod('inject-on', 'agent-1');
    expect(pod.spec?.initContainers?.map((c) => [c.name, c.restartPolicy])).toEqual([
      [AUTHZ_CONTAINER, 'Always'],
      [ENVOY_CONTAINER, 'Always'],
    ]);
    expect(pod.spec?.containers[0]?.env?.find((e) => e.name === 'HTTPS_PROXY')?.value).toBe('http://127.0.0.1:15001');
    expect(pod.spec?.volumes?.some((v) => v.projected?.sources?.[0]?.serviceAccountToken?.audience === 'portcullis')).toBe(true);
    expect(JSON.parse(pod.metadata?.annotations?.[INJECTED_ANNOTATION] ?? '{}')).toMatchObject({ version: '0.1.0', native: true });
  });

  it('lets a pod opt out in an injected namespace', async () => {
    const pod = await createPod('inject-on', 'opted-out', { 'portcullis.dev/inject': 'false' });
    expect(sidecarNames(pod)).toEqual([]);
  });

  it('injects an annotated pod in another namespace, and leaves the others alone', async () => {
    expect(sidecarNames(await createPod('inject-off', 'annotated', { 'portcullis.dev/inject': 'true' }))).toEqual([AUTHZ_CONTAINER, ENVOY_CONTAINER]);
    expect(sidecarNames(await createPod('inject-off', 'plain'))).toEqual([]);
  });

  it('never touches kube-system or the operator\'s own namespace, annotation or not', async () => {
    expect(sidecarNames(await createPod('kube-system', 'system-pod', { 'portcullis.dev/inject': 'true' }))).toEqual([]);
    expect(sidecarNames(await createPod(SYSTEM_NS, 'operator-pod', { 'portcullis.dev/inject': 'true' }))).toEqual([]);
  });

  it('changes nothing in a pod submitted already injected', async () => {
    const injected = await core.readNamespacedPod({ name: 'agent-1', namespace: 'inject-on' });
    const resubmitted = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'agent-2', namespace: 'inject-on', annotations: injected.metadata?.annotations }, spec: injected.spec };
    await kubectl(plane, ['create', '-f', '-'], { input: JSON.stringify(resubmitted) });
    const stored = await core.readNamespacedPod({ name: 'agent-2', namespace: 'inject-on' });
    expect(stored.spec?.initContainers).toEqual(injected.spec?.initContainers);
    expect(stored.spec?.containers).toEqual(injected.spec?.containers);
    expect(stored.spec?.volumes).toEqual(injected.spec?.volumes);
  });

  it('gives Envoy a bootstrap that Envoy\'s own types accept, and the checker refuses a broken one', async () => {
    const checker = process.env.TEST_ASSET_ENVOY_CHECK;
    if (!checker) throw new Error('TEST_ASSET_ENVOY_CHECK must name hack/tools/envoy-check (hack/test.sh builds it)');
    const pod = await core.readNamespacedPod({ name: 'agent-1', namespace: 'inject-on' });
    const args = pod.spec?.initContainers?.find((c) => c.name === ENVOY_CONTAINER)?.args ?? [];
    const dir = await mkdtemp(join(tmpdir(), 'portcullis-envoy-'));
    await writeFile(join(dir, 'injected.json'), args[args.indexOf('--config-yaml') + 1] ?? '');
    const broken = envoyBootstrap();
    (broken.admin as { address: { socket_address: { port_value: number } } }).address.socket_address.port_value = 70_000;
    await writeFile(join(dir, 'broken.json'), JSON.stringify(broken));
    const ok = await run(checker, [join(dir, 'injected.json')]);
    expect(ok.stdout).toContain('ok ');
    const failed = await run(checker, [join(dir, 'broken.json')]).then(() => 'passed', (error: unknown) => String((error as { stdout?: string }).stdout));
    expect(failed).toMatch(/FAIL .*PortValue: value must be less than or equal to 65535/);
  });

  it('refuses an opted-in pod when the injector is down, and still admits everything else', async () => {
    await webhook.stop();
    // The API server compiles a policy a moment after it is written.
    await eventually('the policy to be in force', async () => {
      const probe = await kubectl(plane, ['apply', '-f', '-'], { input: podManifest('inject-on', `policy-probe-${Date.now()}`), allowFailure: true });
      return probe.stderr.includes(REQUIRE_INJECTION_POLICY) ? true : undefined;
    }, 30_000, 500);
    const refused = await kubectl(plane, ['apply', '-f', '-'], { input: podManifest('inject-on', 'unguarded'), allowFailure: true });
    const created = await core.readNamespacedPod({ name: 'unguarded', namespace: 'inject-on' }).catch(() => undefined);
    expect(created ? sidecarNames(created) : 'not created').toBe('not created');
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain(REQUIRE_INJECTION_POLICY);
    expect(refused.stderr).toContain('has no portcullis-authz sidecar');
    expect(sidecarNames(await createPod('inject-off', 'still-fine'))).toEqual([]);
    expect(sidecarNames(await createPod('kube-system', 'system-still-fine'))).toEqual([]);
  });
});
