// The Helm chart (charts/portcullis) as users meet it: helm lint, helm template, helm install,
// upgrade and uninstall against the real API server, server-side apply of what it renders, and
// one source with config/: with default values the chart renders the objects
// `kubectl kustomize config/` does, field for field.
//
// What the comparison ignores, and nothing else: Helm's standard labels (helm.sh/chart and
// app.kubernetes.io/managed-by, instance and version) on objects and pod templates, and comments
// and layout (objects are compared parsed). The chart is rendered as release "portcullis" in
// namespace portcullis-system, the names config/ uses.

import { execFile } from 'node:child_process';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { parseAllDocuments, stringify } from 'yaml';
import { ensureNamespace, kubectl, REPO_ROOT, runProcess } from '../harness/control-plane.ts';

const plane = inject('controlPlane');
const run = promisify(execFile);
const CHART = join(REPO_ROOT, 'charts', 'portcullis');
const HELM_LABELS = ['helm.sh/chart', 'app.kubernetes.io/managed-by', 'app.kubernetes.io/instance', 'app.kubernetes.io/version'];
// Another name than "portcullis": other test files hold config/rbac's ClusterRoles on the same API server.
const RELEASE = 'helm-portcullis';
const RELEASE_NS = 'helm-portcullis-system';

interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  spec?: { template?: { metadata?: { labels?: Record<string, string> } } } & Record<string, unknown>;
  [field: string]: unknown;
}

interface RunResult { stdout: string; stderr: string; code: number }

let helmBinary: string;
let helmHome: string;

/** helm from TEST_ASSET_HELM, else built (or found in the cache) by hack/build-tools.sh. */
async function findHelm(): Promise<string> {
  const explicit = process.env.TEST_ASSET_HELM;
  if (explicit) return explicit;
  const { stdout } = await run('bash', [join(REPO_ROOT, 'hack', 'build-tools.sh'), '--print-env', 'helm'], { maxBuffer: 1 << 20 });
  const path = /^TEST_ASSET_HELM=(.+)$/m.exec(stdout)?.[1];
  if (!path) throw new Error('TEST_ASSET_HELM is not set and hack/build-tools.sh --print-env helm did not print it');
  return path;
}

async function helm(args: string[], options: { allowFailure?: boolean } = {}): Promise<RunResult> {
  // Helm's cache, config and data in a folder of the run's, never the user's home.
  const env = { ...process.env, HELM_CACHE_HOME: join(helmHome, 'cache'), HELM_CONFIG_HOME: join(helmHome, 'config'), HELM_DATA_HOME: join(helmHome, 'data') };
  const result = await runProcess(helmBinary, [...args, '--kubeconfig', plane.kubeconfig], { env });
  if (result.code !== 0 && options.allowFailure !== true) throw new Error(`helm ${args.join(' ')} failed (${String(result.code)}): ${result.stderr.trim()}`);
  return result;
}

function parseObjects(yamlText: string, source: string): K8sObject[] {
  return parseAllDocuments(yamlText).flatMap((doc) => {
    if (doc.errors.length > 0) throw new Error(`${source}: ${doc.errors.map((e) => e.message).join('; ')}`);
    const value = doc.toJS() as K8sObject | null;
    return value === null ? [] : [value];
  });
}

/** helm template with --set flags (`path=value`) and --set-json ones (`path=json`). */
async function render(options: { release?: string; namespace?: string; set?: string[]; setJson?: string[] } = {}): Promise<K8sObject[]> {
  const args = ['template', options.release ?? 'portcullis', CHART, '--namespace', options.namespace ?? 'portcullis-system'];
  for (const value of options.set ?? []) args.push('--set', value);
  for (const value of options.setJson ?? []) args.push('--set-json', value);
  return parseObjects((await helm(args)).stdout, 'helm template');
}

const keyOf = (o: K8sObject): string => `${o.kind} ${o.metadata.namespace ?? ''}${o.metadata.namespace ? '/' : ''}${o.metadata.name}`;

function withoutHelmLabels(labels: Record<string, string> | undefined): Record<string, string> | undefined {
  if (labels === undefined) return undefined;
  return Object.fromEntries(Object.entries(labels).filter(([key]) => !HELM_LABELS.includes(key)));
}

