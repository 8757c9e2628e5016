// npm run bench -- operator
//
// 1. Propagation: from `kubectl apply` of a changed ToolPolicy to the new
//    bundle in its ConfigMap, over 50 changes (target p99 <= 1 s).
// 2. A full reconcile of many tenants after a restart: TENANTS tenants with one
//    ToolPolicy of RULES rules each, the operator started fresh with no bundle
//    written yet; time until every bundle is written and every policy is Ready
//    (target <= 60 s for 1,000 x 100), and the operator's peak RSS meanwhile
//    (target <= 300 MB).
//
// The operator runs as its own process (`portcullis operator`) against a real
// control plane on loopback. BENCH_TENANTS and BENCH_RULES scale part 2.

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CustomObjectsApi, KubernetesObjectApi, PatchStrategy, Watch } from '@kubernetes/client-node';
import type { KubernetesListObject, KubernetesObject, V1ConfigMap } from '@kubernetes/client-node';
import { ResilientInformer } from '../src/operator/informers.ts';
import { eventually, kubeConfigOf, spawnTracked } from '../test/harness/cluster.ts';
import type { TrackedProcess } from '../test/harness/cluster.ts';
import { freePort, kubectl, REPO_ROOT, startControlPlane } from '../test/harness/control-plane.ts';
import type { Figure } from './lib.ts';
import { figure, percentile, report } from './lib.ts';

const TENANTS = Number(process.env.BENCH_TENANTS ?? 1000);
const RULES = Number(process.env.BENCH_RULES ?? 100);
const CHANGES = 50;

const plane = await startControlPlane({ etcdArgs: ['--quota-backend-bytes=8589934592'], log: (l) => { console.log(`[control-plane] ${l}`); } });
const kc = kubeConfigOf(plane);
const objects = KubernetesObjectApi.makeApiClient(kc);
const custom = kc.makeApiClient(CustomObjectsApi);

function policy(namespace: string, rules: number, salt: number): KubernetesObject {
  const object: KubernetesObject & { spec: unknown } = {
    apiVersion: 'portcullis.dev/v1alpha1',
    kind: 'ToolPolicy',
    metadata: { name: 'payments', namespace },
    spec: {
      subjects: { agents: ['worker'] },
      rules: Array.from({ length: rules }, (_, i) => ({
        name: `rule-${i}`,
        tool: `tool-${i % 10}`,
        decision: 'allow',
        when: [{ param: 'amount', max: 1000 + i + salt }, { param: 'currency', oneOf: ['USD', 'EUR'] }],
      })),
    },
  };
  return object;
}

function agent(namespace: string): KubernetesObject {
  const object: KubernetesObject & { spec: unknown } = {
    apiVersion: 'portcullis.dev/v1alpha1',
    kind: 'AgentIdentity',
    metadata: { name: 'worker', namespace },
    spec: { serviceAccountName: 'worker', owner: { name: 'Bench', email: 'bench@example.com' } },
  };
  return object;
}

async function applyAll(items: KubernetesObject[], concurrency = 8): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const item = items[next++];
      if (item) await objects.patch(item, undefined, undefined, 'bench', true, PatchStrategy.ServerSideApply);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

async function startOperator(): Promise<{ process: TrackedProcess; port: number }> {
  const port = await freePort();
  // The heap bound config/manager/deployment.yaml sets; BENCH_NODE_OPTIONS replaces it (e.g. to add --cpu-prof).
  const nodeArgs = (globalThis.process.env.BENCH_NODE_OPTIONS ?? '--max-old-space-size=384').split(' ').filter(Boolean);
  const process = await spawnTracked(plane, globalThis.process.execPath, [
    ...nodeArgs,
    join(REPO_ROOT, 'bin', 'portcullis.js'), 'operator',
    '--kubeconfig', plane.kubeconfig, '--namespace', 'portcullis-system', '--identity', 'bench',
    '--ops-address', `127.0.0.1:${port}`, '--token-address', '127.0.0.1:0', '--log-level', 'error',
    // One replica: no one to wait for, take the Lease at once.
    '--lease-duration', '3s', '--renew-deadline', '2s', '--retry-period', '500ms',
  ], { TEST_ASSET_OPA: plane.tools.opa });
  return { process, port };
}

async function rssMb(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  return kb / 1024;
}

/** Resolves with the time the bundle ConfigMap of `namespace` shows a revision other than `previous`. */
function nextRevision(namespace: string, previous: string | undefined): { done: Promise<number>; stop: () => void } {
  const watch = new Watch(kc);
  let abort: AbortController | undefined;
  const done = new Promise<number>((resolve, reject) => {
    watch
      .watch(`/api/v1/namespaces/${namespace}/configmaps`, { fieldSelector: 'metadata.name=portcullis-bundle' }, (_phase, cm: V1ConfigMap) => {
        const revision = cm.metadata?.annotations?.['portcullis.dev/revision'];
        if (revision !== undefined && revision !== previous) resolve(performance.now());
      }, (error: unknown) => { if (error instanceof Error) reject(error); })
      .then((controller) => { abort = controller; }, reject);
  });
  return { done, stop: () => abort?.abort() };
}

