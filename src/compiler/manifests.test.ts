import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CompileError } from './errors.ts';
import { CompileErrors } from './errors.ts';
import { buildTenantIr } from './ir.ts';
import { parseManifests, readManifestPaths, tenantOf, tenantResources, tenantsOf } from './manifests.ts';
import { agent, namespace, toolPolicy, yamlOf } from './test-support.ts';

function errorsOf(text: string, file = 'policies.yaml'): CompileError[] {
  try {
    parseManifests(text, file);
  } catch (error) {
    if (error instanceof CompileErrors) return [...error.errors];
    throw error;
  }
  return [];
}

const header = 'apiVersion: portcullis.dev/v1alpha1\nkind: ToolPolicy\nmetadata: { name: pay, namespace: finance }\n';
const policyWith = (rules: string): string => `${header}spec:\n  subjects: { agents: [bot] }\n  rules:\n${rules}`;

describe('manifest errors name the file, document, resource, rule and field', () => {
  it.each([
    {
      name: 'YAML that does not parse is a parse_error with its document',
      text: `${yamlOf([agent('finance', 'bot')])}---\nkind: [unclosed\n`,
      expected: { code: 'parse_error', location: { file: 'policies.yaml', document: 1 } },
    },
    {
      name: 'an unknown field in a condition is a schema_error on that field',
      text: policyWith('    - name: small\n      tool: stripe\n      decision: allow\n      when: [ { param: amount, maximum: 5 } ]\n'),
      expected: { code: 'schema_error', location: { document: 0, resource: 'ToolPolicy finance/pay', rule: 'small', field: 'spec.rules[0].when[0].maximum' } },
    },
    {
      name: 'a regex RE2 rejects (a lookahead) is a regex_error on the regex field',
      text: policyWith('    - name: acct\n      tool: stripe\n      decision: allow\n      when: [ { param: account, regex: "(?=x)[0-9]+" } ]\n'),
      expected: { code: 'regex_error', location: { resource: 'ToolPolicy finance/pay', rule: 'acct', field: 'spec.rules[0].when[0].regex' } },
    },
    {
      name: 'a backreference, which RE2 does not have, is a regex_error',
      text: policyWith('    - name: rep\n      tool: stripe\n      decision: allow\n      when: [ { param: v, regex: "(a)\\\\1" } ]\n'),
      expected: { code: 'regex_error', location: { rule: 'rep', field: 'spec.rules[0].when[0].regex' } },
    },
    {
      name: 'a condition stating two kinds is a schema_error',
      text: policyWith('    - name: two\n      tool: stripe\n      decision: allow\n      when: [ { param: a, equals: 1, delegationDepth: { max: 1 } } ]\n'),
      expected: { code: 'schema_error', location: { rule: 'two', field: 'spec.rules[0].when[0]' } },
    },
    {
      name: 'an operator without param is a schema_error',
      text: policyWith('    - name: lone\n      tool: stripe\n      decision: allow\n      when: [ { oneOf: [a] } ]\n'),
      expected: { code: 'schema_error', location: { rule: 'lone' } },
    },
    {
      name: 'min greater than max is a schema_error',
      text: policyWith('    - name: range\n      tool: stripe\n      decision: allow\n      when: [ { param: a, min: 10, max: 1 } ]\n'),
      expected: { code: 'schema_error', location: { rule: 'range', field: 'spec.rules[0].when[0].min' } },
    },
    {
      name: 'equals holding a list is a schema_error',
      text: policyWith('    - name: eq\n      tool: stripe\n      decision: allow\n      when: [ { param: a, equals: [1] } ]\n'),
      expected: { code: 'schema_error', location: { rule: 'eq', field: 'spec.rules[0].when[0].equals' } },
    },
    {
      name: 'an unknown time zone is a schema_error',
      text: policyWith('    - name: tz\n      tool: stripe\n      decision: allow\n      when: [ { time: { start: "09:00", end: "17:00", timeZone: Mars/Olympus } } ]\n'),
      expected: { code: 'schema_error', location: { rule: 'tz', field: 'spec.rules[0].when[0].time.timeZone' } },
    },
    {
      name: 'two rules with one name are a schema_error',
      text: policyWith('    - { name: same, tool: a, decision: allow }\n    - { name: same, tool: b, decision: deny }\n'),
      expected: { code: 'schema_error', location: { field: 'spec.rules[1].name' } },
    },
    {
      name: 'sanitize without redact is a schema_error',
      text: policyWith('    - { name: s, tool: a, decision: sanitize }\n'),
      expected: { code: 'schema_error', location: { rule: 's', field: 'spec.rules[0].redact' } },
    },
    {
      name: 'a redact entry that is no detector is a schema_error',
      text: policyWith('    - { name: s, tool: a, decision: sanitize, redact: [passport] }\n'),
      expected: { code: 'schema_error', location: { rule: 's', field: 'spec.rules[0].redact[0]' } },
    },
    {
      name: 'redactResponse on a deny rule is a schema_error',
      text: policyWith('    - { name: d, tool: a, decision: deny, redactResponse: [ssn] }\n'),
      expected: { code: 'schema_error', location: { rule: 'd', field: 'spec.rules[0].redactResponse' } },
    },
    {
      name: 'a redactResponse entry that is no detector is a schema_error',
      text: policyWith('    - { name: r, tool: a, decision: allow, redactResponse: [passport] }\n'),
      expected: { code: 'schema_error', location: { rule: 'r', field: 'spec.rules[0].redactResponse[0]' } },
    },
    {
      name: 'a decision that does not exist is a schema_error',
      text: policyWith('    - { name: s, tool: a, decision: permit }\n'),
      expected: { code: 'schema_error', location: { rule: 's', field: 'spec.rules[0].decision' } },
    },
    {
      name: 'a misspelt apiVersion is a schema_error',
      text: header.replace('v1alpha1', 'v1') + 'spec: { subjects: { agents: [bot] } }\n',
      expected: { code: 'schema_error', location: { field: 'apiVersion' } },
    },
    {
      name: 'a misspelt kind of our group is a schema_error',
      text: header.replace('ToolPolicy', 'ToolPolicey') + 'spec: { subjects: { agents: [bot] } }\n',
      expected: { code: 'schema_error', location: { field: 'kind' } },
    },
    {
      name: 'subjects naming nobody is a schema_error',
      text: `${header}spec: { subjects: { agents: [] } }\n`,
      expected: { code: 'schema_error', location: { field: 'spec.subjects' } },
    },
  ])('$name', ({ text, expected }) => {
    const errors = errorsOf(text);
    expect(errors.length, errors.map((e) => e.message).join('\n')).toBeGreaterThan(0);
    expect(errors[0]).toMatchObject(expected);
    expect(errors[0]?.message).toContain('policies.yaml');
  });

  it('reports every bad document, not only the first', () => {
    const bad = policyWith('    - { name: s, tool: a, decision: permit }\n');
    expect(errorsOf(`${bad}---\n${bad.replace('name: pay', 'name: pay2')}`).map((e) => e.location.document)).toEqual([0, 1]);
  });

  it('accepts the samples of the design', async () => {
    const set = await readManifestPaths(['config/samples/finance.yaml']);
    expect(set.policies.map((p) => p.name)).toEqual(['payments']);
    expect(set.agents.map((a) => a.name).sort()).toEqual(['finance-agent', 'planner-agent']);
    expect(set.egressRules).toHaveLength(1);
  });

  it('ignores objects of other API groups', () => {
    expect(errorsOf('apiVersion: apps/v1\nkind: Deployment\nmetadata: { name: web }\nspec: { whatever: true }\n')).toEqual([]);
  });
});

