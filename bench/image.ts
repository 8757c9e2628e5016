// npm run bench -- image: the image hack/image.sh builds — its size as a registry stores it
// (zstd layers, as shipped, and gzip for comparison) and unpacked — and the memory of its
// containers under podman: the operator after reconciling config/samples, and the sidecar (with
// the NODE_OPTIONS injection gives it) idle with that bundle loaded and after 2,000 decisions.

import { execFile } from 'node:child_process';
import { chmod, copyFile, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { SIDECAR_NODE_OPTIONS, SIDECAR_RESOURCES } from '../src/webhook/inject.ts';
import { eventually } from '../test/harness/cluster.ts';
import { freePort, kubectl, REPO_ROOT, startControlPlane } from '../test/harness/control-plane.ts';
import { agentKubeconfigFile } from '../test/harness/local-parts.ts';
import type { Container } from '../test/harness/podman.ts';
import { imageEnv, operatorPodSettings, Podman } from '../test/harness/podman.ts';
import type { Figure } from './lib.ts';
import { figure, report } from './lib.ts';

const run = promisify(execFile);
const MB = 1e6;
const MIB = 2 ** 20;
const DECISIONS = 2_000;
const SIZE_TARGET_MB = 60;

/** Builds (or rebuilds) the image and reads what hack/image.sh says about it. */
async function buildImage(): Promise<Podman> {
  console.log('building the image (hack/image.sh)…');
  const { stdout } = await run('bash', [join(REPO_ROOT, 'hack', 'image.sh'), '--print-env'], { maxBuffer: 16 * 1024 * 1024 });
  const env: NodeJS.ProcessEnv = {};
  for (const line of stdout.trim().split('\n')) {
    const at = line.indexOf('=');
    if (at > 0) env[line.slice(0, at)] = line.slice(at + 1);
  }
  return new Podman(imageEnv(env));
}

/** The layers' blob sizes in an OCI archive, in bytes, read from its manifest. */
async function layerBytes(archive: string): Promise<number[]> {
  const read = async (member: string): Promise<string> => (await run('tar', ['-xOf', archive, member], { maxBuffer: 1024 * 1024 })).stdout;
  const index = JSON.parse(await read('index.json')) as { manifests: { digest: string }[] };
  const digest = index.manifests[0]?.digest ?? '';
  const manifest = JSON.parse(await read(`blobs/sha256/${digest.replace('sha256:', '')}`)) as { layers: { size: number }[] };
  return manifest.layers.map((layer) => layer.size);
}

async function ready(port: number, container: Container): Promise<void> {
  await eventually(`${container.name} to be ready (${container.process.output().slice(-2000)})`, async () => {
    const response = await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined);
    return response?.status === 200 ? true : undefined;
  }, 120_000, 250);
}

/** RSS once the process has settled: the smallest of a few readings a second apart. */
async function settledRss(container: Container): Promise<number> {
  const readings: number[] = [];
  for (let i = 0; i < 5; i++) {
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    readings.push(await container.rssBytes());
  }
  return Math.min(...readings);
}

async function authorize(port: number, currency: string): Promise<string> {
  const response = await fetch(`http://127.0.0.1:${port}/v1/authorize`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ tool: 'stripe-payments', action: 'create_payment', params: { amount: 4200, currency, account: '1234567890' } }),
  });
  return ((await response.json()) as { decision: string }).decision;
}

const podman = await buildImage();
const archive = podman.archive;
const figures: Figure[] = [];
const notes: string[] = [];

const zstdLayers = await layerBytes(archive);
const zstdTotal = zstdLayers.reduce((a, b) => a + b, 0);
figures.push(figure('image, compressed (zstd layers, as shipped)', zstdTotal / MB, 'MB', { text: `< ${SIZE_TARGET_MB} MB`, met: zstdTotal / MB < SIZE_TARGET_MB }));
const gzipDir = await mkdtemp(join(tmpdir(), 'portcullis-image-gzip-'));
try {
  const gzipArchive = join(gzipDir, 'image.oci.tar');
  await podman.run(['push', '--quiet', '--compression-format', 'gzip', podman.image, `oci-archive:${gzipArchive}`], 600_000);
  figures.push(figure('image, compressed (gzip layers, for comparison)', (await layerBytes(gzipArchive)).reduce((a, b) => a + b, 0) / MB, 'MB'));
} finally {
  await rm(gzipDir, { recursive: true, force: true });
}
figures.push(figure('image, unpacked', Number(await podman.run(['image', 'inspect', '--format', '{{.Size}}', podman.image])) / MB, 'MB'));
notes.push(
  `layers (zstd): runtime ${((zstdLayers[0] ?? 0) / MB).toFixed(1)} MB (node ${process.version} stripped, opa, libc6/libstdc++6/libgcc-s1, CA bundle), application ${((zstdLayers[1] ?? 0) / MB).toFixed(1)} MB (dist/ and production dependencies)`,
  'node alone is about 108 MB stripped (30 MB under zstd, 40 MB under gzip) and opa 41 MB (11 MB, 14 MB): the two binaries are nine tenths of the image',
);

