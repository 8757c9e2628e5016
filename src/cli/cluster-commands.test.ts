// The pure parts of the cluster commands: which cluster, context and namespace
// the flags select, where a call is decided, the status summary and its table,
// and what --wait reads from an AgentIdentity's status.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import type { Condition } from '../api/index.ts';
import { connect } from './kube.ts';
import type { Gathered, GatheredResource, SeenBundle } from './status.ts';
import { formatStatus, summarize, table } from './status.ts';
import { revisionInForce } from './suspend.ts';
import { placeCall } from './why.ts';

let dir: string;
let first: string;
let second: string;

const kubeconfig = (current: string, contexts: { name: string; namespace?: string }[]): string =>
  stringify({
    apiVersion: 'v1',
    kind: 'Config',
    'current-context': current,
    clusters: [{ name: 'c', cluster: { server: 'https://127.0.0.1:6443' } }],
    users: [{ name: 'u', user: { token: 't' } }],
    contexts: contexts.map((c) => ({ name: c.name, context: { cluster: 'c', user: 'u', ...(c.namespace === undefined ? {} : { namespace: c.namespace }) } })),
  });

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'portcullis-kube-'));
  first = join(dir, 'first.yaml');
  second = join(dir, 'second.yaml');
  await writeFile(first, kubeconfig('dev', [{ name: 'dev', namespace: 'finance' }, { name: 'ops' }]));
  await writeFile(second, kubeconfig('other', [{ name: 'other', namespace: 'payments' }]));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('the cluster a command talks to', () => {
  it.each([
    { name: 'the current context and its namespace', flags: () => ({ kubeconfig: first }), env: (): NodeJS.ProcessEnv => ({}), context: 'dev', namespace: 'finance' },
    { name: '--context, whose context names no namespace: default', flags: () => ({ kubeconfig: first, context: 'ops' }), env: (): NodeJS.ProcessEnv => ({}), context: 'ops', namespace: 'default' },
    { name: '-n over the context namespace', flags: () => ({ kubeconfig: first, namespace: 'hr' }), env: (): NodeJS.ProcessEnv => ({}), context: 'dev', namespace: 'hr' },
    { name: 'KUBECONFIG, the first file naming the current context', flags: () => ({}), env: (): NodeJS.ProcessEnv => ({ KUBECONFIG: `${first}:${second}` }), context: 'dev', namespace: 'finance' },
    { name: '--context from the second file of KUBECONFIG', flags: () => ({ context: 'other' }), env: (): NodeJS.ProcessEnv => ({ KUBECONFIG: `${first}:${second}` }), context: 'other', namespace: 'payments' },
    { name: 'KUBECONFIG with a missing file, skipped as kubectl skips it', flags: () => ({}), env: (): NodeJS.ProcessEnv => ({ KUBECONFIG: `${join(dir, 'gone.yaml')}:${second}` }), context: 'other', namespace: 'payments' },
  ])('$name', ({ flags, env, context, namespace }) => {
    const connection = connect(flags(), { ...env(), HOME: dir });
    expect({ context: connection.context, namespace: connection.namespace }).toEqual({ context, namespace });
  });

  it('refuses a --context the kubeconfig does not have, naming the ones it has', () => {
    expect(() => connect({ kubeconfig: first, context: 'prod' })).toThrow('--context prod: no such context in the kubeconfig (it has: dev, ops)');
  });

  it.each([
    { name: 'a file that is not YAML', text: 'clusters: [ {name: x', says: 'is not a kubeconfig: ' },
    { name: 'a kubeconfig that names no current context', text: stringify({ apiVersion: 'v1', kind: 'Config', clusters: [] }), says: 'no cluster configured (the kubeconfig names no current context)' },
  ])('refuses $name, saying so', async ({ text, says }) => {
    const file = join(dir, 'broken.yaml');
    await writeFile(file, text);
    expect(() => connect({ kubeconfig: file })).toThrow(says);
  });

  it('refuses to guess a cluster when there is no kubeconfig at all', () => {
    expect(() => connect({}, { HOME: dir })).toThrow(`no kubeconfig: pass --kubeconfig FILE or set KUBECONFIG (${join(dir, '.kube', 'config')} does not exist)`);
  });
});

