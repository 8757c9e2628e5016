import { describe, expect, it } from 'vitest';
import type { AuthorizationDecision } from '../compiler/index.ts';
import type { LoadedPolicy } from './bundle-verdict.ts';
import { caseVariantReason, matchRoute, NO_TOOLS, readAs, toolTable, toolTableOf, ToolTableError } from './tools.ts';

const TOOLS = [
  {
    name: 'stripe-payments',
    http: {
      host: 'payments.tools.svc',
      port: 8080,
      actions: [
        { name: 'get_any', method: 'GET', path: '/v1/*' },
        { name: 'get_payment', method: 'GET', path: '/v1/payments/*' },
        { name: 'list_payments', method: 'GET', path: '/v1/payments' },
        { name: 'create_payment', method: 'POST', path: '/v1/payments' },
      ],
    },
  },
  { name: 'wiki', http: { host: 'wiki.tools.svc' } },
  { name: 'ehr', mcp: { host: 'ehr-mcp.tools.svc', path: '/mcp' } },
  { name: 'crm', mcp: { host: 'payments.tools.svc', port: 8080, path: '/mcp/*' } },
  { name: 'anything-mcp', mcp: { host: 'all.mcp.svc' } },
];

describe('toolTable', () => {
  it.each([
    ['a tool without a name', [{ http: { host: 'h' } }], /tools\[0\]: a tool needs a name/],
    ['a tool declared twice', [{ name: 'a', http: { host: 'h' } }, { name: 'a', http: { host: 'g' } }], /tools\[1\]: the tool a is declared twice/],
    ['a tool with both http and mcp', [{ name: 'a', http: { host: 'h' }, mcp: { host: 'h' } }], /exactly one of http or mcp/],
    ['a host that is not lower-case', [{ name: 'a', http: { host: 'Pay.svc' } }], /tools\[0\]\.http\.host/],
    ['a port out of range', [{ name: 'a', mcp: { host: 'h', port: 70000 } }], /tools\[0\]\.mcp\.port/],
    ['an action with an unknown method', [{ name: 'a', http: { host: 'h', actions: [{ name: 'x', method: 'TRACE', path: '/' }] } }], /actions\[0\]: an action needs a name and a method/],
    ['a relative action path', [{ name: 'a', http: { host: 'h', actions: [{ name: 'x', method: 'GET', path: 'v1' }] } }], /actions\[0\]\.path: must be a path/],
    ['a relative MCP endpoint path', [{ name: 'a', mcp: { host: 'h', path: 'mcp' } }], /mcp\.path: must be a path/],
  ])('refuses %s, naming it', (_name, declarations, message) => {
    expect(() => toolTable(declarations)).toThrow(ToolTableError);
    expect(() => toolTable(declarations)).toThrow(message);
  });
});

