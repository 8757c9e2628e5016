import { defineConfig } from 'vitest/config';

// Tests that run the real opa binary (opa build, opa check, opa inspect, the
// CLI end to end). They need no cluster, but unit tests need no binary at all.
const POLICY_TESTS = [
  'src/**/*.opa.test.ts',
  'src/cli/cli.test.ts',
  'src/cli/bundle.test.ts',
  'src/compiler/compile.test.ts',
  'src/compiler/evaluate.test.ts',
  'src/compiler/evaluate.property.test.ts',
];

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['src/**/*.test.ts', 'hack/**/*.test.ts'],
          exclude: POLICY_TESTS,
          environment: 'node',
          // A unit test that reaches for opa fails loudly instead of finding one.
          env: { PORTCULLIS_OPA: '/opa-is-not-available-to-unit-tests', TEST_ASSET_OPA: '' },
        },
      },
      {
        test: {
          name: 'policy',
          include: POLICY_TESTS,
          environment: 'node',
          testTimeout: 30_000,
          hookTimeout: 60_000,
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          environment: 'node',
          globalSetup: ['test/harness/global-setup.ts'],
          // One control plane serves every file; files run one at a time so
          // they don't fight over it or over the two cores.
          fileParallelism: false,
          testTimeout: 60_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
});
