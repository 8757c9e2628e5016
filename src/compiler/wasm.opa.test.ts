import { loadPolicy } from '@open-policy-agent/opa-wasm';
import type { LoadedPolicy } from '@open-policy-agent/opa-wasm';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { ENTRYPOINT } from './program.ts';
import { agent, compiledEvaluator, toolPolicy } from './test-support.ts';
import { PolicyProgram } from './wasm.ts';

let policy: LoadedPolicy;
let program: PolicyProgram;

beforeAll(async () => {
  const { compiled } = await compiledEvaluator(
    [agent('ns', 'bot'), toolPolicy('ns', 'p', [{ name: 'small', tool: 't', decision: 'allow', when: [{ param: 'note', regex: '.*' }, { param: 'amount', max: 10 }] }])],
    'ns',
  );
  policy = await loadPolicy(compiled.wasm);
  policy.setData(compiled.data);
  program = new PolicyProgram(policy, ENTRYPOINT);
}, 60_000);

const call = (params: Record<string, unknown>): Record<string, unknown> => ({
  namespace: 'ns',
  agent: 'bot',
  tool: 't',
  params,
  user: { attributes: {} },
  delegation: [],
  time: '2026-11-23T14:00:00Z',
  counters: { calls: {}, rate: {}, spentUSD: {} },
  signals: { clock: {}, threats: {}, regex: {} },
});

describe("evaluating through the ABI's opa_eval", () => {
  it("gives opa-wasm's result set for any params, non-ASCII text included", () => {
    fc.assert(
      fc.property(fc.dictionary(fc.constantFrom('note', 'amount', 'x'), fc.oneof(fc.jsonValue(), fc.string({ unit: 'grapheme' }))), (params) => {
        const input = call(params);
        expect(program.evaluate(input)).toEqual(policy.evaluate(input, ENTRYPOINT));
      }),
      { numRuns: 300 },
    );
  });

  it('grows the module memory for an input larger than it, and answers the same after', () => {
    const large = call({ note: 'é'.repeat(3 * 1024 * 1024), amount: 5 });
    const result = program.evaluate(large) as [{ result: { outcome: { enforced: boolean; key?: number } } }];
    expect(result[0].result.outcome).toMatchObject({ enforced: true, key: expect.any(Number) as unknown });
    const small = call({ note: 'ok', amount: 50 });
    expect(program.evaluate(small)).toEqual(policy.evaluate(small, ENTRYPOINT));
  });

  it('refuses an entrypoint the module does not have', () => {
    expect(() => new PolicyProgram(policy, 'portcullis/authz/nothing')).toThrow(/no entrypoint portcullis\/authz\/nothing/);
  });
});
