// kubectl portcullis why: one call decided by the bundle a namespace enforces
// right now. The bundle, the trust and the tenant's minimum revision are read
// from the cluster and judged exactly as the sidecar judges them
// (judgeBundle); the call is then read and decided as portcullis eval does.
import { CoreV1Api } from '@kubernetes/client-node';
import type { V1ConfigMap } from '@kubernetes/client-node';
import { parseArgs } from 'node:util';
import type { BundleKey } from '../bundle/index.ts';
import { parseRevision } from '../bundle/index.ts';
import { MINIMUM_REVISION_KEY, minimumRevisionConfigMap } from '../bundle/revision.ts';
import { tenantOfNamespace } from '../operator/plan.ts';
import { BUNDLE_CONFIGMAP, judgeBundle, parseTrust, TRUST_CONFIGMAP, TrustInvalidError } from '../sidecar/bundle-verdict.ts';
import { printDecision, readCall } from './eval.ts';
import type { CliIo } from './io.ts';
import { UsageError } from './io.ts';
import type { Connection } from './kube.ts';
import { askOptional, ClusterError, connect, CONNECTION_FLAGS, CONNECTION_OPTIONS, DEFAULT_OPERATOR_NAMESPACE, withClusterErrors } from './kube.ts';
import { namespaceOf } from './tenants.ts';

export const WHY_USAGE = `Usage: kubectl portcullis why --input FILE|- [-n NAMESPACE] [--exit-code]

Decides one call against the bundle the namespace enforces right now: the
ConfigMap ${BUNDLE_CONFIGMAP} is read from the cluster and verified exactly as the
namespace's sidecars verify it (the keys of ${TRUST_CONFIGMAP} in the operator's
namespace, the tenant, every file, the tenant's minimum revision), then the
call is decided as portcullis eval decides it. A bundle that does not verify
is refused, never used. The call is the JSON body of POST /v1/authorize (see
README), taken as written; without a namespace it is the namespace's.

Flags:
  -i, --input FILE|-       the call, as JSON; - reads standard input
  --operator-namespace NS  where the operator keeps ${TRUST_CONFIGMAP} (default ${DEFAULT_OPERATOR_NAMESPACE})
  --tenant TENANT          the tenant the bundle must be signed for (default: the namespace's
                           portcullis.dev/tenant label, else its name, as the injected sidecar has it)
  --exit-code              exit 0 only when the decision is allow, 3 for any other
${CONNECTION_FLAGS}
  -h, --help               show this text

The namespace is -n, else the call's "namespace", else the context's; -n and a
different "namespace" in the call are refused.

Exit status:
  0  the answer is printed (with --exit-code: and the decision is allow)
  1  no decision: no bundle, no trust, the bundle is refused, or the cluster
     cannot be asked
  2  the command was called wrong
  3  with --exit-code: the decision is not allow (the answer is printed all the same)
`;

/** The namespace whose bundle decides the call, and the call with that namespace in it. */
export function placeCall(input: unknown, connection: Pick<Connection, 'namespace' | 'namespaceGiven'>): { namespace: string; call: unknown } {
  const named = namespaceOf(input);
  if (named !== '' && connection.namespaceGiven && named !== connection.namespace) {
    throw new UsageError(`the call names namespace ${named} and -n names ${connection.namespace}: give one, or the same`);
  }
  const namespace = named !== '' ? named : connection.namespace;
  // The sidecar asserts its own namespace; a call without one is this namespace's call.
  const call = named === '' && input !== null && typeof input === 'object' && !Array.isArray(input) ? { ...input, namespace } : input;
  return { namespace, call };
}

async function tenantOf(core: CoreV1Api, connection: Connection, namespace: string, given: string | undefined): Promise<string> {
  if (given !== undefined) return given;
  const ns = await askOptional(connection, `read namespace ${namespace} for its tenant (or pass --tenant)`, () => core.readNamespace({ name: namespace }));
  if (ns === undefined) throw new ClusterError(`no namespace ${namespace} (context ${connection.context})`);
  return tenantOfNamespace({ name: namespace, labels: ns.metadata?.labels ?? {} });
}

