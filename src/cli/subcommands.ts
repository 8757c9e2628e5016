// Commands made of subcommands (audit, bundle): each subcommand has its own
// usage, shown by --help and with its usage errors.
import type { CliIo } from './io.ts';
import { UsageError } from './io.ts';

export interface Subcommand {
  usage: string;
  run(args: string[], io: CliIo): Promise<number>;
}

/** -h or --help among the flags (before a `--` that ends them). */
export function asksForHelp(args: readonly string[]): boolean {
  const end = args.indexOf('--');
  return (end < 0 ? args : args.slice(0, end)).some((arg) => arg === '--help' || arg === '-h');
}

function isParseArgsError(error: unknown): error is Error {
  return error instanceof TypeError && 'code' in error && String(error.code).startsWith('ERR_PARSE_ARGS');
}

/** Runs the subcommand named first in `args`; its usage errors carry its own usage. */
export async function runSubcommand(command: string, usage: string, subcommands: Readonly<Record<string, Subcommand>>, args: string[], io: CliIo): Promise<number> {
  const [name, ...rest] = args;
  if (name === '--help' || name === '-h') {
    io.stdout(usage);
    return 0;
  }
  if (name === undefined) throw new UsageError(`${command} needs a subcommand`);
  const sub = Object.hasOwn(subcommands, name) ? subcommands[name] : undefined;
  if (sub === undefined) throw new UsageError(`unknown ${command} subcommand ${name}`);
  if (asksForHelp(rest)) {
    io.stdout(sub.usage);
    return 0;
  }
  try {
    return await sub.run(rest, io);
  } catch (error) {
    if (error instanceof UsageError && error.usage === undefined) throw new UsageError(error.message, sub.usage);
    if (isParseArgsError(error)) throw new UsageError(error.message, sub.usage);
    throw error;
  }
}
