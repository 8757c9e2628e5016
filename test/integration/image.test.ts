// The image hack/image.sh built, run by podman as a restricted pod runs it (host network,
// read-only root filesystem, no capabilities, its own non-root user) against the test control
// plane: the operator image takes the Lease, reconciles config/samples and writes a bundle that
// verifies; the sidecar image loads that bundle and decides. Skipped, loudly, only where podman
// cannot start a container at all.

import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { CoordinationV1Api, CoreV1Api } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { stringify } from 'yaml';
import type { BundleJwks } from '../../src/bundle/index.ts';
import { fromConfigMapData, fromJwks, verifyBundle } from '../../src/bundle/index.ts';
import { eventually, kubeConfigOf } from '../harness/cluster.ts';
import { ensureNamespace, freePort, kubectl, REPO_ROOT } from '../harness/control-plane.ts';
import { agentKubeconfigFile, serviceAccountKubeConfig } from '../harness/local-parts.ts';
import type { Container } from '../harness/podman.ts';
import { imageEnv, mebibytes, operatorPodSettings, Podman } from '../harness/podman.ts';
import { SIDECAR_NODE_OPTIONS, SIDECAR_RESOURCES } from '../../src/webhook/inject.ts';

const plane = inject('controlPlane');
const kc = kubeConfigOf(plane);
const core = kc.makeApiClient(CoreV1Api);
const coordination = kc.makeApiClient(CoordinationV1Api);
const OPERATOR_NS = 'image-system';
const PREFIX = 'image';
const TENANT_NS = 'finance';
const AGENT = 'finance-agent';
const IMAGE_USER = '65532';

const podman = new Podman(imageEnv());
const cannotStart = await podman.cannotStart();
if (cannotStart !== undefined) {
  console.error(`\n!!! SKIPPING the image tests: ${cannotStart}\n!!! The image was built but is not run here; nothing about it is tested beyond the build.\n`);
}

const containers: Container[] = [];
let operator: Container;
let opsPort: number;

/** config/rbac renamed into the test's namespace, and a kubeconfig file for its ServiceAccount. */
async function operatorKubeconfigFile(): Promise<string> {
  await ensureNamespace(plane, OPERATOR_NS);
  const overlay = join(plane.runDir, `${PREFIX}-rbac`);
  await mkdir(overlay, { recursive: true });
  await writeFile(join(overlay, 'kustomization.yaml'), stringify({
    apiVersion: 'kustomize.config.k8s.io/v1beta1', kind: 'Kustomization', namespace: OPERATOR_NS, namePrefix: `${PREFIX}-`,
    resources: [relative(overlay, join(REPO_ROOT, 'config', 'rbac'))],
  }));
  await kubectl(plane, ['apply', '-k', overlay]);
  const config = await serviceAccountKubeConfig(plane, OPERATOR_NS, `${PREFIX}-portcullis-operator`);
  return readableFile(`${PREFIX}-operator.kubeconfig`, config.exportConfig());
}

/** A file in the run's directory that the image's user can read through a bind mount. */
async function readableFile(name: string, text: string): Promise<string> {
  const path = join(plane.runDir, name);
  await writeFile(path, text);
  await chmod(path, 0o644);
  return path;
}

async function verifiedBundle(): Promise<{ revision: string; tenant: string }> {
  const cm = await core.readNamespacedConfigMap({ name: 'portcullis-bundle', namespace: TENANT_NS });
  const trust = await core.readNamespacedConfigMap({ name: 'portcullis-trust', namespace: OPERATOR_NS });
  const publicKeys = await fromJwks(JSON.parse(trust.data?.['jwks.json'] ?? '{}') as BundleJwks);
  const bundle = await verifyBundle(fromConfigMapData({ data: cm.data ?? {}, binaryData: cm.binaryData ?? {} }), { publicKeys, tenant: 'finance' });
  return { revision: bundle.manifest.revision, tenant: bundle.manifest.metadata.tenant };
}

async function ready(port: number, container: Container): Promise<void> {
  await eventually(`${container.name} to be ready (output so far: ${container.process.output().slice(-2000)})`, async () => {
    const response = await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined);
    return response?.status === 200 ? true : undefined;
  }, 90_000, 250);
}

