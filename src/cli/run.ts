// The portcullis command line: subcommand dispatch and error reporting. Each
// subcommand returns its exit code; errors are printed here, once.
import { CompileError, CompileErrors, InputError } from '../compiler/errors.ts';
import type { CliIo } from './io.ts';
import { UsageError } from './io.ts';
import type { Subcommand } from './subcommands.ts';

export const USAGE = `Usage: portcullis COMMAND [options]

Commands:
  eval     decide one call against policy files (no cluster needed)
  test     run policy test cases
  bundle   build, inspect and verify signed tenant bundles
  audit    verify an audit log (hash chain and signed checkpoints); make its signing key
  operator run the operator (reconciles policies into signed per-tenant bundles)
  sidecar  run the authorization sidecar of an agent pod (Envoy ext_authz and /v1/authorize)
  redis    set up the Redis of the counters: the ACL user of an agent's sidecar
  help     show this text, or the text of a command: portcullis help eval, portcullis help audit verify

Cluster commands (kubeconfig and context as kubectl has them; as a kubectl
plugin: kubectl portcullis COMMAND):
  status   each tenant: its resources, Ready, the bundle revision in force, its namespaces, why not Ready
  why      decide one call against the bundle a namespace enforces now, read and verified from the cluster
  suspend  suspend an agent (its AgentIdentity's spec.suspended), optionally waiting until it is in force
  resume   resume a suspended agent

Run portcullis COMMAND --help (or COMMAND SUBCOMMAND --help) for the flags of a command.

Exit status: 0 done, 1 failed (see each command), 2 the command was called wrong.
`;

type Command = (args: string[], io: CliIo) => Promise<number>;

interface LoadedCommand {
  run: Command;
  usage: string;
  subcommands?: Readonly<Record<string, Subcommand>>;
}

// Each command's module is loaded only when it runs: the sidecar, in every
// agent pod, must not carry the operator's Kubernetes client (see docs/sidecar.md).
const COMMANDS: Readonly<Record<string, () => Promise<LoadedCommand>>> = {
  eval: async () => { const m = await import('./eval.ts'); return { run: m.evalCommand, usage: m.EVAL_USAGE }; },
  test: async () => { const m = await import('./test-cases.ts'); return { run: m.testCommand, usage: m.TEST_USAGE }; },
  bundle: async () => { const m = await import('./bundle.ts'); return { run: m.bundleCommand, usage: m.BUNDLE_USAGE, subcommands: m.BUNDLE_SUBCOMMANDS }; },
  audit: async () => { const m = await import('./audit.ts'); return { run: m.auditCommand, usage: m.AUDIT_USAGE, subcommands: m.AUDIT_SUBCOMMANDS }; },
  operator: async () => { const m = await import('../operator/main.ts'); return { run: (args) => m.operatorCommand(args), usage: m.OPERATOR_USAGE }; },
  sidecar: async () => { const m = await import('../sidecar/main.ts'); return { run: (args) => m.sidecarCommand(args), usage: m.SIDECAR_USAGE }; },
  redis: async () => { const m = await import('./redis.ts'); return { run: m.redisCommand, usage: m.REDIS_USAGE, subcommands: m.REDIS_SUBCOMMANDS }; },
  status: async () => { const m = await import('./status.ts'); return { run: m.statusCommand, usage: m.STATUS_USAGE }; },
  why: async () => { const m = await import('./why.ts'); return { run: m.whyCommand, usage: m.WHY_USAGE }; },
  suspend: async () => { const m = await import('./suspend.ts'); return { run: m.suspendCommand, usage: m.SUSPEND_USAGE }; },
  resume: async () => { const m = await import('./suspend.ts'); return { run: m.resumeCommand, usage: m.RESUME_USAGE }; },
};

function isParseArgsError(error: unknown): error is Error {
  return error instanceof TypeError && 'code' in error && String(error.code).startsWith('ERR_PARSE_ARGS');
}

/** A file named on the command line that cannot be read: missing, a folder, not readable. */
function isFileError(error: unknown): error is NodeJS.ErrnoException & { path: string } {
  return error instanceof Error && typeof (error as NodeJS.ErrnoException).path === 'string' && typeof (error as NodeJS.ErrnoException).syscall === 'string';
}

function report(error: unknown, io: CliIo, usage: string): number {
  if (error instanceof UsageError || isParseArgsError(error)) {
    io.stderr(`portcullis: ${error.message}\n\n${(error instanceof UsageError ? error.usage : undefined) ?? usage}`);
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
  if (isFileError(error)) {
    io.stderr(`portcullis: cannot read ${error.path}: ${error.message}\n`);
    return 2;
  }
  throw error;
}

/** The text of `portcullis help COMMAND [SUBCOMMAND]`. */
async function helpText(topic: readonly string[]): Promise<string | undefined> {
  const [name, sub, ...rest] = topic;
  if (name === undefined) return USAGE;
  const command = Object.hasOwn(COMMANDS, name) ? await COMMANDS[name]?.() : undefined;
  if (command === undefined || rest.length > 0) return undefined;
  if (sub === undefined) return command.usage;
  return command.subcommands !== undefined && Object.hasOwn(command.subcommands, sub) ? command.subcommands[sub]?.usage : undefined;
}

export async function run(argv: readonly string[], io: CliIo): Promise<number> {
  const [name, ...args] = argv;
  if (name === undefined || name === '--help' || name === '-h') {
    io.stdout(USAGE);
    return 0;
  }
  if (name === 'help') {
    const text = await helpText(args);
    if (text === undefined) {
      io.stderr(`portcullis: no help for ${args.join(' ')}\n\n${USAGE}`);
      return 2;
    }
    io.stdout(text);
    return 0;
  }
  const command = Object.hasOwn(COMMANDS, name) ? await COMMANDS[name]?.() : undefined;
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
