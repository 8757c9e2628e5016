// A real Kubernetes control plane on loopback, envtest style: etcd and
// kube-apiserver with secure serving, an admin client certificate, service
// account signing keys (so TokenReview and projected tokens work), RBAC and
// admission webhooks. Used by the integration tests and the local demo.
//
// Every process it starts is recorded in RUN_DIR/pids and watched by a reaper
// that kills them when the process that started them is gone, so an
// interrupted or crashed run leaves nothing behind.

import { spawn, execFile } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, writeFile, appendFile, readFile, rm, mkdir } from 'node:fs/promises';
import { createServer } from 'node:net';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { createCertificateAuthority, createServiceAccountSigningKey } from '../../src/webhook/certs.ts';
import type { Pem } from '../../src/webhook/certs.ts';

const execFileAsync = promisify(execFile);
export const REPO_ROOT = resolve(import.meta.dirname, '..', '..');

export interface Tools {
  kubeApiserver: string;
  etcd: string;
  kubectl: string;
  opa: string;
  /** An Envoy ext_authz client from go-control-plane's generated types (hack/tools/extauthz-client). */
  extauthzClient: string;
  /** An Envoy ext_proc client from go-control-plane's generated types (hack/tools/extproc-client). */
  extprocClient: string;
}

const TOOL_ENV = {
  kubeApiserver: 'TEST_ASSET_KUBE_APISERVER',
  etcd: 'TEST_ASSET_ETCD',
  kubectl: 'TEST_ASSET_KUBECTL',
  opa: 'TEST_ASSET_OPA',
  extauthzClient: 'TEST_ASSET_EXTAUTHZ_CLIENT',
  extprocClient: 'TEST_ASSET_EXTPROC_CLIENT',
} as const;

/**
 * The binaries to run: from TEST_ASSET_* / KUBEBUILDER_ASSETS when set, else
 * built (or found in the cache) by hack/build-tools.sh. Throws, naming what is
 * missing, rather than letting a test skip.
 */
export async function findTools(): Promise<Tools> {
  const env: Record<string, string | undefined> = { ...process.env };
  if (Object.values(TOOL_ENV).some((name) => !env[name])) {
    const script = join(REPO_ROOT, 'hack', 'build-tools.sh');
    const { stdout } = await execFileAsync('bash', [script, '--print-env'], { maxBuffer: 1 << 20 }).catch(
      (error: unknown) => {
        throw new Error(`hack/build-tools.sh could not provide the test binaries: ${String(error)}`);
      },
    );
    for (const line of stdout.split('\n')) {
      const [name, ...rest] = line.split('=');
      if (name && rest.length > 0 && !env[name]) env[name] = rest.join('=');
    }
  }
  const pick = (key: keyof typeof TOOL_ENV): string => {
    const path = env[TOOL_ENV[key]];
    if (!path) throw new Error(`${TOOL_ENV[key]} is not set and hack/build-tools.sh did not print it`);
    return path;
  };
  return { kubeApiserver: pick('kubeApiserver'), etcd: pick('etcd'), kubectl: pick('kubectl'), opa: pick('opa'), extauthzClient: pick('extauthzClient'), extprocClient: pick('extprocClient') };
}

export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => {
        if (address && typeof address === 'object') resolvePort(address.port);
        else reject(new Error('no port'));
      });
    });
  });
}

export interface ControlPlaneInfo {
  runDir: string;
  kubeconfig: string;
  server: string;
  caCert: string;
  admin: Pem;
  /** The API server's service-account issuer, as tokens carry it. */
  serviceAccountIssuer: string;
  pids: { etcd: number; kubeApiserver: number; reaper: number };
  tools: Tools;
}

export interface ControlPlane extends ControlPlaneInfo {
  stop(): Promise<void>;
  /** Stops kube-apiserver only (etcd keeps the data) and starts it again on the same port. */
  restartApiserver(): Promise<void>;
}

interface StartOptions {
  /** Where logs, certificates and etcd data go; a new temporary folder when omitted. */
  runDir?: string;
  applyCrds?: boolean;
  log?: (line: string) => void;
  /** Extra etcd flags, e.g. a larger --quota-backend-bytes for benchmarks. */
  etcdArgs?: string[];
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function getStatus(url: string, tls: { ca: string; cert?: string; key?: string }): Promise<number> {
  return new Promise((resolveStatus) => {
    const req = request(url, { ...tls, timeout: 2000 }, (res) => {
      res.resume();
      resolveStatus(res.statusCode ?? 0);
    });
    req.on('error', () => { resolveStatus(0); });
    req.on('timeout', () => { req.destroy(); });
    req.end();
  });
}

async function waitFor(what: string, check: () => Promise<boolean>, child: ChildProcess, logFile: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      const log = await readFile(logFile, 'utf8').catch(() => '');
      throw new Error(`${what} exited (${child.exitCode ?? child.signalCode}) before it was ready; last log lines:\n${log.split('\n').slice(-25).join('\n')}`);
    }
    if (await check()) return;
    await sleep(200);
  }
  const log = await readFile(logFile, 'utf8').catch(() => '');
  throw new Error(`${what} was not ready within ${timeoutMs / 1000} s; last log lines:\n${log.split('\n').slice(-25).join('\n')}`);
}