/** The tenant's minimum revision, when the operator keeps a valid one. */
function minimumOf(configMap: V1ConfigMap | undefined, where: string, io: CliIo): string | undefined {
  const text = configMap?.data?.[MINIMUM_REVISION_KEY];
  if (configMap === undefined) return undefined;
  try {
    if (text === undefined) throw new Error(`no ${MINIMUM_REVISION_KEY}`);
    parseRevision(text);
    return text;
  } catch (error) {
    // As in the sidecar: an invalid one is reported and counts as none.
    io.stderr(`portcullis: warning: ${where} holds no valid revision (${error instanceof Error ? error.message : String(error)}); no minimum revision applies\n`);
    return undefined;
  }
}

interface WhyFlags {
  input: string;
  operatorNamespace: string;
  tenant: string | undefined;
  exitCode: boolean;
}

async function decide(connection: Connection, flags: WhyFlags, io: CliIo): Promise<number> {
  const { namespace, call } = placeCall(await readCall(flags.input, io), connection);
  const core = connection.kubeConfig.makeApiClient(CoreV1Api);
  const tenant = await tenantOf(core, connection, namespace, flags.tenant);
  const bundleWhere = `${namespace}/${BUNDLE_CONFIGMAP}`;
  const trustWhere = `${flags.operatorNamespace}/${TRUST_CONFIGMAP}`;
  const bundle = await askOptional(connection, `read ConfigMap ${bundleWhere}`, () => core.readNamespacedConfigMap({ name: BUNDLE_CONFIGMAP, namespace }));
  if (bundle === undefined) throw new ClusterError(`no bundle: namespace ${namespace} holds no ConfigMap ${BUNDLE_CONFIGMAP} (is the operator running, and does the namespace take its tenant's bundle? see kubectl portcullis status)`);
  const trust = await askOptional(connection, `read ConfigMap ${trustWhere}`, () => core.readNamespacedConfigMap({ name: TRUST_CONFIGMAP, namespace: flags.operatorNamespace }));
  if (trust === undefined) throw new ClusterError(`no trust: no ConfigMap ${trustWhere}, so no bundle can be verified (is the operator in namespace ${flags.operatorNamespace}? see --operator-namespace)`);
  const minimumWhere = `${flags.operatorNamespace}/${minimumRevisionConfigMap(tenant)}`;
  const minimumMap = await askOptional(connection, `read ConfigMap ${minimumWhere}`, () => core.readNamespacedConfigMap({ name: minimumRevisionConfigMap(tenant), namespace: flags.operatorNamespace }));
  let publicKeys: Map<string, BundleKey>;
  try {
    publicKeys = await parseTrust(trust.data, trustWhere);
  } catch (error) {
    if (!(error instanceof TrustInvalidError)) throw error;
    io.stderr(`portcullis: trust refused (${error.code}): ${error.message}\n`);
    return 1;
  }
  const minimum = minimumOf(minimumMap, minimumWhere, io);
  const verdict = await judgeBundle({ data: bundle.data ?? {}, binaryData: bundle.binaryData ?? {} }, { tenant, publicKeys, ...(minimum === undefined ? {} : { minimum }) });
  if (verdict.kind === 'reject') {
    io.stderr(`portcullis: bundle refused (${verdict.code}): ${verdict.message} [${bundleWhere}, tenant ${tenant}]\n`);
    return 1;
  }
  // Judged with no revision loaded before it, a bundle that verifies is always loaded.
  if (verdict.kind !== 'load') throw new Error(`a first bundle was judged ${verdict.kind}`);
  io.stderr(`portcullis: ${bundleWhere}: tenant ${tenant}, revision ${verdict.policy.revision}, verified with ${trustWhere}\n`);
  return printDecision(verdict.policy, call, io, flags.exitCode);
}

export async function whyCommand(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: {
      ...CONNECTION_OPTIONS,
      input: { type: 'string', short: 'i' },
      'operator-namespace': { type: 'string' },
      tenant: { type: 'string' },
      'exit-code': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    allowPositionals: true,
  });
  if (values.help === true) {
    io.stdout(WHY_USAGE);
    return 0;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${positionals[0] ?? ''}`);
  if (values.input === undefined) throw new UsageError('why needs the call: --input FILE, or --input - for standard input');
  const flags: WhyFlags = {
    input: values.input,
    operatorNamespace: values['operator-namespace'] ?? DEFAULT_OPERATOR_NAMESPACE,
    tenant: values.tenant,
    exitCode: values['exit-code'] === true,
  };
  return withClusterErrors(io, () => decide(connect(values), flags, io));
}