describe('tenants', () => {
  const set = parseManifests(
    yamlOf([
      namespace('pay-eu', 'payments'),
      namespace('pay-us', 'payments'),
      namespace('hr'),
      agent('pay-eu', 'bot'),
      agent('pay-us', 'bot'),
      agent('hr', 'bot'),
      agent('loose', 'bot'),
    ]),
    'tenants.yaml',
  );

  it('groups namespaces by the tenant label', () => {
    expect(tenantOf(set, 'pay-eu')).toBe('payments');
    expect(tenantOf(set, 'pay-us')).toBe('payments');
    expect(tenantResources(set, 'payments').agents.map((a) => a.namespace)).toEqual(['pay-eu', 'pay-us']);
  });

  it('makes a namespace without the label its own tenant, and one without a manifest too', () => {
    expect(tenantOf(set, 'hr')).toBe('hr');
    expect(tenantOf(set, 'loose')).toBe('loose');
    expect(tenantsOf(set)).toEqual(['hr', 'loose', 'payments']);
  });

  it('rejects a namespace given to two tenants', () => {
    expect(errorsOf(yamlOf([namespace('x', 'a'), namespace('x', 'b')]))[0]).toMatchObject({ code: 'conflict_error' });
  });
});

describe('conflicts inside a tenant', () => {
  it('rejects two policies that declare one tool differently, naming both', () => {
    const declare = (host: string) => (p: { spec: { tools?: unknown } }): void => {
      p.spec.tools = [{ name: 'stripe', http: { host } }];
    };
    const set = parseManifests(
      yamlOf([toolPolicy('finance', 'a', [], declare('one.svc')), toolPolicy('finance', 'b', [], declare('two.svc'))]),
      'tools.yaml',
    );
    let errors: readonly CompileError[] = [];
    try {
      buildTenantIr(tenantResources(set, 'finance'));
    } catch (error) {
      if (error instanceof CompileErrors) errors = error.errors;
    }
    expect(errors.map((e) => [e.code, e.location.resource, e.location.field])).toEqual([
      ['conflict_error', 'ToolPolicy finance/a', 'spec.tools[0]'],
      ['conflict_error', 'ToolPolicy finance/b', 'spec.tools[0]'],
    ]);
  });

  const irErrors = (a: unknown[], b: unknown[]): [string, string | undefined, string | undefined, string][] => {
    const declare = (tools: unknown[]) => (p: { spec: { tools?: unknown } }): void => {
      p.spec.tools = tools;
    };
    const set = parseManifests(yamlOf([toolPolicy('finance', 'a', [], declare(a)), toolPolicy('finance', 'b', [], declare(b))]), 'tools.yaml');
    try {
      buildTenantIr(tenantResources(set, 'finance'));
    } catch (error) {
      if (error instanceof CompileErrors) return error.errors.map((e) => [e.code, e.location.resource, e.location.field, e.detail]);
      throw error;
    }
    return [];
  };

  it.each([
    ['two HTTP tools on one host, one of them on any port', [{ name: 'pay', http: { host: 'api.svc', port: 8080 } }], [{ name: 'refund', http: { host: 'api.svc' } }], 'api.svc:8080'],
    ['two MCP tools on one endpoint', [{ name: 'ehr', mcp: { host: 'mcp.svc', path: '/mcp' } }], [{ name: 'crm', mcp: { host: 'mcp.svc', path: '/mcp' } }], 'mcp.svc/mcp'],
    ['an MCP tool under a /* endpoint and one inside it', [{ name: 'ehr', mcp: { host: 'mcp.svc', path: '/mcp/*' } }], [{ name: 'crm', mcp: { host: 'mcp.svc', path: '/mcp/crm' } }], 'mcp.svc/mcp/*'],
    ['an HTTP tool and an MCP tool that takes every path of the host', [{ name: 'pay', http: { host: 'api.svc' } }], [{ name: 'ehr', mcp: { host: 'api.svc' } }], 'api.svc'],
  ])('rejects %s, naming both policies', (_name, a, b, where) => {
    const errors = irErrors(a, b);
    expect(errors.map(([code, resource, field]) => [code, resource, field])).toEqual([
      ['conflict_error', 'ToolPolicy finance/a', 'spec.tools[0]'],
      ['conflict_error', 'ToolPolicy finance/b', 'spec.tools[0]'],
    ]);
    expect(errors[0]?.[3]).toContain(`both claim requests to ${where}`);
  });

  it.each([
    ['one host on two ports', [{ name: 'pay', http: { host: 'api.svc', port: 8080 } }], [{ name: 'refund', http: { host: 'api.svc', port: 9090 } }]],
    ['an HTTP tool and an MCP endpoint on one host', [{ name: 'pay', http: { host: 'api.svc' } }], [{ name: 'ehr', mcp: { host: 'api.svc', path: '/mcp' } }]],
    ['two MCP endpoints on one host', [{ name: 'ehr', mcp: { host: 'mcp.svc', path: '/ehr' } }], [{ name: 'crm', mcp: { host: 'mcp.svc', path: '/crm' } }]],
  ])('accepts tools that share a host without sharing a request: %s', (_name, a, b) => {
    expect(irErrors(a, b)).toEqual([]);
  });

  it('carries the declared tools into the bundle data, once per name, sorted', () => {
    const declare = (p: { spec: { tools?: unknown } }): void => {
      p.spec.tools = [
        { name: 'stripe', http: { host: 'pay.svc', port: 8080, actions: [{ name: 'create', method: 'POST', path: '/v1/payments' }] } },
        { name: 'ehr', mcp: { host: 'ehr.svc', path: '/mcp' } },
      ];
    };
    const set = parseManifests(yamlOf([toolPolicy('finance', 'a', [], declare), toolPolicy('finance', 'b', [], declare)]), 'tools.yaml');
    expect(buildTenantIr(tenantResources(set, 'finance')).data.tools).toEqual([
      { name: 'ehr', mcp: { host: 'ehr.svc', path: '/mcp' } },
      { name: 'stripe', http: { host: 'pay.svc', port: 8080, actions: [{ name: 'create', method: 'POST', path: '/v1/payments' }] } },
    ]);
  });

  it('accepts two policies that declare one tool the same way', () => {
    const declare = (p: { spec: { tools?: unknown } }): void => {
      p.spec.tools = [{ name: 'stripe', http: { host: 'one.svc' } }];
    };
    const set = parseManifests(yamlOf([toolPolicy('finance', 'a', [], declare), toolPolicy('finance', 'b', [], declare)]), 'tools.yaml');
    expect(() => buildTenantIr(tenantResources(set, 'finance'))).not.toThrow();
  });
});

