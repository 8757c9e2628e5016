import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import type { PolicyRule } from '../api/index.ts';
import { compileTenant, generateTenant } from './compile.ts';
import { CompileErrors } from './errors.ts';
import { checkStrict } from './opa.ts';
import { agent, egressRule, manyRules, namespace, toolPolicy, tenantOf } from './test-support.ts';

const withModule =
  (name: string, module: string) =>
  (p: { spec: { rego?: unknown } }): void => {
    p.spec.rego = [{ name, module }];
  };

function sampleResources(): Parameters<typeof tenantOf>[0] {
  return [
    namespace('finance', 'finance'),
    agent('finance', 'bot'),
    toolPolicy(
      'finance',
      'payments',
      [
        { name: 'small', tool: 'stripe', actions: ['create'], decision: 'allow', when: [{ param: 'amount', max: 5000 }, { param: 'account', regex: '[0-9]+' }] },
        { name: 'hours', tool: 'export', decision: 'allow', when: [{ time: { start: '09:00', end: '17:00', timeZone: 'Europe/Paris' } }] },
      ],
      withModule('extra', 'package finance.extra\n\ndeny contains "no" if input.params.block == true\n'),
    ),
    toolPolicy('finance', 'audit', [{ name: 'read', tool: 'ledger', decision: 'allow' }]),
    egressRule('finance', 'llm', [{ host: 'api.openai.com', ports: [443] }]),
  ];
}

/**
 * A tenant with `count` rules spread over policies of 100 rules, every condition
 * distinct (the worst case: no condition is shared between rules).
 */
function worstCase(count: number): ReturnType<typeof manyRules> {
  return manyRules('big', count, {
    tools: 50,
    actions: ['create', 'update'],
    when: (r) => [
      { param: 'amount', max: 1000 + r },
      { param: 'currency', oneOf: ['USD', 'EUR', `C${r}`] },
      { param: 'account', regex: `^[0-9]{10,12}-${r}$` },
      { time: { days: ['Mon', 'Tue', 'Wed', 'Thu', 'Fri'], start: '09:00', end: `${String(10 + (r % 13)).padStart(2, '0')}:${String(r % 60).padStart(2, '0')}`, timeZone: 'America/New_York' } },
    ],
  });
}

describe('generated Rego', () => {
  it('passes opa check --strict, raw modules included', async () => {
    const generated = generateTenant(tenantOf(sampleResources(), 'finance'));
    expect(generated.rego.map((f) => f.path)).toEqual(['portcullis/authz.rego', 'finance/payments/extra.rego']);
    expect(await checkStrict(generated.rego)).toBe('');
  });

  it('moves a raw module under data.portcullis.custom without shifting its lines', () => {
    const module = generateTenant(tenantOf(sampleResources(), 'finance')).rego[1]?.text ?? '';
    expect(module.split('\n')[0]).toBe('package portcullis.custom.m0 # ToolPolicy finance/payments rego extra');
    expect(module.split('\n')[2]).toBe('deny contains "no" if input.params.block == true');
  });

  it('fails a raw module that does not compile with OPA message, file, line, resource and field', async () => {
    const resources = [agent('finance', 'bot'), toolPolicy('finance', 'payments', [], withModule('broken', 'package x\n\ndeny contains msg if {\n  msg := undefined_thing\n}\n'))];
    const failure = await compileTenant(tenantOf(resources, 'finance')).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(CompileErrors);
    const [error] = (failure as CompileErrors).errors;
    expect(error).toMatchObject({ code: 'rego_error', location: { resource: 'ToolPolicy finance/payments', rule: 'rego/broken', field: 'spec.rego[0].module' } });
    expect(error?.detail).toContain('finance/payments/broken.rego:4');
  }, 30_000);

  it('rejects a raw module without a package', () => {
    const resources = [agent('finance', 'bot'), toolPolicy('finance', 'payments', [], withModule('bare', 'deny contains "x" if true\n'))];
    expect(() => generateTenant(tenantOf(resources, 'finance'))).toThrow(/rego_error.*no package/);
  });
});

