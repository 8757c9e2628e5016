// The Grafana dashboard the chart ships (charts/portcullis/dashboards/portcullis.json) queries only
// metrics that exist: every metric name in every panel's PromQL is one that a running
// `portcullis operator` (token service included) or `portcullis sidecar` exports on /metrics.

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { parseAllDocuments, stringify } from 'yaml';
import type { TrackedProcess } from '../harness/cluster.ts';
import { eventually, spawnTracked } from '../harness/cluster.ts';
import { ensureNamespace, freePort, kubectl, REPO_ROOT, runProcess } from '../harness/control-plane.ts';
import { agentKubeconfigFile } from '../harness/local-parts.ts';

const plane = inject('controlPlane');
const OPERATOR_NS = 'grafana-system';
const NS = 'grafana-tenant';
const AGENT = 'dashboard-agent';
const DASHBOARD = join(REPO_ROOT, 'charts', 'portcullis', 'dashboards', 'portcullis.json');
const PORTCULLIS = join(REPO_ROOT, 'bin', 'portcullis.js');

/** PromQL words that are not metric names: keywords and binary operators. */
const KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'and', 'or', 'unless', 'offset', 'inf', 'nan', 'atan2']);

/**
 * The metric names a PromQL expression selects. Strings, label matchers, ranges, grouping label
 * lists and Grafana variables are cut out first; of the words left, a word followed by "(" is a
 * function or an aggregation, a keyword is a keyword, and one that starts with a digit is a number
 * or a duration (1e3, 0x1f, 1h30m).
 */
function metricNamesOf(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, ' ')
    .replace(/\$\{[^}]*\}|\$\w+/g, ' ')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const names = new Set<string>();
  for (const match of bare.matchAll(/(\d(?:[eE][+-]\d|[\w.])*)|([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?/g)) {
    const [, number, word, call] = match;
    if (number !== undefined || word === undefined || call !== undefined || KEYWORDS.has(word.toLowerCase())) continue;
    names.add(word);
  }
  return [...names];
}

/** The series names a Prometheus text exposition can hold, from its TYPE lines: a histogram's _bucket, _sum and _count too. */
function exportedNames(exposition: string): Set<string> {
  const names = new Set<string>();
  for (const line of exposition.split('\n')) {
    const typed = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (!typed) continue;
    const [, name = '', type] = typed;
    names.add(name);
    if (type === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) names.add(`${name}${suffix}`);
    if (type === 'summary') for (const suffix of ['_sum', '_count']) names.add(`${name}${suffix}`);
  }
  return names;
}

interface Target { expr?: string; refId: string }
interface Panel { id: number; type: string; title: string; targets?: Target[]; datasource?: { uid?: string }; panels?: Panel[] }
interface Dashboard { uid: string; title: string; panels: Panel[]; templating: { list: { name: string; type: string; query?: unknown }[] } }

async function dashboard(): Promise<Dashboard> {
  return JSON.parse(await readFile(DASHBOARD, 'utf8')) as Dashboard;
}

function queries(board: Dashboard): { panel: string; expr: string }[] {
  const panels = board.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
  return panels.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr ?? '' })));
}

let operator: TrackedProcess | undefined;
let sidecar: TrackedProcess | undefined;
let operatorMetrics: string;
let sidecarMetrics: string;

async function scrape(url: string): Promise<string> {
  const response = await fetch(url);
  if (response.status !== 200) throw new Error(`${url}: HTTP ${response.status}`);
  return response.text();
}

const ready = async (url: string): Promise<true | undefined> => ((await fetch(url).catch(() => undefined))?.status === 200 ? true : undefined);

