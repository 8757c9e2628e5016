// The portcullis command line: subcommand dispatch and error reporting. Each
// subcommand returns its exit code; errors are printed here, once.
import { CompileError, CompileErrors, InputError } from '../compiler/index.ts';
import { AUDIT_USAGE, auditCommand } from './audit.ts';
import { BUNDLE_USAGE, bundleCommand } from './bundle.ts';
import { EVAL_USAGE, evalCommand } from './eval.ts';
import type { CliIo } from './io.ts';
import { UsageError } from './io.ts';
import { TEST_USAGE, testCommand } from './test-cases.ts';
import { OPERATOR_USAGE, operatorCommand } from '../operator/main.ts';
import { SIDECAR_USAGE, sidecarCommand } from '../sidecar/main.ts';

export const USAGE = `Usage: portcullis COMMAND [options]

Commands:
  eval     decide one call against policy files (no cluster needed)
  test     run policy test cases
  bundle   build, inspect and verify signed tenant bundles
  audit    verify an audit log (hash chain and signed checkpoints); make its signing key
  operator run the operator (reconciles policies into signed per-tenant bundles)
  sidecar  run the authorization sidecar of an agent pod (Envoy ext_authz and /v1/authorize)
  help     show this text, or the text of a command: portcullis help eval

Run portcullis COMMAND --help for the options of a command.
`;

type Command = (args: string[], io: CliIo) => Promise<number>;

const COMMANDS: Readonly<Record<string, { run: Command; usage: string }>> = {
  eval: { run: evalCommand, usage: EVAL_USAGE },
  test: { run: testCommand, usage: TEST_USAGE },
  bundle: { run: bundleCommand, usage: BUNDLE_USAGE },
  audit: { run: auditCommand, usage: AUDIT_USAGE },
  operator: { run: (args) => operatorCommand(args), usage: OPERATOR_USAGE },
  sidecar: { run: (args) => sidecarCommand(args), usage: SIDECAR_USAGE },
};

function isParseArgsError(error: unknown): error is Error {
  return error instanceof TypeError && 'code' in error && String(error.code).startsWith('ERR_PARSE_ARGS');
}

function report(error: unknown, io: CliIo, usage: string): number {
  if (error instanceof UsageError || isParseArgsError(error)) {
    io.stderr(`portcullis: ${error.message}\n\n${usage}`);
    return 2;
  }
  if (error instanceof CompileErrors) {
    io.stderr(`portcullis: the policies do not compile:\n${error.errors.map((e) => `  ${e.message}\n`).join('')}`);
    return 1;
  }
  if (error instanceof CompileError || error instanceof InputError) {
    io.stderr(`portcullis: ${error.message}\n`);
    return 1;
  }
  throw error;
}

export async function run(argv: readonly string[], io: CliIo): Promise<number> {
  const [name, ...args] = argv;
  if (name === undefined || name === 'help' || name === '--help' || name === '-h') {
    const topic = name === 'help' && args[0] !== undefined ? COMMANDS[args[0]] : undefined;
    io.stdout(topic?.usage ?? USAGE);
    return 0;
  }
  const command = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (command === undefined) {
    io.stderr(`portcullis: unknown command ${name}\n\n${USAGE}`);
    return 2;
  }
  try {
    return await command.run(args, io);
  } catch (error) {
    return report(error, io, command.usage);
  }
}