/** The object as the comparison sees it: Helm's standard labels removed, nothing else touched. */
function normalised(object: K8sObject): K8sObject {
  const copy = structuredClone(object);
  const labels = withoutHelmLabels(copy.metadata.labels);
  if (labels !== undefined) copy.metadata.labels = labels;
  const template = copy.spec?.template?.metadata;
  if (template?.labels !== undefined) template.labels = withoutHelmLabels(template.labels) ?? {};
  return copy;
}

const shown = (value: unknown): string => (value === undefined ? 'nothing' : JSON.stringify(value));

/** Every field path where the two differ, with what each side has there. */
function fieldDifferences(path: string, ours: unknown, theirs: unknown): string[] {
  if (Array.isArray(ours) && Array.isArray(theirs)) {
    const length = Math.max(ours.length, theirs.length);
    return Array.from({ length }, (_, i) => fieldDifferences(`${path}[${String(i)}]`, ours[i], theirs[i])).flat();
  }
  const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  if (isRecord(ours) && isRecord(theirs)) {
    const keys = [...new Set([...Object.keys(ours), ...Object.keys(theirs)])].sort();
    return keys.flatMap((key) => fieldDifferences(path === '' ? key : `${path}.${key}`, ours[key], theirs[key]));
  }
  return JSON.stringify(ours) === JSON.stringify(theirs) ? [] : [`${path}: config/ has ${shown(ours)}, the chart has ${shown(theirs)}`];
}

/** What differs between config/'s objects and the chart's, one line per object missing or field differing. */
function drift(fromConfig: K8sObject[], fromChart: K8sObject[]): string[] {
  const byKey = (objects: K8sObject[]): Map<string, K8sObject> => new Map(objects.map((o) => [keyOf(o), normalised(o)]));
  const config = byKey(fromConfig);
  const chart = byKey(fromChart);
  const lines: string[] = [];
  for (const [key, object] of config) {
    const rendered = chart.get(key);
    if (rendered === undefined) lines.push(`${key}: in config/, not rendered by the chart`);
    else lines.push(...fieldDifferences('', object, rendered).map((line) => `${key}: ${line}`));
  }
  for (const key of chart.keys()) if (!config.has(key)) lines.push(`${key}: rendered by the chart, not in config/`);
  return lines;
}

async function kustomize(path: string): Promise<K8sObject[]> {
  return parseObjects((await kubectl(plane, ['kustomize', path])).stdout, `kubectl kustomize ${path}`);
}

function find(objects: K8sObject[], kind: string, name: string): K8sObject {
  const found = objects.find((o) => o.kind === kind && o.metadata.name === name);
  if (found === undefined) throw new Error(`no ${kind} ${name} among ${objects.map(keyOf).join(', ')}`);
  return found;
}

interface Container { args: string[]; volumeMounts: { name: string; mountPath: string; readOnly?: boolean }[] }
interface PodSpec { containers: Container[]; volumes: { name: string; secret?: { secretName: string } }[] }
const podSpecOf = (deployment: K8sObject): PodSpec => (deployment.spec as { template: { spec: PodSpec } }).template.spec;

beforeAll(async () => {
  helmBinary = await findHelm();
  helmHome = await mkdtemp(join(tmpdir(), 'portcullis-helm-'));
}, 600_000);