beforeAll(async () => {
  await ensureNamespace(plane, OPERATOR_NS);
  const [opsPort, tokenPort, httpPort, grpcPort] = [await freePort(), await freePort(), await freePort(), await freePort()];
  operator = await spawnTracked(plane, process.execPath, [
    PORTCULLIS, 'operator', '--kubeconfig', plane.kubeconfig, '--namespace', OPERATOR_NS, '--identity', 'grafana-test-operator',
    '--ops-address', `127.0.0.1:${opsPort}`, '--token-address', `127.0.0.1:${tokenPort}`, '--token-url', `https://127.0.0.1:${tokenPort}`,
    '--lease-duration', '4s', '--renew-deadline', '3s', '--retry-period', '500ms', '--log-level', 'warn',
  ], { PORTCULLIS_OPA: plane.tools.opa });
  await eventually('the operator to be ready', () => ready(`http://127.0.0.1:${opsPort}/readyz`), 60_000);

  await kubectl(plane, ['apply', '--validate=strict', '-f', '-'], {
    input: [
      { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS, labels: { 'portcullis.dev/tenant': NS } } },
      { apiVersion: 'portcullis.dev/v1alpha1', kind: 'AgentIdentity', metadata: { name: AGENT, namespace: NS }, spec: { serviceAccountName: AGENT, owner: { name: 'Dana Ruiz', email: 'dana@example.com' } } },
      {
        apiVersion: 'portcullis.dev/v1alpha1', kind: 'ToolPolicy', metadata: { name: 'search', namespace: NS },
        spec: { subjects: { agents: [AGENT] }, tools: [{ name: 'search', http: { host: 'search.tools.svc', actions: [{ name: 'query', method: 'GET', path: '/q' }] } }], rules: [{ name: 'queries', tool: 'search', actions: ['query'], decision: 'allow' }] },
      },
    ].map((d) => stringify(d)).join('---\n'),
  });
  const kubeconfig = await agentKubeconfigFile(plane, NS, AGENT);
  sidecar = await spawnTracked(plane, process.execPath, [
    PORTCULLIS, 'sidecar', '--kubeconfig', kubeconfig, '--agent', AGENT, '--namespace', NS, '--trust-namespace', OPERATOR_NS, '--tenant', NS,
    '--http-address', `127.0.0.1:${httpPort}`, '--grpc-address', `127.0.0.1:${grpcPort}`,
  ]);
  await eventually('the sidecar to be ready', () => ready(`http://127.0.0.1:${httpPort}/readyz`), 60_000);
  // One decision, so the sidecar has samples as well as declarations.
  await fetch(`http://127.0.0.1:${httpPort}/v1/authorize`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ tool: 'search', action: 'query', params: {} }) });
  operatorMetrics = await scrape(`http://127.0.0.1:${opsPort}/metrics`);
  sidecarMetrics = await scrape(`http://127.0.0.1:${httpPort}/metrics`);
}, 180_000);

afterAll(async () => {
  await sidecar?.kill('SIGTERM');
  await operator?.kill('SIGTERM');
});

describe('reading metric names out of PromQL', () => {
  it.each([
    ['a bare selector', 'portcullis_leader', ['portcullis_leader']],
    ['a rate over a range with label matchers holding PromQL-looking strings', 'sum by (decision, enforced) (rate(portcullis_decisions_total{decision="deny",tool=~"rate(x)"}[$__rate_interval]))', ['portcullis_decisions_total']],
    ['a histogram quantile over buckets', 'histogram_quantile(0.99, sum by (le, transport) (rate(portcullis_decision_duration_seconds_bucket[5m])))', ['portcullis_decision_duration_seconds_bucket']],
    ['a ratio with vector matching', 'count by (tenant) (a_metric < on (tenant) group_left () max by (tenant) (b_metric))', ['a_metric', 'b_metric']],
    ['postfix grouping, a number in exponent form, offset and bool', 'sum(x_total offset 1h30m) without (pod) > bool 1e+3 and y:recorded @ 1609746000', ['x_total', 'y:recorded']],
    ['Grafana variables', 'topk(10, sum(increase(z_total{job="$job"}[$__range]))) * ${factor}', ['z_total']],
  ])('finds the metric in %s', (_name, expr, expected) => {
    expect(metricNamesOf(expr).sort()).toEqual([...expected].sort());
  });

  it('knows a histogram by its bucket, sum and count series', () => {
    const names = exportedNames('# HELP h_seconds x\n# TYPE h_seconds histogram\n# TYPE c_total counter\n');
    expect([...names].sort()).toEqual(['c_total', 'h_seconds', 'h_seconds_bucket', 'h_seconds_count', 'h_seconds_sum']);
  });
});