describe('matchRoute', () => {
  const table = toolTable(TOOLS);
  const at = (host: string, port: number, method: string, path: string): ReturnType<typeof matchRoute> => matchRoute(table, { host, port, method, path });

  it.each([
    ['an exact action path over a /* prefix that also covers it', at('payments.tools.svc', 8080, 'GET', '/v1/payments'), { kind: 'tool', tool: 'stripe-payments', action: 'list_payments' }],
    ['the longest /* prefix over a shorter one', at('payments.tools.svc', 8080, 'GET', '/v1/payments/p_1'), { kind: 'tool', tool: 'stripe-payments', action: 'get_payment' }],
    ['a shorter /* prefix where only it matches', at('payments.tools.svc', 8080, 'GET', '/v1/refunds/r_1'), { kind: 'tool', tool: 'stripe-payments', action: 'get_any' }],
    ['another method on a declared path, as an unknown action', at('payments.tools.svc', 8080, 'DELETE', '/v1/payments'), { kind: 'unknown-action', tool: 'stripe-payments' }],
    ['a path that only shares a prefix with /v1/*', at('payments.tools.svc', 8080, 'GET', '/v1x'), { kind: 'unknown-action', tool: 'stripe-payments' }],
    ['the declared host on another port, as refused: a host that declares tools is never egress', at('payments.tools.svc', 9090, 'GET', '/v1/payments'), { kind: 'refused', reason: 'the host payments.tools.svc declares tools on other ports than 9090' }],
    ['a tool that declares no actions, on any port', at('wiki.tools.svc', 9000, 'GET', '/pages/home'), { kind: 'tool', tool: 'wiki' }],
    ['an MCP endpoint at its path', at('ehr-mcp.tools.svc', 80, 'POST', '/mcp'), { kind: 'mcp', tool: 'ehr' }],
    ['another path of a host that only has an MCP endpoint, as an unknown action', at('ehr-mcp.tools.svc', 80, 'POST', '/other'), { kind: 'unknown-action', tool: 'ehr' }],
    ['an MCP endpoint path in another letter case, as an unknown action', at('ehr-mcp.tools.svc', 80, 'POST', '/MCP'), { kind: 'unknown-action', tool: 'ehr' }],
    ['an MCP endpoint path with a trailing slash, as an unknown action', at('ehr-mcp.tools.svc', 80, 'POST', '/mcp/'), { kind: 'unknown-action', tool: 'ehr' }],
    ['a path that differs from an exact action only in case, where a prefix takes it, as refused', at('payments.tools.svc', 8080, 'GET', '/v1/Payments'), { kind: 'refused', reason: expect.stringContaining('would run stripe-payments/list_payments, not stripe-payments/get_any') as unknown }],
    ['an exact action path with a trailing slash a prefix takes, as refused', at('payments.tools.svc', 8080, 'GET', '/v1/payments/'), { kind: 'refused', reason: expect.stringContaining('would run stripe-payments/list_payments, not stripe-payments/get_payment') as unknown }],
    ['a path that differs in case only below a prefix, as the prefix', at('payments.tools.svc', 8080, 'GET', '/v1/payments/P_1'), { kind: 'tool', tool: 'stripe-payments', action: 'get_payment' }],
    ['a longer name of a tool host, as refused', at('payments.tools.svc.cluster.local', 8080, 'GET', '/v1/payments'), { kind: 'refused', reason: 'the host payments.tools.svc.cluster.local names the tool host payments.tools.svc under another name: call it as payments.tools.svc' }],
    ['a shorter name of a tool host, as refused', at('wiki.tools', 80, 'GET', '/'), { kind: 'refused', reason: expect.stringContaining('names the tool host wiki.tools.svc') as unknown }],
    ['an MCP endpoint under /* before the HTTP tool of the same host', at('payments.tools.svc', 8080, 'POST', '/mcp/crm'), { kind: 'mcp', tool: 'crm' }],
    ['an MCP tool that takes every path of its host', at('all.mcp.svc', 443, 'GET', '/anything'), { kind: 'mcp', tool: 'anything-mcp' }],
    ['an undeclared host, as egress', at('api.example.com', 443, 'GET', '/'), { kind: 'egress' }],
  ])('matches %s', (_name, match, expected) => {
    expect(match).toEqual(expected);
  });

  it('refuses a path an HTTP tool takes that differs from its host\'s MCP endpoint only in case or a trailing slash', () => {
    const shared = toolTable([{ name: 'site', http: { host: 'h.svc' } }, { name: 'agent-mcp', mcp: { host: 'h.svc', path: '/mcp' } }]);
    for (const path of ['/MCP', '/Mcp/', '/mcp/']) {
      expect(matchRoute(shared, { host: 'h.svc', port: 80, method: 'POST', path })).toEqual({ kind: 'refused', reason: expect.stringContaining('would run agent-mcp, not site') as unknown });
    }
    expect(matchRoute(shared, { host: 'h.svc', port: 80, method: 'POST', path: '/mcp' })).toEqual({ kind: 'mcp', tool: 'agent-mcp' });
    expect(matchRoute(shared, { host: 'h.svc', port: 80, method: 'POST', path: '/mcpx' })).toEqual({ kind: 'tool', tool: 'site' });
  });

  it('prefers a port-specific route of a host over one on any port, whatever the declared order', () => {
    const both = toolTable([{ name: 'any-port', mcp: { host: 'h.svc' } }, { name: 'on-8080', mcp: { host: 'h.svc', port: 8080 } }]);
    expect(matchRoute(both, { host: 'h.svc', port: 8080, method: 'POST', path: '/' })).toEqual({ kind: 'mcp', tool: 'on-8080' });
    expect(matchRoute(both, { host: 'h.svc', port: 9090, method: 'POST', path: '/' })).toEqual({ kind: 'mcp', tool: 'any-port' });
  });
});