describe('the chart, checked by helm', () => {
  it.each([
    { name: 'the default values', set: [] },
    { name: 'cert-manager certificates, a ServiceMonitor and agent namespace policies', set: ['certificates.mode=cert-manager', 'metrics.serviceMonitor.enabled=true', 'agentNetworkPolicy.namespaces={finance,research}', 'namespace.create=true'] },
    { name: 'no NetworkPolicy and no PodDisruptionBudget', set: ['networkPolicy.enabled=false', 'podDisruptionBudget.enabled=false'] },
    { name: 'the Grafana dashboard and the Argo CD health checks', set: ['grafana.dashboard.enabled=true', 'argocd.healthChecks.enabled=true'] },
  ])('passes helm lint --strict with $name', async ({ set }) => {
    const result = await helm(['lint', '--strict', CHART, ...set.flatMap((value) => ['--set', value])]);
    expect(result.stdout).toContain('1 chart(s) linted, 0 chart(s) failed');
  });

  it.each([
    { name: 'a certificate mode it does not know', set: 'certificates.mode=vault', says: "at '/certificates/mode': value must be one of 'operator', 'cert-manager'" },
    { name: 'no replicas', set: 'replicas=0', says: "at '/replicas': minimum: got 0, want 1" },
    { name: 'a misspelt value', set: 'replica=2', says: "additional properties 'replica' not allowed" },
    { name: 'a digest that is not one', set: 'image.digest=latest', says: "at '/image/digest': 'latest' does not match pattern" },
    { name: 'an extra argument that is not a flag', set: 'operator.extraArgs={workers}', says: "at '/operator/extraArgs/0': 'workers' does not match pattern '^--'" },
    { name: 'a Redis URL with a password in it', set: 'operator.countersRedisUrl=redis://agent:secret@redis:6379', says: "at '/operator/countersRedisUrl': 'redis://agent:secret@redis:6379' does not match pattern" },
    { name: 'a namespace name Kubernetes refuses', set: 'agentNetworkPolicy.namespaces={Finance}', says: "at '/agentNetworkPolicy/namespaces/0': 'Finance' does not match pattern" },
  ])('refuses $name, naming the value (values.schema.json)', async ({ set, says }) => {
    const result = await helm(['template', 'portcullis', CHART, '--set', set], { allowFailure: true });
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain('values don\'t meet the specifications of the schema');
    expect(result.stderr).toContain(says);
  });
});

describe('one source: config/ and the chart', () => {
  it('render the same objects with default values, but the Namespace, which helm install --create-namespace makes', async () => {
    const config = await kustomize(join(REPO_ROOT, 'config'));
    const chart = await render();
    expect(drift(config.filter((o) => o.kind !== 'Namespace'), chart)).toEqual([]);
  });

  it("render config/'s Namespace with namespace.create=true", async () => {
    const config = await kustomize(join(REPO_ROOT, 'config'));
    const chart = await render({ set: ['namespace.create=true'] });
    expect(drift(config.filter((o) => o.kind === 'Namespace'), chart.filter((o) => o.kind === 'Namespace'))).toEqual([]);
  });

  it('render config/network/agent-namespace.yaml for an agent namespace listed', async () => {
    const example = parseObjects(await readFile(join(REPO_ROOT, 'config', 'network', 'agent-namespace.yaml'), 'utf8'), 'agent-namespace.yaml');
    const chart = await render({ set: ['agentNetworkPolicy.namespaces={finance}', 'agentNetworkPolicy.toolNamespaces={tools}'] });
    expect(drift(example, chart.filter((o) => o.metadata.name === 'portcullis-agent-egress'))).toEqual([]);
  });

  it('tell exactly which field drifted', () => {
    const ours = { apiVersion: 'v1', kind: 'Service', metadata: { name: 'a', namespace: 'n' }, spec: { ports: [{ port: 1 }] } };
    const theirs = { ...ours, metadata: { ...ours.metadata, labels: { 'helm.sh/chart': 'x' } }, spec: { ports: [{ port: 2 }] } };
    expect(drift([ours], [theirs, { ...ours, metadata: { name: 'b' } }])).toEqual([
      'Service n/a: metadata.labels: config/ has nothing, the chart has {}',
      'Service n/a: spec.ports[0].port: config/ has 1, the chart has 2',
      'Service b: rendered by the chart, not in config/',
    ]);
  });
});