async function startProcess(binary: string, args: string[], logFile: string, pidFile: string): Promise<ChildProcess> {
  const { openSync } = await import('node:fs');
  const out = openSync(logFile, 'a');
  // detached: its own process group, so stopping it also stops anything it forks.
  const child = spawn(binary, args, { stdio: ['ignore', out, out], detached: true });
  if (child.pid === undefined) throw new Error(`could not start ${binary}`);
  await appendFile(pidFile, `${child.pid}\n`);
  return child;
}

async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  const exited = new Promise<void>((r) => child.once('exit', () => { r(); }));
  const pid = child.pid;
  const signalGroup = (signal: NodeJS.Signals): void => {
    try { process.kill(-pid, signal); } catch { /* already gone */ }
  };
  signalGroup('SIGTERM');
  const killed = await Promise.race([exited.then(() => true), sleep(10_000).then(() => false)]);
  if (!killed) {
    signalGroup('SIGKILL');
    await exited;
  }
}

/** A watcher that kills the recorded process groups once `parentPid` is gone. */
function startReaper(parentPid: number, pidFile: string): ChildProcess {
  const script = `
    while kill -0 ${parentPid} 2>/dev/null; do sleep 0.5; done
    for pid in $(cat '${pidFile}' 2>/dev/null); do kill -TERM -- -"$pid" 2>/dev/null; done
    sleep 3
    for pid in $(cat '${pidFile}' 2>/dev/null); do kill -KILL -- -"$pid" 2>/dev/null; done`;
  const reaper = spawn('bash', ['-c', script], { stdio: 'ignore', detached: true });
  reaper.unref();
  return reaper;
}

export function kubeconfigYaml(server: string, caCert: string, admin: Pem): string {
  const b64 = (s: string): string => Buffer.from(s).toString('base64');
  return stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'portcullis-local', cluster: { server, 'certificate-authority-data': b64(caCert) } }],
    users: [{ name: 'admin', user: { 'client-certificate-data': b64(admin.cert), 'client-key-data': b64(admin.key) } }],
    contexts: [{ name: 'portcullis-local', context: { cluster: 'portcullis-local', user: 'admin' } }],
    'current-context': 'portcullis-local',
  });
}