describe('determinism', () => {
  it('gives the same bytes and revision whatever order the resources come in', async () => {
    const resources = sampleResources();
    const a = await compileTenant(tenantOf(resources, 'finance'));
    const b = await compileTenant(tenantOf([...resources].reverse(), 'finance'));
    expect(b.dataJson).toBe(a.dataJson);
    expect(b.revision).toBe(a.revision);
    expect(Buffer.from(b.wasm).equals(Buffer.from(a.wasm))).toBe(true);
  }, 30_000);

  it('gives another revision when a rule changes', () => {
    const resources = sampleResources();
    const changed = tenantOf(resources, 'finance');
    const spec = changed.policies[1]?.resource.spec;
    if (spec?.rules?.[0] !== undefined) spec.rules[0].decision = 'deny';
    expect(generateTenant(changed).revision).not.toBe(generateTenant(tenantOf(resources, 'finance')).revision);
  });
});

describe('a tenant with 1,000 rules', () => {
  it('fits a ConfigMap (policy.wasm in base64, data.json as text) even when no condition is shared', async () => {
    const compiled = await compileTenant(tenantOf(worstCase(1000), 'big'));
    const base64Wasm = Math.ceil(compiled.wasm.length / 3) * 4;
    const data = Buffer.byteLength(compiled.dataJson);
    console.log(`1,000 rules: policy.wasm ${compiled.wasm.length} B (${base64Wasm} B base64), data.json ${data} B, both gzipped ${gzipSync(compiled.dataJson).length + gzipSync(compiled.wasm).length} B`);
    expect(base64Wasm + data).toBeLessThan(1024 * 1024);
  }, 60_000);

  it('stores a condition shared by many rules once', () => {
    const shared = { param: 'currency', oneOf: ['USD', 'EUR'] } as const;
    const rules: PolicyRule[] = Array.from({ length: 200 }, (_, r) => ({ name: `r${r}`, tool: 't', decision: 'allow', when: [{ ...shared, oneOf: [...shared.oneOf] as [string, ...string[]] }] }));
    const data = generateTenant(tenantOf([agent('big', 'bot'), toolPolicy('big', 'p', rules)], 'big')).data.portcullis;
    expect(data.conditions).toHaveLength(1);
  });
});

describe('what the data tells the program', () => {
  it('marks the namespaces that have a ToolPolicy or EgressRule in shadow mode, and only those', () => {
    const resources = [
      namespace('a', 't'),
      namespace('b', 't'),
      namespace('c', 't'),
      namespace('d', 't'),
      agent('a', 'bot'),
      toolPolicy('a', 'trial', [{ name: 'r', tool: 'x', decision: 'allow' }], (p) => {
        p.spec.mode = 'shadow';
      }),
      toolPolicy('b', 'enforced', [{ name: 'r', tool: 'x', decision: 'allow' }]),
      egressRule('c', 'trial-egress', [{ host: 'api.example.com' }], (r) => {
        r.spec.mode = 'shadow';
      }),
      egressRule('d', 'egress', [{ host: 'api.example.com' }]),
    ];
    expect(generateTenant(tenantOf(resources, 't')).data.portcullis.shadowed).toEqual({ a: true, c: true });
  });

  it('keys each regex condition by its place in the condition table, never by a bare number', () => {
    const rules: PolicyRule[] = [
      { name: 'r0', tool: 'x', decision: 'allow', when: [{ param: 'amount', max: 5 }, { param: 'code', regex: '[A-Z]{3}' }] },
      { name: 'r1', tool: 'x', decision: 'allow', when: [{ param: 'code', regex: '[A-Z]{3}' }, { param: 'id', regex: '[0-9]+' }] },
    ];
    const { conditions } = generateTenant(tenantOf([agent('big', 'bot'), toolPolicy('big', 'p', rules)], 'big')).data.portcullis;
    expect(conditions.map((c) => (c.op === 'regex' ? c.signal : c.op))).toEqual(['max', 'r1', 'r2']);
  });
});