describe('values that change what is rendered', () => {
  it('renders no PodDisruptionBudget, NetworkPolicy or agent policy when they are off, and no ServiceMonitor by default', async () => {
    const kinds = (await render({ set: ['networkPolicy.enabled=false', 'podDisruptionBudget.enabled=false'] })).map((o) => o.kind);
    expect(kinds).not.toContain('PodDisruptionBudget');
    expect(kinds).not.toContain('NetworkPolicy');
    expect(kinds).not.toContain('ServiceMonitor');
    expect(kinds).toEqual(expect.arrayContaining(['Deployment', 'Service', 'ClusterRole', 'Role']));
  });

  it('scrapes the metrics Service with a ServiceMonitor when asked', async () => {
    const objects = await render({ set: ['metrics.serviceMonitor.enabled=true', 'metrics.serviceMonitor.labels.release=prometheus'] });
    const monitor = find(objects, 'ServiceMonitor', 'portcullis-operator');
    expect(monitor.apiVersion).toBe('monitoring.coreos.com/v1');
    expect(monitor.metadata.labels?.release).toBe('prometheus');
    const service = find(objects, 'Service', 'portcullis-operator-metrics');
    const selector = (monitor.spec as { selector: { matchLabels: Record<string, string> } }).selector.matchLabels;
    expect(service.metadata.labels).toMatchObject(selector);
    // Only the metrics Service: the webhook's and the token service's carry another component.
    expect(objects.filter((o) => o.kind === 'Service' && Object.entries(selector).every(([k, v]) => o.metadata.labels?.[k] === v)).map((o) => o.metadata.name)).toEqual(['portcullis-operator-metrics']);
    expect(monitor.spec).toMatchObject({ endpoints: [{ port: 'ops', path: '/metrics' }], namespaceSelector: { matchNames: ['portcullis-system'] } });
  });

  it('with cert-manager, makes a CA and both serving certificates and has the operator serve with their Secrets', async () => {
    const objects = await render({ namespace: 'auth', set: ['certificates.mode=cert-manager'] });
    const webhookCert = find(objects, 'Certificate', 'portcullis-webhook');
    const tokensCert = find(objects, 'Certificate', 'portcullis-tokens');
    expect(webhookCert.spec).toMatchObject({ dnsNames: ['portcullis-webhook.auth.svc', 'portcullis-webhook.auth.svc.cluster.local'], issuerRef: { kind: 'Issuer', name: 'portcullis-ca' } });
    expect(tokensCert.spec).toMatchObject({ dnsNames: ['portcullis-tokens.auth.svc', 'portcullis-tokens.auth.svc.cluster.local'], issuerRef: { kind: 'Issuer', name: 'portcullis-ca' } });
    expect(find(objects, 'Certificate', 'portcullis-ca').spec).toMatchObject({ isCA: true, issuerRef: { name: 'portcullis-selfsigned' } });
    expect(find(objects, 'Issuer', 'portcullis-ca').spec).toEqual({ ca: { secretName: 'portcullis-ca' } });

    const pod = podSpecOf(find(objects, 'Deployment', 'portcullis-operator'));
    const [operator] = pod.containers;
    expect(operator?.args).toEqual(expect.arrayContaining(['--cert-manager=auth/portcullis-webhook', '--cert-dir=/etc/portcullis/webhook-tls', '--token-cert-dir=/etc/portcullis/tokens-tls']));
    const mounted = (dir: string): string | undefined => {
      const mount = operator?.volumeMounts.find((m) => m.mountPath === dir);
      return pod.volumes.find((v) => v.name === mount?.name)?.secret?.secretName;
    };
    expect(mounted('/etc/portcullis/webhook-tls')).toBe((webhookCert.spec as { secretName: string }).secretName);
    expect(mounted('/etc/portcullis/tokens-tls')).toBe((tokensCert.spec as { secretName: string }).secretName);
  });

  it("with cert-manager and an issuer of the user's, makes no CA of its own", async () => {
    const objects = await render({ set: ['certificates.mode=cert-manager', 'certificates.certManager.issuerRef.kind=ClusterIssuer', 'certificates.certManager.issuerRef.name=corp-ca'] });
    expect(objects.filter((o) => o.kind === 'Issuer')).toEqual([]);
    expect(objects.filter((o) => o.kind === 'Certificate').map((o) => [o.metadata.name, (o.spec as { issuerRef: unknown }).issuerRef])).toEqual([
      ['portcullis-webhook', { kind: 'ClusterIssuer', name: 'corp-ca' }],
      ['portcullis-tokens', { kind: 'ClusterIssuer', name: 'corp-ca' }],
    ]);
  });

  it('names the cluster-wide RBAC after the release and binds it to the ServiceAccount in the release namespace', async () => {
    const objects = await render({ release: 'team-a-portcullis', namespace: 'team-a' });
    const binding = find(objects, 'ClusterRoleBinding', 'team-a-portcullis-operator');
    expect(binding).toMatchObject({ roleRef: { name: 'team-a-portcullis-operator' }, subjects: [{ kind: 'ServiceAccount', name: 'portcullis-operator', namespace: 'team-a' }] });
    expect(find(objects, 'ClusterRole', 'team-a-portcullis-operator-webhook').kind).toBe('ClusterRole');
  });

  it('passes the images to inject, the Redis of the counters, the extra flags and the digest through', async () => {
    const digest = `sha256:${'a'.repeat(64)}`;
    const objects = await render({ set: [`image.digest=${digest}`, 'operator.sidecarImage=registry.example/portcullis:1', 'operator.extraArgs={--workers=8}', 'operator.countersRedisUrl=rediss://redis.counters.svc:6380/1'] });
    const [operator] = podSpecOf(find(objects, 'Deployment', 'portcullis-operator')).containers as [Container & { image: string }];
    expect(operator.image).toBe(`ghcr.io/portcullis-dev/portcullis@${digest}`);
    expect(operator.args).toEqual(expect.arrayContaining(['--sidecar-image=registry.example/portcullis:1', '--workers=8', '--counters-redis-url=rediss://redis.counters.svc:6380/1']));
  });
});

