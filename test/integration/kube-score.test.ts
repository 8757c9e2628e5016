// What we ship, held to kube-score (hack/build-tools.sh builds it at the version hack/versions.env
// pins): config/ as `kubectl kustomize` renders it, the chart as `helm template` renders it, and
// the pod the webhook makes of an application's pod. Every check kube-score runs by default must
// grade them all OK, or be waived in the manifest itself (a `kube-score/ignore` annotation with
// its reason next to it); a failure lists each finding.
//
// The injected pod is scored whole, as a platform team scores its cluster, and only what is the
// application's own is set aside: the findings about the application's container (its
// resources, security context and pull policy are its owner's), and the ingress half of the pod's
// NetworkPolicy (whether an agent takes traffic, and from whom, is its application's; the pod is
// scored beside config/network/agent-namespace.yaml, the egress policy we give agent namespaces).

import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { V1Pod } from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { inject } from '../../src/webhook/inject.ts';
import type { InjectionConfig } from '../../src/webhook/inject.ts';
import { REPO_ROOT, runProcess } from '../harness/control-plane.ts';

const run = promisify(execFile);
const CHART = join(REPO_ROOT, 'charts', 'portcullis');
const APPLICATION_CONTAINER = 'agent';
// kube-score's grades: 10 is "all OK"; a skipped check is graded nothing.
const ALL_OK = 10;

interface KubeScoreCheck {
  check: { id: string };
  grade: number;
  skipped: boolean;
  comments: { path: string; summary: string }[] | null;
}

interface KubeScoreObject {
  object_name: string;
  checks: KubeScoreCheck[];
}

/** One thing kube-score holds against an object, as a line a failure lists. */
type Finding = string;

/** A finding the application's owner answers for, not us (see the header). */
type ApplicationsOwn = (check: string, comment: { path: string; summary: string }) => boolean;

const nothingSetAside: ApplicationsOwn = () => false;
const applicationsOwn: ApplicationsOwn = (check, comment) =>
  comment.path === APPLICATION_CONTAINER || (check === 'pod-networkpolicy' && comment.summary.includes('ingress'));

/** Every check graded below all OK, one line per comment not set aside; a check with none left is met. */
function findings(report: KubeScoreObject[], setAside: ApplicationsOwn): Finding[] {
  return report.flatMap((object) =>
    object.checks
      .filter((c) => !c.skipped && c.grade < ALL_OK)
      .flatMap((c) => {
        const comments = c.comments ?? [];
        const ours = comments.filter((comment) => !setAside(c.check.id, comment));
        if (comments.length > 0 && ours.length === 0) return [];
        const lines = ours.map((comment) => `${object.object_name} ${c.check.id}${comment.path === '' ? '' : ` (${comment.path})`}: ${comment.summary}`);
        return lines.length > 0 ? lines : [`${object.object_name} ${c.check.id}: graded ${String(c.grade)}`];
      }),
  );
}

/** A tool's path from TEST_ASSET_*, else as hack/build-tools.sh builds (or finds) it. */
async function tool(name: string, variable: string): Promise<string> {
  const explicit = process.env[variable];
  if (explicit) return explicit;
  const { stdout } = await run('bash', [join(REPO_ROOT, 'hack', 'build-tools.sh'), '--print-env', name], { maxBuffer: 1 << 20 });
  const path = new RegExp(`^${variable}=(.+)$`, 'm').exec(stdout)?.[1];
  if (!path) throw new Error(`${variable} is not set and hack/build-tools.sh --print-env ${name} did not print it`);
  return path;
}

/** The Kubernetes minor the project builds and tests against (v1.N), which kube-score's checks depend on. */
async function kubernetesVersion(): Promise<string> {
  const versions = await readFile(join(REPO_ROOT, 'hack', 'versions.env'), 'utf8');
  const version = /^KUBERNETES_VERSION=(v\d+\.\d+)\./m.exec(versions)?.[1];
  if (!version) throw new Error('hack/versions.env names no KUBERNETES_VERSION=vMAJOR.MINOR.PATCH');
  return version;
}

let kubectl: string;
let helm: string;
let kubeScore: string;
let kubernetes: string;
let work: string;

/** kube-score's report on the manifests; it exits 1 when it finds something, so its output is what counts. */
async function score(manifests: string, name: string): Promise<KubeScoreObject[]> {
  const file = join(work, `${name}.yaml`);
  await writeFile(file, manifests);
  const { code, stdout, stderr } = await runProcess(kubeScore, ['score', '--kubernetes-version', kubernetes, '--output-format', 'json', file]);
  if (code !== 0 && code !== 1) throw new Error(`kube-score failed (${String(code)}) on ${name}: ${stderr.trim()}`);
  try {
    return JSON.parse(stdout) as KubeScoreObject[];
  } catch (error) {
    throw new Error(`kube-score printed no JSON report on ${name}: ${String(error)}; ${stderr.trim()}`, { cause: error });
  }
}