describe('reading -f paths', () => {
  let dir = '';
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'portcullis-manifests-'));
    await mkdir(join(dir, 'nested'));
    await writeFile(join(dir, 'agents.yaml'), yamlOf([agent('finance', 'bot')]));
    await writeFile(join(dir, 'nested', 'policy.yml'), yamlOf([toolPolicy('finance', 'p', [{ name: 'r', tool: 't', decision: 'allow' }])]));
    await writeFile(join(dir, 'README.md'), 'not a manifest');
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('reads YAML files of a folder and its subfolders, and nothing else', async () => {
    const set = await readManifestPaths([dir]);
    expect(set.agents).toHaveLength(1);
    expect(set.policies[0]?.source.file).toBe(join(dir, 'nested', 'policy.yml'));
  });

  it('names a path that does not exist', async () => {
    await expect(readManifestPaths([join(dir, 'missing.yaml')])).rejects.toMatchObject({ code: 'parse_error', location: { file: join(dir, 'missing.yaml') } });
  });
});

describe('user tokens and fail modes', () => {
  const identity = (userTokens: string): string =>
    `apiVersion: portcullis.dev/v1alpha1\nkind: AgentIdentity\nmetadata: { name: bot, namespace: finance }\nspec:\n  serviceAccountName: bot\n  owner: { name: Dana Ruiz, email: dana@example.com }\n  userTokens: ${userTokens}\n`;
  const rsaKey = '{ kty: RSA, kid: k1, n: AQAB, e: AQAB }';

  it.each([
    {
      name: 'a JWKS URL that is not https is a schema_error on jwksURL',
      text: identity('{ issuer: https://idp.example.com, audiences: [app], jwksURL: "http://idp.example.com/jwks" }'),
      field: 'spec.userTokens.jwksURL',
    },
    {
      name: 'both jwksURL and jwks is a schema_error on userTokens',
      text: identity(`{ issuer: https://idp.example.com, audiences: [app], jwksURL: "https://idp.example.com/jwks", jwks: { keys: [${rsaKey}] } }`),
      field: 'spec.userTokens',
    },
    {
      name: 'neither jwksURL nor jwks is a schema_error on userTokens',
      text: identity('{ issuer: https://idp.example.com, audiences: [app] }'),
      field: 'spec.userTokens',
    },
    {
      name: 'no audience is a schema_error on audiences',
      text: identity(`{ issuer: https://idp.example.com, audiences: [], jwks: { keys: [${rsaKey}] } }`),
      field: 'spec.userTokens.audiences',
    },
    {
      name: 'a symmetric key in jwks is a schema_error on that key',
      text: identity('{ issuer: https://idp.example.com, audiences: [app], jwks: { keys: [ { kty: oct, k: c2VjcmV0 } ] } }'),
      field: 'spec.userTokens.jwks.keys[0]',
    },
    {
      name: 'a private key in jwks is a schema_error on that key',
      text: identity('{ issuer: https://idp.example.com, audiences: [app], jwks: { keys: [ { kty: OKP, crv: Ed25519, x: AAAA, d: AAAA } ] } }'),
      field: 'spec.userTokens.jwks.keys[0]',
    },
    {
      name: 'the none algorithm is a schema_error on algorithms',
      text: identity(`{ issuer: https://idp.example.com, audiences: [app], jwks: { keys: [${rsaKey}] }, algorithms: [none] }`),
      field: 'spec.userTokens.algorithms[0]',
    },
    {
      name: 'an HMAC algorithm is a schema_error on algorithms',
      text: identity(`{ issuer: https://idp.example.com, audiences: [app], jwks: { keys: [${rsaKey}] }, algorithms: [HS256] }`),
      field: 'spec.userTokens.algorithms[0]',
    },
    {
      name: 'failOpen on an HTTP action that is not read-only is a schema_error on failOpen',
      text: `${header}spec:\n  subjects: { agents: [bot] }\n  tools:\n    - { name: files, http: { host: files.svc, actions: [ { name: delete, method: DELETE, path: /files/*, failOpen: [counters_unavailable] } ] } }\n`,
      field: 'spec.tools[0].http.actions[0].failOpen',
    },
    {
      name: 'failOpen on an MCP tool that is not read-only is a schema_error on failOpen',
      text: `${header}spec:\n  subjects: { agents: [bot] }\n  tools:\n    - { name: ehr, mcp: { host: ehr.svc, path: /mcp, actions: [ { name: delete_record, readOnly: false, failOpen: [evaluation_error] } ] } }\n`,
      field: 'spec.tools[0].mcp.actions[0].failOpen',
    },
    {
      name: 'a fail-open cause that does not exist is a schema_error',
      text: `${header}spec:\n  subjects: { agents: [bot] }\n  tools:\n    - { name: files, http: { host: files.svc, actions: [ { name: read, method: GET, path: /files/*, readOnly: true, failOpen: [no_bundle] } ] } }\n`,
      field: 'spec.tools[0].http.actions[0].failOpen[0]',
    },
  ])('$name', ({ text, field }) => {
    const errors = errorsOf(text);
    expect(errors.map((e) => e.message)).not.toEqual([]);
    expect(errors[0]).toMatchObject({ code: 'schema_error', location: { field } });
  });

  it('carries userTokens into the agent data with its defaults filled in: every asymmetric algorithm, sub as the id', () => {
    const set = parseManifests(identity(`{ issuer: https://idp.example.com, audiences: [web, app], jwks: { keys: [${rsaKey}] }, claims: { attributes: { region: region } } }`), 'agents.yaml');
    expect(buildTenantIr(tenantResources(set, 'finance')).data.agents.finance?.bot?.userTokens).toEqual({
      issuer: 'https://idp.example.com',
      audiences: ['app', 'web'],
      jwks: { keys: [{ kty: 'RSA', kid: 'k1', n: 'AQAB', e: 'AQAB' }] },
      algorithms: ['ES256', 'ES384', 'ES512', 'EdDSA', 'PS256', 'PS384', 'PS512', 'RS256', 'RS384', 'RS512'],
      claims: { id: 'sub', attributes: { region: 'region' } },
    });
  });

  it('carries read-only and fail-open declarations of HTTP actions and MCP tools into the tools of the bundle data', () => {
    const set = parseManifests(
      `${header}spec:\n  subjects: { agents: [bot] }\n  tools:\n` +
        '    - { name: files, http: { host: files.svc, actions: [ { name: read, method: GET, path: /files/*, readOnly: true, failOpen: [evaluation_error, counters_unavailable] } ] } }\n' +
        '    - { name: ehr, mcp: { host: ehr.svc, path: /mcp, actions: [ { name: search, readOnly: true, failOpen: [counters_unavailable] }, { name: delete_record } ] } }\n',
      'tools.yaml',
    );
    expect(buildTenantIr(tenantResources(set, 'finance')).data.tools).toEqual([
      { name: 'ehr', mcp: { host: 'ehr.svc', path: '/mcp', actions: [{ name: 'search', readOnly: true, failOpen: ['counters_unavailable'] }, { name: 'delete_record' }] } },
      { name: 'files', http: { host: 'files.svc', actions: [{ name: 'read', method: 'GET', path: '/files/*', readOnly: true, failOpen: ['counters_unavailable', 'evaluation_error'] }] } },
    ]);
  });
});