// An egress rule of the user's (values networkPolicy.extraEgress, agentNetworkPolicy.extraEgress).
const REDIS_EGRESS = { to: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'redis' } } }], ports: [{ protocol: 'TCP', port: 6379 }] };

describe('the chart on the API server', () => {
  beforeAll(async () => {
    await ensureNamespace(plane, RELEASE_NS);
    await ensureNamespace(plane, 'helm-agents');
  });

  it('renders objects the API server accepts by server-side apply, egress rules of the values included', async () => {
    const objects = await render({
      release: RELEASE,
      namespace: RELEASE_NS,
      set: ['agentNetworkPolicy.namespaces={helm-agents}', 'agentNetworkPolicy.toolNamespaces={tools}'],
      setJson: [`agentNetworkPolicy.extraEgress=${JSON.stringify([REDIS_EGRESS])}`, `networkPolicy.extraEgress=${JSON.stringify([REDIS_EGRESS])}`],
    });
    const egressOf = (namespace: string): unknown[] => (objects.find((o) => o.kind === 'NetworkPolicy' && o.metadata.namespace === namespace)?.spec as { egress: unknown[] }).egress;
    expect(egressOf('helm-agents').at(-1)).toEqual(REDIS_EGRESS);
    expect(egressOf(RELEASE_NS).at(-1)).toEqual(REDIS_EGRESS);
    const result = await kubectl(plane, ['apply', '--server-side', '--field-manager=helm-test', '--dry-run=server', '-f', '-'], {
      input: objects.map((o) => stringify(o)).join('---\n'),
    });
    const applied = result.stdout.trim().split('\n');
    expect(applied).toHaveLength(objects.length);
    expect(applied.every((line) => line.endsWith('serverside-applied (server dry run)'))).toBe(true);
  });

  it('renders with namespace.create=true what kubectl apply --server-side creates in one go, the Namespace first (helm template as GitOps tools use it)', async () => {
    // helm install itself cannot: it stores the release in the namespace before creating anything,
    // so with helm install the namespace comes from --create-namespace.
    const namespace = 'helm-portcullis-applied';
    const objects = await render({ release: 'applied-portcullis', namespace, set: ['namespace.create=true'] });
    expect(objects.map(keyOf)[0]).toBe(`Namespace ${namespace}`);
    const manifest = objects.map((o) => stringify(o)).join('---\n');
    const applied = await kubectl(plane, ['apply', '--server-side', '--field-manager=helm-test', '-f', '-'], { input: manifest });
    expect(applied.stdout.trim().split('\n')).toHaveLength(objects.length);
    const labels = await kubectl(plane, ['get', 'namespace', namespace, '-o', 'jsonpath={.metadata.labels}']);
    expect(JSON.parse(labels.stdout)).toMatchObject({ 'portcullis.dev/injection': 'disabled' });
    const deployment = await kubectl(plane, ['get', 'deployment', 'portcullis-operator', '-n', namespace, '-o', 'jsonpath={.spec.replicas}']);
    expect(deployment.stdout).toBe('2');
    await kubectl(plane, ['delete', '--wait=false', '-f', '-'], { input: manifest });
  });

  it("takes the chart's CRDs by server-side apply over those installed, as the upgrade policy says", async () => {
    const result = await kubectl(plane, ['apply', '--server-side', '--force-conflicts', '--dry-run=server', '-f', join(CHART, 'crds')]);
    expect(result.stdout.trim().split('\n').sort()).toEqual(['agentidentities', 'approvalrequests', 'egressrules', 'toolpolicies']
      .map((plural) => `customresourcedefinition.apiextensions.k8s.io/${plural}.portcullis.dev serverside-applied (server dry run)`));
  });

  it('installs, upgrades and uninstalls', async () => {
    const install = await helm(['install', RELEASE, CHART, '--namespace', RELEASE_NS]);
    expect(install.stdout).toContain('STATUS: deployed');
    const deployment = JSON.parse((await kubectl(plane, ['get', 'deployment', 'portcullis-operator', '-n', RELEASE_NS, '-o', 'json'])).stdout) as { spec: { replicas: number }; metadata: { annotations: Record<string, string> } };
    expect(deployment.spec.replicas).toBe(2);
    expect(deployment.metadata.annotations['meta.helm.sh/release-name']).toBe(RELEASE);
    // The release's namespaced objects (a namespace's default ServiceAccount is not the chart's).
    const names = async (): Promise<string[]> => (await kubectl(plane, ['get', 'serviceaccount,service,role,rolebinding,poddisruptionbudget,networkpolicy', '-n', RELEASE_NS, '-o', 'name'])).stdout
      .split('\n').filter((name) => name !== '' && name !== 'serviceaccount/default').sort();
    expect(await names()).toEqual([
      'networkpolicy.networking.k8s.io/portcullis-operator',
      'poddisruptionbudget.policy/portcullis-operator',
      'role.rbac.authorization.k8s.io/portcullis-operator',
      'rolebinding.rbac.authorization.k8s.io/portcullis-operator',
      'service/portcullis-operator-metrics',
      'service/portcullis-tokens',
      'service/portcullis-webhook',
      'serviceaccount/portcullis-operator',
    ]);
    await kubectl(plane, ['get', 'clusterrole', `${RELEASE}-operator`, `${RELEASE}-operator-webhook`]);

    const upgrade = await helm(['upgrade', RELEASE, CHART, '--namespace', RELEASE_NS, '--set', 'replicas=3', '--set', 'operator.extraArgs={--workers=8}', '--set', 'podDisruptionBudget.enabled=false']);
    expect(upgrade.stdout).toContain('REVISION: 2');
    const upgraded = JSON.parse((await kubectl(plane, ['get', 'deployment', 'portcullis-operator', '-n', RELEASE_NS, '-o', 'json'])).stdout) as { spec: { replicas: number; template: { spec: PodSpec } } };
    expect(upgraded.spec.replicas).toBe(3);
    expect(upgraded.spec.template.spec.containers[0]?.args).toContain('--workers=8');
    expect(await names()).not.toContain('poddisruptionbudget.policy/portcullis-operator');

    const uninstall = await helm(['uninstall', RELEASE, '--namespace', RELEASE_NS]);
    expect(uninstall.stdout).toContain(`release "${RELEASE}" uninstalled`);
    expect(await names()).toEqual([]);
    const clusterRoles = await kubectl(plane, ['get', 'clusterrole', `${RELEASE}-operator`, `${RELEASE}-operator-webhook`, '--ignore-not-found', '-o', 'name']);
    expect(clusterRoles.stdout.trim()).toBe('');
    // Helm never deletes what crds/ installed: the policies outlive the release.
    const crds = await kubectl(plane, ['get', 'crd', 'toolpolicies.portcullis.dev', '-o', 'name']);
    expect(crds.stdout.trim()).toBe('customresourcedefinition.apiextensions.k8s.io/toolpolicies.portcullis.dev');
  }, 180_000);
});
