// portcullis redis acl: the Redis ACL user of one agent's sidecar, as a line
// for the server's ACL file or as an ACL SETUSER command. The rules are the
// counters' (src/sidecar/counters/acl.ts); the password is read from the file
// that becomes the agent's Secret, and only its SHA-256 is printed.
import { parseArgs } from 'node:util';
import { aclPasswordHash, counterAclFileLine, counterAclSetUser, DEFAULT_USER_OFF } from '../sidecar/counters/acl.ts';
import type { CliIo } from './io.ts';
import { UsageError } from './io.ts';
import type { Subcommand } from './subcommands.ts';
import { runSubcommand } from './subcommands.ts';

export const REDIS_USAGE = `Usage: portcullis redis SUBCOMMAND [flags]

Sets up the Redis that keeps the counters of --counters redis
(docs/counters.md, Redis security).

Subcommands:
  acl   print the Redis ACL user of an agent's sidecar

Flags:
  -h, --help  show this text (portcullis redis SUBCOMMAND --help: the flags of a subcommand)
`;

export const REDIS_ACL_USAGE = `Usage: portcullis redis acl --tenant TENANT --namespace NAMESPACE --agent AGENT --password-file FILE [--format aclfile|command]
       portcullis redis acl --default-user-off

Prints the Redis ACL user of one agent's sidecar, portcullis/TENANT/NAMESPACE/AGENT:
its own keys (portcullis:{TENANT/NAMESPACE/AGENT}:*) and only the commands of the
counter scripts. The password is read from FILE, the content of the agent's
Secret (one final line break is not part of it); only its SHA-256 is printed.

Flags:
  --tenant TENANT       the agent's tenant (the sidecar's --tenant)
  --namespace NS        the agent's namespace
  --agent AGENT         the agent (its ServiceAccount and AgentIdentity)
  --password-file FILE  the password the sidecar reads from its --redis-password-file
  --format FORMAT       aclfile: a line for the server's ACL file (default);
                        command: an ACL SETUSER command, for redis-cli
  --default-user-off    print the ACL file line that turns Redis' default user off,
                        so that a client without a password (the application) is refused
`;

const FORMATS = ['aclfile', 'command'] as const;
type Format = (typeof FORMATS)[number];

function formatOf(value: string | undefined): Format {
  const format = value ?? 'aclfile';
  if (!(FORMATS as readonly string[]).includes(format)) throw new UsageError(`--format must be one of ${FORMATS.join(', ')}, not ${JSON.stringify(format)}`);
  return format as Format;
}

function requiredFlag(value: string | undefined, flag: string): string {
  if (value === undefined || value === '') throw new UsageError(`redis acl needs --${flag}`);
  return value;
}

/** The password in a file: one final line break is not part of it, as the sidecar reads it. */
function passwordIn(content: string, file: string): string {
  const password = content.replace(/\r?\n$/, '');
  if (password === '') throw new UsageError(`--password-file ${file} is empty`);
  if (/[\r\n]/.test(password)) throw new UsageError(`--password-file ${file} holds more than one line`);
  return password;
}

async function aclCommand(args: string[], io: CliIo): Promise<number> {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      tenant: { type: 'string' },
      namespace: { type: 'string' },
      agent: { type: 'string' },
      'password-file': { type: 'string' },
      format: { type: 'string' },
      'default-user-off': { type: 'boolean' },
    },
  });
  if (values['default-user-off'] === true) {
    if (values.agent !== undefined || values['password-file'] !== undefined) throw new UsageError('--default-user-off prints one line on its own: give it without an agent');
    io.stdout(`${DEFAULT_USER_OFF}\n`);
    return 0;
  }
  const format = formatOf(values.format);
  const scope = { tenant: requiredFlag(values.tenant, 'tenant'), namespace: requiredFlag(values.namespace, 'namespace'), agent: requiredFlag(values.agent, 'agent') };
  const file = requiredFlag(values['password-file'], 'password-file');
  const hash = aclPasswordHash(passwordIn(await io.readInput(file), file));
  let line: string;
  try {
    line = format === 'aclfile' ? counterAclFileLine(scope, hash) : counterAclSetUser(scope, hash).join(' ');
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : String(error));
  }
  io.stdout(`${line}\n`);
  return 0;
}

export const REDIS_SUBCOMMANDS: Readonly<Record<string, Subcommand>> = {
  acl: { usage: REDIS_ACL_USAGE, run: aclCommand },
};

export function redisCommand(args: string[], io: CliIo): Promise<number> {
  return runSubcommand('redis', REDIS_USAGE, REDIS_SUBCOMMANDS, args, io);
}