describe('regexes are bounded in what they cost every sidecar of the tenant', () => {
  const rule = (i: number, regex: string): string => `    - name: r${i}\n      tool: stripe\n      decision: allow\n      when: [ { param: v, regex: ${JSON.stringify(regex)} } ]\n`;

  it('refuses one regex that compiles to more than 10,000 RE2 instructions, naming its size', () => {
    const [error] = errorsOf(policyWith(rule(0, '[\\p{L}\\p{N}]{1000}'.repeat(11))));
    expect(error?.code).toBe('regex_error');
    expect(error?.location).toMatchObject({ rule: 'r0', field: 'spec.rules[0].when[0].regex' });
    expect(error?.message).toMatch(/compiles to \d+ RE2 instructions, more than the 10000 one regex may/);
  });

  it("refuses a policy whose regexes together compile to more than 250,000 instructions, on its rules", () => {
    const rules = Array.from({ length: 300 }, (_, i) => rule(i, `x${i}[\\p{L}\\p{N}]{1000}`)).join('');
    const errors = errorsOf(policyWith(rules));
    expect(errors).toHaveLength(1);
    expect(errors[0]?.code).toBe('regex_error');
    expect(errors[0]?.location).toMatchObject({ field: 'spec.rules' });
    expect(errors[0]?.message).toMatch(/the policy's regexes compile to 3\d{5} RE2 instructions, more than the 250000 one policy may/);
  });

  it('accepts a thousand ordinary regexes and the largest bounded ones a policy writes', () => {
    const rules = Array.from({ length: 1000 }, (_, i) => rule(i, i % 100 === 0 ? '.{1,1000}' : `^acct-${i}-[0-9]{10,12}$`)).join('');
    expect(errorsOf(policyWith(rules))).toEqual([]);
  });
});