async function revisionOf(namespace: string): Promise<string | undefined> {
  const out = await kubectl(plane, ['get', 'configmap', 'portcullis-bundle', '-n', namespace, '-o', 'jsonpath={.metadata.annotations.portcullis\\.dev/revision}'], { allowFailure: true });
  return out.code === 0 && out.stdout !== '' ? out.stdout : undefined;
}

const figures: Figure[] = [];
try {
  await kubectl(plane, ['create', 'namespace', 'portcullis-system']);

  // ---- 1. propagation -------------------------------------------------
  const first = await startOperator();
  await kubectl(plane, ['create', 'namespace', 'latency']);
  await applyAll([agent('latency'), policy('latency', 10, 0)]);
  await eventually('the first bundle', () => revisionOf('latency'), 60_000);
  const latencies: number[] = [];
  for (let change = 1; change <= CHANGES; change++) {
    const previous = await revisionOf('latency');
    const watcher = nextRevision('latency', previous);
    await new Promise((r) => setTimeout(r, 50)); // let the watch open
    const started = performance.now();
    await kubectl(plane, ['apply', '-f', '-'], { input: JSON.stringify(policy('latency', 10, change)) });
    const seen = await watcher.done;
    watcher.stop();
    latencies.push(seen - started);
  }
  latencies.sort((a, b) => a - b);
  const p50 = percentile(latencies, 50);
  const p99 = percentile(latencies, 99);
  console.log(`propagation over ${CHANGES} changes: p50 ${p50.toFixed(0)} ms, p99 ${p99.toFixed(0)} ms`);
  figures.push(figure('apply → bundle in ConfigMap p50', p50, 'ms'));
  figures.push(figure('apply → bundle in ConfigMap p99', p99, 'ms', { text: '<= 1000 ms', met: p99 <= 1000 }));
  await first.process.kill('SIGTERM');

  // ---- 2. full reconcile after a restart ------------------------------
  console.log(`creating ${TENANTS} tenants with ${RULES} rules each…`);
  const createStarted = performance.now();
  const namespaces = Array.from({ length: TENANTS }, (_, i) => `tenant-${String(i).padStart(4, '0')}`);
  await applyAll(namespaces.map((name) => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name } })));
  await applyAll(namespaces.flatMap((ns) => [agent(ns), policy(ns, RULES, 0)]));
  console.log(`created in ${((performance.now() - createStarted) / 1000).toFixed(1)} s; starting the operator`);

  const started = performance.now();
  const operator = await startOperator();
  let peakRss = 0;
  const sampler = setInterval(() => {
    void rssMb(operator.process.pid).then((mb) => { peakRss = Math.max(peakRss, mb); });
  }, 200);
  // An informer counts Ready policies from watch events: polling lists would load the API server the operator is measured against.
  const readyPolicies = new Set<string>();
  const policies = new ResilientInformer<KubernetesObject & { status?: { conditions?: { type: string; status: string }[] } }>(
    kc,
    '/apis/portcullis.dev/v1alpha1/toolpolicies',
    async () => (await custom.listClusterCustomObject({ group: 'portcullis.dev', version: 'v1alpha1', plural: 'toolpolicies' })) as KubernetesListObject<KubernetesObject>,
    { name: 'bench-policies', onError: () => undefined },
  );
  policies.onChange((object, verb) => {
    const key = `${object.metadata?.namespace ?? ''}/${object.metadata?.name ?? ''}`;
    if (verb !== 'delete' && object.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True')) readyPolicies.add(key);
    else readyPolicies.delete(key);
  });
  await policies.start();
  const countReady = (): number => readyPolicies.size;
  let lastReport = 0;
  await eventually('every policy to be Ready', () => {
    const ready = countReady();
    if (performance.now() - lastReport > 5000) {
      lastReport = performance.now();
      console.log(`  ${ready} / ${TENANTS + 1} policies Ready after ${((performance.now() - started) / 1000).toFixed(0)} s, RSS ${peakRss.toFixed(0)} MB`);
    }
    return ready >= TENANTS + 1 ? true : undefined;
  }, 600_000, 500);
  const fullSeconds = (performance.now() - started) / 1000;
  clearInterval(sampler);
  await policies.stop();
  peakRss = Math.max(peakRss, await rssMb(operator.process.pid));
  const bundles = (await kubectl(plane, ['get', 'configmaps', '-A', '-l', 'app.kubernetes.io/component=bundle', '--no-headers'])).stdout.trim().split('\n').length;
  console.log(`full reconcile: ${fullSeconds.toFixed(1)} s for ${TENANTS} tenants × ${RULES} rules (${bundles} bundles), peak RSS ${peakRss.toFixed(0)} MB`);
  const scale = `${TENANTS} tenants × ${RULES} rules`;
  figures.push(figure(`full reconcile after restart, ${scale}`, fullSeconds, 's', TENANTS === 1000 && RULES === 100 ? { text: '<= 60 s', met: fullSeconds <= 60 } : undefined));
  figures.push(figure(`operator peak RSS during it`, peakRss, 'MB', { text: '<= 300 MB', met: peakRss <= 300 }));
  figures.push(figure('bundles written', bundles, 'ConfigMaps'));
  await operator.process.kill('SIGTERM');
} finally {
  await plane.stop();
}
await report('operator', figures);