// The reason is in the name, so the suite's closing lines say why these did not run.
describe.skipIf(cannotStart !== undefined)(cannotStart === undefined ? 'the image' : `the image (SKIPPED: ${cannotStart})`, () => {
  beforeAll(async () => {
    await podman.load();
    const kubeconfig = await operatorKubeconfigFile();
    opsPort = await freePort();
    const pod = await operatorPodSettings();
    // With the heap bound and the memory limit of config/manager's Deployment.
    operator = await podman.start(plane, {
      name: 'portcullis-operator',
      mounts: { [kubeconfig]: '/etc/portcullis/kubeconfig' },
      env: { NODE_OPTIONS: pod.nodeOptions },
      memoryLimit: pod.memoryLimit,
      args: [
        'operator', '--kubeconfig', '/etc/portcullis/kubeconfig', '--namespace', OPERATOR_NS, '--identity', 'image-operator',
        '--ops-address', `127.0.0.1:${opsPort}`, '--token-address', '127.0.0.1:0',
      ],
    });
    containers.push(operator);
    await ready(opsPort, operator);
  }, 300_000);

  afterAll(async () => {
    for (const container of containers.reverse()) await container.stop();
  });

  it('runs the operator as its own non-root user, which takes the Lease', async () => {
    expect(await operator.inspect('{{.Config.User}}')).toBe(`${IMAGE_USER}:${IMAGE_USER}`);
    const pid = await operator.inspect('{{.State.Pid}}');
    expect(/^Uid:\s+(\d+)/m.exec(await readFile(`/proc/${pid}/status`, 'utf8'))?.[1]).toBe(IMAGE_USER);
    const holder = await eventually('the image operator to hold the Lease', async () => {
      const lease = await coordination.readNamespacedLease({ name: 'portcullis-operator', namespace: OPERATOR_NS }).catch(() => undefined);
      return lease?.spec?.holderIdentity === 'image-operator' ? lease.spec.holderIdentity : undefined;
    }, 60_000);
    expect(holder).toBe('image-operator');
  });

  it('reconciles config/samples into a signed bundle that verifies against its trust, compiling with the opa it ships', async () => {
    await kubectl(plane, ['apply', '--validate=strict', '-f', join(REPO_ROOT, 'config', 'samples')]);
    const bundle = await eventually('a bundle in finance that verifies against the image operator\'s trust', () => verifiedBundle(), 90_000, 500);
    expect(bundle.tenant).toBe('finance');
    const inForce = await eventually('ToolPolicy payments to be Ready at the revision in force', async () => {
      const out = await kubectl(plane, ['get', 'toolpolicy', 'payments', '-n', TENANT_NS, '-o', 'json']);
      const policy = JSON.parse(out.stdout) as { status?: { bundleRevision?: string; conditions?: { type: string; status: string }[] } };
      const inForce = (await verifiedBundle()).revision;
      return policy.status?.conditions?.find((c) => c.type === 'Ready')?.status === 'True' && policy.status.bundleRevision === inForce ? inForce : undefined;
    }, 60_000, 500);
    expect(inForce).toBe((await verifiedBundle()).revision);
  });

  it('runs the sidecar, which loads that bundle and answers allow and deny on /v1/authorize', async () => {
    const kubeconfig = await agentKubeconfigFile(plane, TENANT_NS, AGENT);
    await chmod(kubeconfig, 0o644);
    const httpPort = await freePort();
    // With the heap bounds and the memory limit injection gives it.
    const sidecar = await podman.start(plane, {
      name: 'portcullis-sidecar',
      mounts: { [kubeconfig]: '/etc/portcullis/kubeconfig' },
      env: { NODE_OPTIONS: SIDECAR_NODE_OPTIONS },
      memoryLimit: SIDECAR_RESOURCES.limits.memory,
      args: [
        'sidecar', '--kubeconfig', '/etc/portcullis/kubeconfig', '--agent', AGENT, '--namespace', TENANT_NS, '--tenant', 'finance',
        '--trust-namespace', OPERATOR_NS, '--http-address', `127.0.0.1:${httpPort}`, '--grpc-address', `127.0.0.1:${await freePort()}`,
      ],
    });
    containers.push(sidecar);
    await ready(httpPort, sidecar);
    const authorize = async (currency: string): Promise<{ status: number; decision: string; rule: string }> => {
      const response = await fetch(`http://127.0.0.1:${httpPort}/v1/authorize`, {
        method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ tool: 'stripe-payments', action: 'create_payment', params: { amount: 4200, currency, account: '1234567890' } }),
      });
      const body = (await response.json()) as { decision: string; rule: string };
      return { status: response.status, decision: body.decision, rule: body.rule };
    };
    expect(await authorize('USD')).toMatchObject({ status: 200, decision: 'allow', rule: 'small-payments' });
    expect(await authorize('GBP')).toMatchObject({ decision: 'deny' });
    expect(await sidecar.rssBytes()).toBeLessThan(mebibytes(SIDECAR_RESOURCES.limits.memory) * 2 ** 20);
  });
});