describe('the namespace whose bundle decides a call', () => {
  it.each([
    { name: 'the call without a namespace gets the context namespace', input: { tool: 't' }, given: false, expected: { namespace: 'finance', call: { tool: 't', namespace: 'finance' } } },
    { name: 'the call naming its namespace is decided there', input: { namespace: 'hr', tool: 't' }, given: false, expected: { namespace: 'hr', call: { namespace: 'hr', tool: 't' } } },
    { name: '-n naming the same namespace as the call', input: { namespace: 'finance', tool: 't' }, given: true, expected: { namespace: 'finance', call: { namespace: 'finance', tool: 't' } } },
  ])('$name', ({ input, given, expected }) => {
    expect(placeCall(input, { namespace: 'finance', namespaceGiven: given })).toEqual(expected);
  });

  it('refuses -n and a call naming another namespace: two readings of one call', () => {
    expect(() => placeCall({ namespace: 'hr' }, { namespace: 'finance', namespaceGiven: true })).toThrow('the call names namespace hr and -n names finance');
  });
});

const condition = (status: Condition['status'], reason: string, message: string, observedGeneration = 1): Condition => ({
  type: 'Ready', status, reason, message, observedGeneration, lastTransitionTime: '2026-12-05T00:00:00Z',
});

const resource = (kind: GatheredResource['kind'], namespace: string, name: string, ready?: Condition, generation = 1): GatheredResource => ({
  kind, namespace, name, generation, status: ready === undefined ? undefined : { observedGeneration: ready.observedGeneration ?? 0, conditions: [ready] },
});

const REV = '3-0123456789abcdef';

interface MutableCluster {
  namespaces: Gathered['namespaces'][number][];
  resources: GatheredResource[];
  bundles: Map<string, SeenBundle>;
}

function cluster(modify: (g: MutableCluster) => void = () => undefined): Gathered {
  const gathered: MutableCluster = {
    namespaces: [
      { name: 'alpha-one', labels: { 'portcullis.dev/tenant': 'alpha' } },
      { name: 'alpha-two', labels: { 'portcullis.dev/tenant': 'alpha' } },
      { name: 'kube-system', labels: {} },
      { name: 'solo', labels: {} },
    ],
    resources: [
      resource('AgentIdentity', 'alpha-one', 'worker', condition('True', 'InForce', `in force at bundle revision ${REV}`)),
      resource('ToolPolicy', 'alpha-one', 'payments', condition('True', 'InForce', `in force at bundle revision ${REV}`)),
      resource('EgressRule', 'alpha-two', 'openai', condition('True', 'InForce', `in force at bundle revision ${REV}`)),
      resource('AgentIdentity', 'solo', 'lone', condition('True', 'InForce', 'in force at bundle revision 1-fedcba9876543210')),
    ],
    bundles: new Map<string, SeenBundle>([
      ['alpha-one', { revision: REV, verdict: true }],
      ['alpha-two', { revision: REV, verdict: true }],
      ['solo', { revision: '1-fedcba9876543210', verdict: true }],
    ]),
  };
  modify(gathered);
  return gathered;
}