async function renderedHelm(set: string[]): Promise<string> {
  // Helm's cache, config and data in the run's folder, never the user's home.
  const env = { ...process.env, HELM_CACHE_HOME: join(work, 'helm-cache'), HELM_CONFIG_HOME: join(work, 'helm-config'), HELM_DATA_HOME: join(work, 'helm-data') };
  const args = ['template', 'portcullis', CHART, '--namespace', 'portcullis-system', ...set.flatMap((value) => ['--set', value])];
  return (await run(helm, args, { env, maxBuffer: 16 << 20 })).stdout;
}

const injection: InjectionConfig = {
  sidecarImage: 'ghcr.io/portcullis-dev/portcullis:0.1.0',
  envoyImage: 'envoyproxy/envoy:v1.36.0',
  version: '0.1.0',
  nativeSidecars: true,
  tokenService: 'https://portcullis-tokens.portcullis-system.svc:8443',
  countersRedisUrl: 'redis://redis.portcullis-system.svc:6379',
};

/** An application's pod as its owner writes it, opted in: one container, nothing else said. */
function applicationPod(): V1Pod {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'research-agent', namespace: 'finance', annotations: { 'portcullis.dev/inject': 'true' } },
    spec: { serviceAccountName: 'research-agent', containers: [{ name: APPLICATION_CONTAINER, image: 'registry.example/research-agent:1.4.0' }] },
  };
}

beforeAll(async () => {
  [kubectl, helm, kubeScore, kubernetes] = await Promise.all([
    tool('kubectl', 'TEST_ASSET_KUBECTL'),
    tool('helm', 'TEST_ASSET_HELM'),
    tool('kube-score', 'TEST_ASSET_KUBE_SCORE'),
    kubernetesVersion(),
  ]);
  work = await mkdtemp(join(tmpdir(), 'portcullis-kube-score-'));
}, 900_000);

afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe('kube-score on the manifests we ship', () => {
  it('grades config/, as kubectl kustomize renders it, all OK', async () => {
    const { stdout } = await run(kubectl, ['kustomize', join(REPO_ROOT, 'config')], { maxBuffer: 16 << 20 });
    const report = await score(stdout, 'config');
    expect(report.map((o) => o.object_name)).toContain('Deployment/apps/v1/portcullis-system/portcullis-operator');
    expect(findings(report, nothingSetAside)).toEqual([]);
  });

  it.each([
    { name: 'with default values', set: [] },
    { name: 'with cert-manager certificates, its own Namespace and the NetworkPolicy of an agent namespace', set: ['certificates.mode=cert-manager', 'namespace.create=true', 'agentNetworkPolicy.namespaces={finance}'] },
  ])('grades the chart $name all OK', async ({ name, set }) => {
    const report = await score(await renderedHelm(set), `chart ${name}`);
    expect(report.map((o) => o.object_name)).toContain('Deployment/apps/v1/portcullis-system/portcullis-operator');
    expect(findings(report, nothingSetAside)).toEqual([]);
  });
});

describe('kube-score on the pod the webhook injects', () => {
  it.each([
    { name: 'as native sidecars', nativeSidecars: true },
    { name: 'as containers, on servers without native sidecars', nativeSidecars: false },
  ])('grades the authz sidecar and Envoy, $name, all OK', async ({ name, nativeSidecars }) => {
    const pod = inject(applicationPod(), { ...injection, nativeSidecars }, { tenant: 'finance' });
    const agentNamespacePolicy = await readFile(join(REPO_ROOT, 'config', 'network', 'agent-namespace.yaml'), 'utf8');
    const report = await score(`${stringify(pod)}---\n${agentNamespacePolicy}`, `injected pod ${name}`);
    const scored = report.find((o) => o.object_name === 'Pod/v1/finance/research-agent');
    // The filter sets aside the application's findings and nothing of ours: there are some to set aside.
    expect(findings(report, nothingSetAside).some((f) => f.includes(`(${APPLICATION_CONTAINER})`))).toBe(true);
    expect(scored?.checks.find((c) => c.check.id === 'container-resources')?.comments?.map((c) => c.path)).toEqual([
      APPLICATION_CONTAINER, APPLICATION_CONTAINER, APPLICATION_CONTAINER, APPLICATION_CONTAINER,
    ]);
    expect(findings(report, applicationsOwn)).toEqual([]);
  });
});