const plane = await startControlPlane({ log: (line) => { console.log(`[control-plane] ${line}`); } });
const containers: Container[] = [];
try {
  const adminKubeconfig = join(plane.runDir, 'bench-admin.kubeconfig');
  await copyFile(plane.kubeconfig, adminKubeconfig);
  await chmod(adminKubeconfig, 0o644);
  await kubectl(plane, ['create', 'namespace', 'portcullis-system']);
  await podman.load();
  const opsPort = await freePort();
  const pod = await operatorPodSettings();
  const operator = await podman.start(plane, {
    name: 'bench-operator',
    mounts: { [adminKubeconfig]: '/etc/portcullis/kubeconfig' },
    env: { NODE_OPTIONS: pod.nodeOptions },
    memoryLimit: pod.memoryLimit,
    args: ['operator', '--kubeconfig', '/etc/portcullis/kubeconfig', '--identity', 'bench', '--ops-address', `127.0.0.1:${opsPort}`, '--token-address', '127.0.0.1:0', '--log-level', 'warn'],
  });
  containers.push(operator);
  await ready(opsPort, operator);
  await kubectl(plane, ['apply', '-f', join(REPO_ROOT, 'config', 'samples')]);
  await eventually('the finance bundle', async () => ((await kubectl(plane, ['get', 'configmap', 'portcullis-bundle', '-n', 'finance'], { allowFailure: true })).stdout.includes('portcullis-bundle') ? true : undefined), 120_000, 500);
  figures.push(figure('operator container RSS, after reconciling config/samples', (await settledRss(operator)) / MIB, 'MiB'));

  const agentKubeconfig = await agentKubeconfigFile(plane, 'finance', 'finance-agent');
  await chmod(agentKubeconfig, 0o644);
  const httpPort = await freePort();
  const sidecar = await podman.start(plane, {
    name: 'bench-sidecar',
    mounts: { [agentKubeconfig]: '/etc/portcullis/kubeconfig' },
    env: { NODE_OPTIONS: SIDECAR_NODE_OPTIONS },
    memoryLimit: SIDECAR_RESOURCES.limits.memory,
    args: ['sidecar', '--kubeconfig', '/etc/portcullis/kubeconfig', '--agent', 'finance-agent', '--namespace', 'finance', '--http-address', `127.0.0.1:${httpPort}`, '--grpc-address', `127.0.0.1:${await freePort()}`, '--log-level', 'warn'],
  });
  containers.push(sidecar);
  await ready(httpPort, sidecar);
  figures.push(figure('sidecar container RSS, idle with the bundle loaded', (await settledRss(sidecar)) / MIB, 'MiB'));
  const started = performance.now();
  const seen = new Map<string, number>();
  for (let i = 0; i < DECISIONS; i++) {
    const decision = await authorize(httpPort, i % 2 === 0 ? 'USD' : 'GBP');
    seen.set(decision, (seen.get(decision) ?? 0) + 1);
  }
  const seconds = (performance.now() - started) / 1000;
  // The sample allows 3 payments a second (rateLimits): past that, approval_needed.
  if (!seen.has('allow') || seen.get('deny') !== DECISIONS / 2) throw new Error(`expected allow, and ${DECISIONS / 2} deny, got ${JSON.stringify([...seen])}`);
  notes.push(`the ${DECISIONS.toLocaleString('en')} decisions: ${[...seen].map(([decision, count]) => `${count} ${decision}`).join(', ')} (payments in USD, allowed up to the sample's 3 per second, then approval_needed; in GBP, denied)`);
  figures.push(figure(`sidecar container RSS, after ${DECISIONS.toLocaleString('en')} decisions`, (await sidecar.rssBytes()) / MIB, 'MiB'));
  figures.push(figure('sidecar decisions, one client at a time over HTTP', DECISIONS / seconds, 'per s'));
  notes.push(
    `containers under podman ${(await run('podman', ['--version'])).stdout.trim().replace('podman version ', '')} with runc, host network, read-only root filesystem, user 65532; RSS is VmRSS of the container's node process`,
    `the sidecar runs with the NODE_OPTIONS and memory limit injection sets (${SIDECAR_NODE_OPTIONS}, ${SIDECAR_RESOURCES.limits.memory}), the operator with config/manager's (${pod.nodeOptions}, ${pod.memoryLimit})`,
    `archive: ${(await stat(archive)).size.toLocaleString('en')} bytes at dist/image/`,
  );
} finally {
  for (const container of containers.reverse()) await container.stop();
  await plane.stop();
}

await report('image', figures, notes);