describe('kubectl portcullis status', () => {
  it('groups namespaces into tenants by their label, counts their resources and leaves other namespaces out', () => {
    const [alpha, solo, ...rest] = summarize(cluster());
    expect(rest).toEqual([]);
    expect(alpha).toEqual({
      tenant: 'alpha', ready: 'True', agents: 1, toolPolicies: 1, egressRules: 1, revisions: [REV],
      namespaces: [{ name: 'alpha-one', revision: REV, verified: true }, { name: 'alpha-two', revision: REV, verified: true }], notReady: [],
    });
    expect(solo?.tenant).toBe('solo');
  });

  it.each([
    {
      name: 'a resource the operator reports not Ready makes the tenant not Ready, with its reason',
      modify: (g: MutableCluster): void => {
        g.resources[1] = resource('ToolPolicy', 'alpha-one', 'payments', condition('False', 'RegexError', 'rule big: invalid regex'));
      },
      ready: 'False',
      problem: { object: 'ToolPolicy alpha-one/payments', ready: 'False', reason: 'RegexError', message: 'rule big: invalid regex' },
    },
    {
      name: 'a generation the operator has not reported yet is Unknown',
      modify: (g: MutableCluster): void => {
        g.resources[0] = resource('AgentIdentity', 'alpha-one', 'worker', condition('True', 'InForce', 'in force'), 2);
      },
      ready: 'Unknown',
      problem: { object: 'AgentIdentity alpha-one/worker', ready: 'Unknown', reason: 'NotObserved', message: 'the operator has not reported generation 2 yet' },
    },
    {
      name: 'a namespace without a bundle is Unknown',
      modify: (g: MutableCluster): void => {
        g.bundles.delete('alpha-two');
      },
      ready: 'Unknown',
      problem: { object: 'Namespace alpha-two', ready: 'Unknown', reason: 'NoBundle', message: 'no ConfigMap portcullis-bundle yet' },
    },
    {
      name: 'a bundle that does not verify is refused: the tenant is not Ready and the revision it names is not in force',
      modify: (g: MutableCluster): void => {
        g.bundles.set('alpha-two', { revision: '9-0123456789abcdef', verdict: { code: 'bundle_digest_mismatch', message: 'data.json does not match its signed digest' } });
      },
      ready: 'False',
      problem: { object: 'Namespace alpha-two', ready: 'False', reason: 'BundleRefused', message: 'its portcullis-bundle does not verify (bundle_digest_mismatch): data.json does not match its signed digest' },
    },
  ])('$name', ({ modify, ready, problem }) => {
    const alpha = summarize(cluster(modify))[0];
    expect(alpha?.ready).toBe(ready);
    expect(alpha?.notReady).toEqual([problem]);
    expect(alpha?.revisions).toEqual([REV]);
  });

  it('shows the revisions of bundles it could not check, as not verified', () => {
    const alpha = summarize(cluster((g) => {
      g.bundles.set('alpha-one', { revision: REV });
      g.bundles.set('alpha-two', { revision: REV });
    }))[0];
    expect(alpha).toMatchObject({ ready: 'True', revisions: [REV], namespaces: [{ name: 'alpha-one', revision: REV, verified: false }, { name: 'alpha-two', revision: REV, verified: false }] });
  });

  it('prints a kubectl-style table, then why a tenant is not Ready', () => {
    const tenants = summarize(cluster((g) => {
      g.resources[1] = resource('ToolPolicy', 'alpha-one', 'payments', condition('False', 'RegexError', 'rule big: invalid regex'));
    }));
    expect(formatStatus(tenants, false)).toBe(
      [
        `TENANT   READY   AGENTS   POLICIES   EGRESS   REVISION             NAMESPACES`,
        `alpha    False   1        1          1        ${REV}   alpha-one,alpha-two`,
        `solo     True    1        0          0        1-fedcba9876543210   solo`,
        '',
        'Tenant alpha is not Ready:',
        '  ToolPolicy alpha-one/payments: Ready=False RegexError: rule big: invalid regex',
        '',
      ].join('\n'),
    );
  });

  it('says so when there is no tenant', () => {
    expect(formatStatus([], false)).toBe('No tenants found.\n');
  });

  it('pads every column but the last', () => {
    expect(table([['A', 'BB'], ['CCC', 'D']])).toBe('A     BB\nCCC   D\n');
  });
});

describe('kubectl portcullis suspend --wait', () => {
  const agent = (observedGeneration: number, suspended: boolean, ready: Condition): Parameters<typeof revisionInForce>[0] => ({ status: { observedGeneration, suspended, conditions: [ready] } });

  it.each([
    { name: 'in force: Ready names the revision', agent: agent(2, true, condition('True', 'InForce', `in force at bundle revision ${REV}`, 2)), expected: { revision: REV } },
    {
      name: 'in force while the tenant is blocked: the standing went out in the revision named',
      agent: agent(2, true, condition('False', 'TenantBlocked', `valid, but ...; revision ${REV} stays in force; its suspension and revokedBefore are in force at revision ${REV}`, 2)),
      expected: { revision: REV },
    },
    { name: 'not yet: the operator saw an older generation', agent: agent(1, false, condition('True', 'InForce', `in force at bundle revision ${REV}`, 1)), expected: { waiting: 'the operator has not seen generation 2 yet' } },
    { name: 'not yet: the status does not say suspended', agent: agent(2, false, condition('True', 'InForce', `in force at bundle revision ${REV}`, 2)), expected: { waiting: 'its status says suspended: false' } },
    { name: 'not yet: no bundle is in force', agent: agent(2, true, condition('False', 'TenantBlocked', 'valid, but ...; no bundle is in force yet', 2)), expected: { waiting: 'Ready=False TenantBlocked: valid, but ...; no bundle is in force yet' } },
  ])('$name', ({ agent: object, expected }) => {
    expect(revisionInForce(object, 2, true)).toEqual(expected);
  });
});
