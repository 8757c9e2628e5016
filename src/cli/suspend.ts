// kubectl portcullis suspend | resume AGENT: sets AgentIdentity.spec.suspended
// (a merge patch under the field manager kubectl-portcullis), says what
// changed, and with --wait waits until the operator reports the revision in
// force that carries it (the AgentIdentity's status: suspended, and its Ready
// condition naming the revision, for the generation the patch made).
import { CustomObjectsApi, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { parseArgs } from 'node:util';
import type { AgentIdentity, Condition } from '../api/index.ts';
import { GROUP, VERSION } from '../api/index.ts';
import { durationFlag } from './flags.ts';
import type { CliIo } from './io.ts';
import { UsageError } from './io.ts';
import type { Connection } from './kube.ts';
import { asksForHelp } from './subcommands.ts';
import { ask, askOptional, ClusterError, connect, CONNECTION_FLAGS, CONNECTION_OPTIONS, withClusterErrors } from './kube.ts';

export const FIELD_MANAGER = 'kubectl-portcullis';
const PLURAL = 'agentidentities';
const DEFAULT_TIMEOUT_MS = 60_000;
const POLL_MS = 250;

function usage(verb: 'suspend' | 'resume'): string {
  const what = verb === 'suspend'
    ? `Suspends an agent: sets spec.suspended of its AgentIdentity to true. Once the
operator has signed it into the tenant's bundle, the agent's sidecars deny
every call it makes (its tokens and delegations with it).`
    : `Resumes a suspended agent: sets spec.suspended of its AgentIdentity to false.
Once the operator has signed it into the tenant's bundle, its calls are decided
by the policies again.`;
  return `Usage: kubectl portcullis ${verb} AGENT [-n NAMESPACE] [--wait [--timeout DURATION]]

${what}
The change is a merge patch under the field manager ${FIELD_MANAGER}.

Flags:
  --wait                   wait until the operator reports the revision in force that carries it
  --timeout DURATION       how long --wait waits (default 60s)
${CONNECTION_FLAGS}
  -h, --help               show this text

Exit status: 0 done (with --wait: in force), 1 no such agent, the cluster
refused, or --wait timed out, 2 the command was called wrong.
`;
}

export const SUSPEND_USAGE = usage('suspend');
export const RESUME_USAGE = usage('resume');

interface AgentObject {
  metadata?: { generation?: number };
  spec?: Partial<AgentIdentity['spec']>;
  status?: { observedGeneration?: number; suspended?: boolean; conditions?: Condition[] };
}

/** The revision in force the operator reports for this generation, or why there is none yet. */
export function revisionInForce(agent: AgentObject, generation: number, suspended: boolean): { revision: string } | { waiting: string } {
  const status = agent.status;
  if ((status?.observedGeneration ?? 0) < generation) return { waiting: `the operator has not seen generation ${String(generation)} yet` };
  if ((status?.suspended ?? false) !== suspended) return { waiting: `its status says suspended: ${String(status?.suspended ?? false)}` };
  const ready = status?.conditions?.find((c) => c.type === 'Ready');
  if (ready === undefined || (ready.observedGeneration ?? 0) < generation) return { waiting: 'no Ready condition for this generation yet' };
  // "in force at bundle revision R" (Ready), or, while the tenant is blocked, "its suspension and revokedBefore are in force at revision R".
  const revision = /in force at (?:bundle )?revision (\d+-[0-9a-f]+)/.exec(ready.message)?.[1];
  if (revision === undefined) return { waiting: `Ready=${ready.status} ${ready.reason}: ${ready.message}` };
  return { revision };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Target {
  name: string;
  namespace: string;
}

async function waitInForce(connection: Connection, custom: CustomObjectsApi, target: Target, generation: number, suspended: boolean, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const agent = (await ask(connection, `read AgentIdentity ${target.namespace}/${target.name}`, () =>
      custom.getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: target.namespace, plural: PLURAL, name: target.name }),
    )) as AgentObject;
    const found = revisionInForce(agent, generation, suspended);
    if ('revision' in found) return found.revision;
    if (Date.now() >= deadline) throw new ClusterError(`timed out after ${String(timeoutMs / 1000)}s waiting for the operator to put ${target.namespace}/${target.name} in force: ${found.waiting}`);
    await sleep(POLL_MS);
  }
}

async function setSuspended(args: string[], io: CliIo, suspended: boolean): Promise<number> {
  if (asksForHelp(args)) {
    io.stdout(suspended ? SUSPEND_USAGE : RESUME_USAGE);
    return 0;
  }
  const { values, positionals } = parseArgs({
    args,
    options: { ...CONNECTION_OPTIONS, wait: { type: 'boolean' }, timeout: { type: 'string' } },
    allowPositionals: true,
  });
  const verb = suspended ? 'suspend' : 'resume';
  const [name] = positionals;
  if (name === undefined || positionals.length > 1) throw new UsageError(`${verb} needs one AGENT (the name of its AgentIdentity)`);
  if (values.timeout !== undefined && values.wait !== true) throw new UsageError('--timeout goes with --wait');
  const timeoutMs = durationFlag(values.timeout, 'timeout', DEFAULT_TIMEOUT_MS);
  return withClusterErrors(io, async () => {
    const connection = connect(values);
    const target = { name, namespace: connection.namespace };
    const custom = connection.kubeConfig.makeApiClient(CustomObjectsApi);
    const ref = { group: GROUP, version: VERSION, namespace: target.namespace, plural: PLURAL, name };
    const before = (await askOptional(connection, `read AgentIdentity ${target.namespace}/${name}`, () => custom.getNamespacedCustomObject(ref))) as AgentObject | undefined;
    if (before === undefined) throw new ClusterError(`no AgentIdentity ${name} in namespace ${target.namespace} (context ${connection.context}); kubectl get agentidentities -n ${target.namespace} lists them`);
    const was = before.spec?.suspended === true;
    const after = (await ask(connection, `patch AgentIdentity ${target.namespace}/${name}`, () =>
      custom.patchNamespacedCustomObject({ ...ref, body: { spec: { suspended } }, fieldManager: FIELD_MANAGER }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch)),
    )) as AgentObject;
    const state = suspended ? 'suspended' : 'resumed';
    const object = `agentidentity.${GROUP}/${name} -n ${target.namespace}`;
    io.stdout(was === suspended ? `${object} already ${suspended ? 'suspended' : 'not suspended'} (unchanged)\n` : `${object} ${state} (spec.suspended: ${String(was)} -> ${String(suspended)})\n`);
    if (values.wait !== true) return 0;
    const revision = await waitInForce(connection, custom, target, after.metadata?.generation ?? 0, suspended, timeoutMs);
    io.stdout(`${object} ${suspended ? 'suspended' : 'not suspended'} in bundle revision ${revision}, in force\n`);
    return 0;
  });
}

export function suspendCommand(args: string[], io: CliIo): Promise<number> {
  return setSuspended(args, io, true);
}

export function resumeCommand(args: string[], io: CliIo): Promise<number> {
  return setSuspended(args, io, false);
}