describe('readAs', () => {
  const table = toolTable([], [['name'], ['kind'], ['invoice', 'amount'], ['invoice', 'Total']]);

  it.each([
    ['a path read as written', ['name'], 'read'],
    ['a prefix of a path read', ['invoice'], 'read'],
    ['a path no policy reads', ['pageSize'], 'other'],
    ['a path in another letter case', ['Name'], { caseOf: 'name' }],
    ['a nested name in another letter case', ['invoice', 'AMOUNT'], { caseOf: 'invoice.amount' }],
    ['a name spelled with the Kelvin sign, which case-insensitive readers take for k', ['\u212Aind'], { caseOf: 'kind' }],
    ['a path the policy writes in mixed case, written in lower case', ['invoice', 'total'], { caseOf: 'invoice.Total' }],
  ])('says %s', (_name, path, expected) => {
    expect(readAs(table, path)).toEqual(expected);
  });

  it('knows no paths without a loaded policy', () => {
    expect(readAs(NO_TOOLS, ['name'])).toBe('other');
  });
});

describe('toolTableOf', () => {
  const policy = (tools: LoadedPolicy['tools']): LoadedPolicy => ({
    revision: '1-aaaaaaaaaaaaaaaa',
    tenant: 'finance',
    authorize: (): AuthorizationDecision => ({ decision: 'deny', enforced: true, policy: null, rule: 'r', revision: '1-aaaaaaaaaaaaaaaa', reasons: [] }),
    obligations: () => ({ calls: [], rate: [], spend: [] }),
    standing: () => undefined,
    ...(tools === undefined ? {} : { tools }),
  });

  it('maps nothing without a loaded policy, or with one that declares no tools', () => {
    expect(toolTableOf(undefined)).toBe(NO_TOOLS);
    expect(toolTableOf(policy(undefined))).toEqual(NO_TOOLS);
  });

  it('builds the table of a loaded policy once, and a new policy gets its own', () => {
    const first = policy([{ name: 'ehr', mcp: { host: 'ehr.svc', path: '/mcp' } }]);
    expect(toolTableOf(first)).toBe(toolTableOf(first));
    const second = policy([{ name: 'records', mcp: { host: 'ehr.svc', path: '/mcp' } }]);
    expect(matchRoute(toolTableOf(second), { host: 'ehr.svc', port: 80, method: 'POST', path: '/mcp' })).toEqual({ kind: 'mcp', tool: 'records' });
  });
});

describe('caseVariantReason', () => {
  const reading = toolTable([], [['name'], ['account', 'owner']]);

  it.each([
    ['a parameter in another letter case than a policy reads', { Name: 'secret' }, 'the parameter Name differs only in letter case from name, which the policy reads'],
    ['a nested one, along a path the policies read', { account: { OWNER: 'x' } }, 'the parameter account.OWNER differs only in letter case from account.owner, which the policy reads'],
  ])('refuses %s', (_name, params, reason) => {
    expect(caseVariantReason(reading, params)).toBe(reason);
  });

  it.each([
    ['parameters as the policies read them', { name: 'a', account: { owner: 'b' } }],
    ['parameters no policy reads, in any case', { Other: 1, other: 2 }],
    ['no parameters', {}],
  ])('lets through %s', (_name, params) => {
    expect(caseVariantReason(reading, params)).toBeUndefined();
  });
});