describe('the Grafana dashboard', () => {
  it('queries only metrics the running operator or sidecar exports', async () => {
    const exported = new Set([...exportedNames(operatorMetrics), ...exportedNames(sidecarMetrics)]);
    // The scrapes are real: each process exports its own families.
    expect(exportedNames(operatorMetrics)).toContain('portcullis_token_exchanges_total');
    expect(exportedNames(sidecarMetrics)).toContain('portcullis_decisions_total');
    expect(sidecarMetrics).toMatch(/^portcullis_decisions_total\{[^}]*decision="allow"/m);
    const unknown = queries(await dashboard()).flatMap(({ panel, expr }) => metricNamesOf(expr).filter((name) => !exported.has(name)).map((name) => `${panel}: ${name}`));
    expect(unknown).toEqual([]);
  });

  it('has a query in every panel, each naming a metric, on the data source the user picks', async () => {
    const board = await dashboard();
    expect(board.templating.list.map((v) => [v.name, v.type])).toEqual([['datasource', 'datasource']]);
    for (const panel of board.panels.filter((p) => p.type !== 'row')) {
      expect(panel.datasource?.uid, panel.title).toBe('${datasource}');
      expect(panel.targets?.length, panel.title).toBeGreaterThan(0);
      for (const target of panel.targets ?? []) expect(metricNamesOf(target.expr ?? ''), `${panel.title} ${target.refId}`).not.toEqual([]);
    }
    expect(new Set(board.panels.map((p) => p.id)).size).toBe(board.panels.length);
  });

  it.each([
    ['decisions by result and tool', 'portcullis_decisions_total'],
    ['decision latency', 'portcullis_decision_duration_seconds_bucket'],
    ['refused bundles', 'portcullis_bundle_rejections_total'],
    ['the revision in force per tenant', 'portcullis_bundle_revision_sequence'],
    ['reconcile errors', 'portcullis_reconcile_total'],
    ['token exchanges', 'portcullis_token_exchanges_total'],
  ])('shows %s (%s)', async (_what, metric) => {
    expect(queries(await dashboard()).some(({ expr }) => metricNamesOf(expr).includes(metric))).toBe(true);
  });

  it('is rendered by the chart, when asked, as the ConfigMap Grafana\'s sidecar loads', async () => {
    const helm = process.env.TEST_ASSET_HELM;
    if (helm === undefined || helm === '') throw new Error('TEST_ASSET_HELM is not set: run `source hack/lib.sh && ensure_tools`');
    const render = async (set: string[]): Promise<string> => {
      const { code, stdout, stderr } = await runProcess(helm, ['template', 'portcullis', join(REPO_ROOT, 'charts', 'portcullis'), '--namespace', 'portcullis-system', ...set.flatMap((s) => ['--set', s])]);
      if (code !== 0) throw new Error(`helm template: ${stderr}`);
      return stdout;
    };
    interface ConfigMap { kind?: string; metadata: { name: string; namespace: string; labels: Record<string, string> }; data: Record<string, string> }
    const dashboards = async (set: string[]): Promise<ConfigMap[]> =>
      parseAllDocuments(await render(set)).map((d) => d.toJS() as ConfigMap).filter((o) => o.kind === 'ConfigMap' && o.metadata.name === 'portcullis-grafana-dashboard');
    expect(await dashboards([])).toEqual([]);
    const [configMap] = await dashboards(['grafana.dashboard.enabled=true', 'grafana.dashboard.namespace=monitoring']);
    expect(configMap?.metadata.namespace).toBe('monitoring');
    expect(configMap?.metadata.labels.grafana_dashboard).toBe('1');
    expect(configMap?.data['portcullis.json']).toBe(await readFile(DASHBOARD, 'utf8'));
  });
});
