import { describe, expect, it } from 'vitest';
import { matchRoute, parseToolTable, ToolTableError } from './tools.ts';

describe('parseToolTable', () => {
  it('reads HTTP tools with their actions and leaves MCP tools out', () => {
    const table = parseToolTable(`
- name: stripe-payments
  http: { host: Payments.Tools.Svc, port: 8080, actions: [{ name: create_payment, method: POST, path: /v1/payments }] }
- name: ehr
  mcp: { host: ehr-mcp.tools.svc, path: /mcp }
`);
    expect(table.routes).toEqual([{ tool: 'stripe-payments', host: 'payments.tools.svc', port: 8080, actions: [{ name: 'create_payment', method: 'POST', path: '/v1/payments' }] }]);
  });

  it.each([
    ['a document that is not a list', 'name: x', /must hold a list/],
    ['a tool declared twice', '[{name: a}, {name: a}]', /declared twice/],
    ['an action with an unknown method', '[{name: a, http: {host: h, actions: [{name: x, method: TRACE, path: /}]}}]', /needs a name, a method/],
    ['a relative action path', '[{name: a, http: {host: h, actions: [{name: x, method: GET, path: v1}]}}]', /must start with/],
  ])('refuses %s', (_name, text, message) => {
    expect(() => parseToolTable(text)).toThrow(ToolTableError);
    expect(() => parseToolTable(text)).toThrow(message);
  });
});

describe('matchRoute', () => {
  const table = parseToolTable('[{name: pay, http: {host: pay.svc, port: 8080, actions: [{name: get, method: GET, path: /v1/items/*}]}}]');

  it.each([
    ['a declared action under a /* path', { host: 'pay.svc', port: 8080, method: 'GET', path: '/v1/items/7' }, { kind: 'tool', tool: 'pay', action: 'get' }],
    ['the declared host on another port, as egress', { host: 'pay.svc', port: 9090, method: 'GET', path: '/v1/items/7' }, { kind: 'egress' }],
    ['another method on the declared path', { host: 'pay.svc', port: 8080, method: 'DELETE', path: '/v1/items/7' }, { kind: 'unknown-action', tool: 'pay' }],
    ['a path that only shares a prefix with /v1/items/*', { host: 'pay.svc', port: 8080, method: 'GET', path: '/v1/itemsX' }, { kind: 'unknown-action', tool: 'pay' }],
  ])('matches %s', (_name, request, match) => {
    expect(matchRoute(table, request)).toEqual(match);
  });
});