export async function startControlPlane(options: StartOptions = {}): Promise<ControlPlane> {
  const log = options.log ?? ((): void => undefined);
  const tools = await findTools();
  const runDir = options.runDir ?? (await mkdtemp(join(tmpdir(), 'portcullis-cp-')));
  await mkdir(runDir, { recursive: true });
  const certDir = join(runDir, 'pki');
  await mkdir(certDir, { recursive: true });
  const pidFile = join(runDir, 'pids');
  await writeFile(pidFile, '');
  const reaper = startReaper(process.pid, pidFile);

  const ca = await createCertificateAuthority('portcullis-local-ca');
  const serving = await ca.issue({ commonName: 'kube-apiserver', dnsNames: ['localhost'], ips: ['127.0.0.1'], usage: 'server' });
  const admin = await ca.issue({ commonName: 'portcullis-admin', organizations: ['system:masters'], usage: 'client' });
  const saKey = await createServiceAccountSigningKey();
  const files: Record<string, string> = {
    'ca.crt': ca.cert,
    'apiserver.crt': serving.cert,
    'apiserver.key': serving.key,
    'sa-signer.key': saKey.privateKey,
    'sa-signer.pub': saKey.publicKey,
  };
  for (const [name, content] of Object.entries(files)) await writeFile(join(certDir, name), content, { mode: 0o600 });

  const [etcdClientPort, etcdPeerPort, apiPort] = [await freePort(), await freePort(), await freePort()];
  const etcdUrl = `http://127.0.0.1:${etcdClientPort}`;
  const etcdLog = join(runDir, 'etcd.log');
  log(`starting etcd on ${etcdUrl}`);
  const etcd = await startProcess(tools.etcd, [
    `--data-dir=${join(runDir, 'etcd')}`,
    `--listen-client-urls=${etcdUrl}`,
    `--advertise-client-urls=${etcdUrl}`,
    `--listen-peer-urls=http://127.0.0.1:${etcdPeerPort}`,
    `--initial-advertise-peer-urls=http://127.0.0.1:${etcdPeerPort}`,
    `--initial-cluster=default=http://127.0.0.1:${etcdPeerPort}`,
    '--unsafe-no-fsync=true',
    '--log-level=warn',
    ...(options.etcdArgs ?? []),
  ], etcdLog, pidFile);
  await waitFor('etcd', async () => (await fetch(`${etcdUrl}/health`).then((r) => r.ok).catch(() => false)), etcd, etcdLog, 30_000);

  const server = `https://127.0.0.1:${apiPort}`;
  const apiserverArgs = [
    `--etcd-servers=${etcdUrl}`,
    `--bind-address=127.0.0.1`,
    `--advertise-address=127.0.0.1`,
    `--secure-port=${apiPort}`,
    `--cert-dir=${certDir}`,
    `--tls-cert-file=${join(certDir, 'apiserver.crt')}`,
    `--tls-private-key-file=${join(certDir, 'apiserver.key')}`,
    `--client-ca-file=${join(certDir, 'ca.crt')}`,
    `--service-account-issuer=${server}`,
    `--service-account-key-file=${join(certDir, 'sa-signer.pub')}`,
    `--service-account-signing-key-file=${join(certDir, 'sa-signer.key')}`,
    '--service-cluster-ip-range=10.0.0.0/24',
    '--authorization-mode=RBAC',
    // No controller-manager runs: the ServiceAccount admission plugin would
    // wait for token controllers that never come.
    '--disable-admission-plugins=ServiceAccount',
    '--enable-admission-plugins=MutatingAdmissionWebhook,ValidatingAdmissionWebhook',
    '--allow-privileged=true',
    '--profiling=false',
    '--v=1',
  ];
  const apiserverLog = join(runDir, 'kube-apiserver.log');
  const tls = { ca: ca.cert, cert: admin.cert, key: admin.key };
  const startApiserver = async (): Promise<ChildProcess> => {
    log(`starting kube-apiserver on ${server}`);
    const child = await startProcess(tools.kubeApiserver, apiserverArgs, apiserverLog, pidFile);
    await waitFor('kube-apiserver', async () => (await getStatus(`${server}/readyz`, tls)) === 200, child, apiserverLog, 90_000);
    return child;
  };
  let apiserver = await startApiserver();

  const kubeconfig = join(runDir, 'kubeconfig');
  await writeFile(kubeconfig, kubeconfigYaml(server, ca.cert, admin), { mode: 0o600 });

  const plane: ControlPlane = {
    runDir,
    kubeconfig,
    server,
    caCert: ca.cert,
    admin,
    serviceAccountIssuer: server,
    tools,
    get pids() {
      return { etcd: etcd.pid ?? -1, kubeApiserver: apiserver.pid ?? -1, reaper: reaper.pid ?? -1 };
    },
    async restartApiserver(): Promise<void> {
      await stopProcess(apiserver);
      apiserver = await startApiserver();
    },
    async stop(): Promise<void> {
      await stopProcess(apiserver);
      await stopProcess(etcd);
      try { if (reaper.pid) process.kill(-reaper.pid, 'SIGKILL'); } catch { /* already gone */ }
      if (!options.runDir) await rm(runDir, { recursive: true, force: true });
    },
  };

  if (options.applyCrds !== false) {
    try {
      log('applying crds/');
      await kubectl(plane, ['apply', '--server-side', '-f', join(REPO_ROOT, 'crds')]);
      await kubectl(plane, ['wait', '--for=condition=Established', '--timeout=60s', 'crd', '-l', 'app.kubernetes.io/part-of=portcullis']);
    } catch (error) {
      await plane.stop();
      throw error;
    }
  }
  return plane;
}

export interface ProcessResult {
  stdout: string;
  stderr: string;
  code: number;
}

export type KubectlResult = ProcessResult;

/**
 * Runs a program to its end with `input` on its standard input, and resolves
 * with what it printed and its exit code, whatever the code: the caller says
 * which codes are failures. Rejects only when it cannot be started.
 */
export function runProcess(command: string, args: readonly string[], options: { input?: string; env?: NodeJS.ProcessEnv } = {}): Promise<ProcessResult> {
  return new Promise((resolveRun, reject) => {
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'], ...(options.env === undefined ? {} : { env: options.env }) });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    child.on('error', reject);
    child.on('close', (code) => { resolveRun({ stdout, stderr, code: code ?? -1 }); });
    child.stdin.end(options.input ?? '');
  });
}

/** Runs the real kubectl against the control plane; rejects on a non-zero exit unless `allowFailure`. */
export async function kubectl(
  plane: Pick<ControlPlaneInfo, 'kubeconfig' | 'tools'>,
  args: string[],
  options: { input?: string; allowFailure?: boolean } = {},
): Promise<KubectlResult> {
  const result = await runProcess(plane.tools.kubectl, ['--kubeconfig', plane.kubeconfig, ...args], options.input === undefined ? {} : { input: options.input });
  if (result.code !== 0 && options.allowFailure !== true) throw new Error(`kubectl ${args.join(' ')} failed (${result.code}): ${result.stderr.trim()}`);
  return result;
}

/** Creates the namespace unless it exists: test files share the control plane and run in any order. */
export async function ensureNamespace(plane: Pick<ControlPlaneInfo, 'kubeconfig' | 'tools'>, name: string, labels: Record<string, string> = {}): Promise<void> {
  await kubectl(plane, ['apply', '-f', '-'], { input: JSON.stringify({ apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } }) });
}
