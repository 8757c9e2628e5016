// npm run bench -- sidecar
//
// The sidecar against OPA's Envoy ext_authz server, same machine, same run,
// same load, one at a time: each server pinned to CPU 1 with taskset, ghz
// (and the control plane, and this process) on CPU 0. Both decide the payments
// policy of DESIGN.md for a proxied request with its params in the JSON body,
// as Envoy sends it with with_request_body: the sidecar from the signed bundle
// the operator compiled, the peer from bench/fixtures/sidecar/payments.rego.
// Before any load, both are asked the same allowed, over-limit and refused
// payments and must answer alike.
//
// Figures: max throughput (rps at saturation, CONCURRENCY calls in flight),
// p50/p99/p99.9 at 1,000 and 3,000 rps, RSS after the load, and the RSS of a
// sidecar holding a 1,000-rule bundle after the same load; for both bundles,
// the heap after a full GC and the RSS of the idle sidecar once its bundle is
// loaded (node runs it with --expose-gc and a SIGUSR2 handler that collects
// and writes process.memoryUsage(); nothing else changes). The sidecar runs
// with the NODE_OPTIONS the webhook injects (src/webhook/inject.ts), and once
// more with V8's default heap, to show what the heap bound costs.
//
// The peer is opa-envoy-plugin, built by hack/build-bench-tools.sh (or the
// binary BENCH_ASSET_OPA_ENVOY names).
// BENCH_SECONDS sets the length of each measured run (default 10).
// BENCH_NODE_OPTIONS replaces the injected NODE_OPTIONS, e.g. to add
// --cpu-prof --cpu-prof-dir=DIR.

import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { openSync, closeSync } from 'node:fs';
import { appendFile, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import type { ToolDeclaration, ToolPolicy } from '../src/api/index.ts';
import { manyRules } from '../src/compiler/test-support.ts';
import { SIDECAR_NODE_OPTIONS as INJECTED_NODE_OPTIONS } from '../src/webhook/inject.ts';
import { eventually, spawnTracked } from '../test/harness/cluster.ts';
import type { ControlPlane } from '../test/harness/control-plane.ts';
import { freePort, kubectl, REPO_ROOT, startControlPlane } from '../test/harness/control-plane.ts';
import type { Figure } from './lib.ts';
import { figure, percentile, report } from './lib.ts';

const run = promisify(execFile);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const CONCURRENCY = 50;
const CONNECTIONS = 2;
const RATES = [1000, 3000];
const RULES = 1000;
const SERVER_CPU = 1;
const CLIENT_CPU = 0;
const SIDECAR_NODE_OPTIONS = process.env.BENCH_NODE_OPTIONS ?? INJECTED_NODE_OPTIONS;
const PROTO_ROOT = join(REPO_ROOT, 'src', 'sidecar', 'proto');
const PROTO = join(PROTO_ROOT, 'envoy', 'service', 'auth', 'v3', 'external_auth.proto');
const REGO = join(REPO_ROOT, 'bench', 'fixtures', 'sidecar', 'payments.rego');
const NS = 'finance';
const AGENT = 'finance-agent';
const RULES_NS = 'bench-rules';

const PAYMENTS_TOOLS = [
  { name: 'stripe-payments', http: { host: 'payments.tools.svc', port: 8080, actions: [{ name: 'create_payment', method: 'POST', path: '/v1/payments' }] } },
];

/** The payments ToolPolicy of DESIGN.md: its stripe-payments rules and tool declaration. */
const PAYMENTS_POLICY = {
  apiVersion: 'portcullis.dev/v1alpha1',
  kind: 'ToolPolicy',
  metadata: { name: 'payments', namespace: NS },
  spec: {
    subjects: { agents: [AGENT], roles: ['payments'] },
    mode: 'enforce',
    tools: PAYMENTS_TOOLS,
    rules: [
      {
        name: 'small-payments', tool: 'stripe-payments', actions: ['create_payment'], decision: 'allow',
        when: [{ param: 'amount', max: 5000 }, { param: 'currency', oneOf: ['USD', 'EUR'] }, { param: 'account', regex: '^[0-9]{10,12}$' }],
      },
      {
        name: 'over-limit', tool: 'stripe-payments', actions: ['create_payment'], decision: 'approval_needed',
        when: [{ param: 'amount', gt: 5000 }], approval: { approvers: ['group:finance-leads'], ttl: '15m' },
      },
      { name: 'no-coerced-payments', tool: 'stripe-payments', decision: 'deny', when: [{ delegatedBy: ['planner-agent'] }] },
    ],
  },
};

const RULES_TOOLS: ToolDeclaration[] = Array.from({ length: 50 }, (_, t) => ({
  name: `tool-${t}`,
  http: { host: `tool-${t}.tools.svc`, port: 8080, actions: [{ name: 'create', method: 'POST', path: '/create' }] },
}));

/** 1,000 rules over 50 tools in ten policies, like the compiler benchmark's tenant (without its time window); the first policy declares the tools. */
function rulesTenant(): unknown[] {
  const resources = manyRules(RULES_NS, RULES, {
    tools: 50,
    actions: ['create'],
    when: (r) => [{ param: 'amount', max: 1000 + r }, { param: 'currency', oneOf: ['USD', 'EUR', `C${r}`] }, { param: 'account', regex: `[0-9]{10,12}|x${r}` }],
  });
  const declaring = resources.find((r): r is ToolPolicy => r.kind === 'ToolPolicy');
  if (declaring === undefined) throw new Error('manyRules made no ToolPolicy');
  declaring.spec.tools = RULES_TOOLS;
  return resources;
}

/** A CheckRequest as Envoy's ext_authz filter sends it with with_request_body, in ghz's JSON form of the proto. */
function checkRequest(host: string, path: string, params: Record<string, unknown>): unknown {
  const body = JSON.stringify(params);
  const length = String(Buffer.byteLength(body));
  return {
    attributes: {
      request: {
        http: {
          id: '4125419183741562870',
          method: 'POST',
          host,
          path,
          scheme: 'http',
          protocol: 'HTTP/1.1',
          size: length,
          headers: {
            ':authority': host, ':method': 'POST', ':path': path, ':scheme': 'http',
            'content-type': 'application/json', 'content-length': length, accept: '*/*',
            'user-agent': 'python-httpx/0.28.1', 'x-forwarded-proto': 'http', 'x-request-id': '0b1c6f52-3a51-4c8e-9b0e-5a3f3d2e7c41',
          },
          body,
        },
      },
    },
  };
}

const payment = (amount: number, currency = 'USD'): Record<string, unknown> => ({ amount, currency, account: '1234567890' });

interface Server {
  name: string;
  pid: number;
  grpc: string;
  /** Heap after a full GC and RSS, in MB (a sidecar only). */
  memory?: () => Promise<Memory>;
  /** The end of its output, to say why it failed. */
  logTail: () => Promise<string>;
  stop: () => Promise<void>;
}

/** Starts `command` on one CPU, its output in RUN_DIR/LOG, its pid where the control plane's reaper finds it. */
async function spawnPinned(plane: ControlPlane, cpu: number, log: string, command: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<Omit<Server, 'name' | 'grpc'>> {
  const out = openSync(join(plane.runDir, log), 'a');
  const child = spawn('taskset', ['-c', String(cpu), command, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', out, out], detached: true });
  closeSync(out);
  const pid = child.pid;
  if (pid === undefined) throw new Error(`could not start ${command}`);
  await appendFile(join(plane.runDir, 'pids'), `${pid}\n`);
  const exited = new Promise<void>((resolve) => child.on('exit', () => { resolve(); }));
  return {
    pid,
    logTail: async () => (await readFile(join(plane.runDir, log), 'utf8')).slice(-4000),
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

async function readyWithin(what: string, url: string, logTail: () => Promise<string>): Promise<void> {
  await eventually(what, async () => ((await fetch(url).catch(() => undefined))?.status === 200 ? true : undefined), 60_000).catch(async (error: unknown) => {
    throw new Error(`${String(error)}\n${await logTail()}`);
  });
}

interface Memory {
  heapMb: number;
  rssMb: number;
}

/** Loaded before the sidecar: on SIGUSR2, a full GC, then process.memoryUsage() to $BENCH_MEMORY_FILE. */
const MEMORY_PROBE = `data:text/javascript,${encodeURIComponent(`import { writeFileSync } from 'node:fs';
process.on('SIGUSR2', async () => {
  for (let i = 0; i < 4; i++) { globalThis.gc(); await new Promise((r) => setTimeout(r, 50)); }
  writeFileSync(process.env.BENCH_MEMORY_FILE, JSON.stringify(process.memoryUsage()));
});`)}`;

async function startSidecar(plane: ControlPlane, options: { namespace: string; agent: string; name: string; nodeOptions: string }): Promise<Server> {
  const [httpPort, grpcPort] = [await freePort(), await freePort()];
  const grpc = `127.0.0.1:${grpcPort}`;
  const memoryFile = join(plane.runDir, `${options.name}.memory.json`);
  const spawned = await spawnPinned(plane, SERVER_CPU, `${options.name}.log`, process.execPath, [
    '--expose-gc', '--import', MEMORY_PROBE,
    join(REPO_ROOT, 'bin', 'portcullis.js'), 'sidecar', '--kubeconfig', plane.kubeconfig, '--agent', options.agent, '--namespace', options.namespace,
    '--tenant', options.namespace, '--http-address', `127.0.0.1:${httpPort}`, '--grpc-address', grpc, '--log-level', 'warn',
  ], { NODE_OPTIONS: options.nodeOptions, BENCH_MEMORY_FILE: memoryFile });
  await readyWithin(`${options.name} to load its bundle`, `http://127.0.0.1:${httpPort}/readyz`, spawned.logTail);
  const memory = async (): Promise<Memory> => {
    await rm(memoryFile, { force: true });
    process.kill(spawned.pid, 'SIGUSR2');
    const usage = await eventually(`${options.name} to write its memory figures`, async () => {
      const text = await readFile(memoryFile, 'utf8').catch(() => '');
      return text === '' ? undefined : (JSON.parse(text) as NodeJS.MemoryUsage);
    }, 10_000, 50);
    return { heapMb: usage.heapUsed / 1048576, rssMb: await rssMb(spawned.pid) };
  };
  return { name: options.name, grpc, memory, ...spawned };
}

/** The idle sidecar's memory, a few seconds after its bundle loaded (startup's garbage collected). */
async function idleMemory(server: Server): Promise<Memory> {
  if (server.memory === undefined) throw new Error(`${server.name} has no memory probe`);
  await new Promise((resolve) => setTimeout(resolve, 3000));
  const memory = await server.memory();
  console.log(`${server.name} idle: heap after GC ${memory.heapMb.toFixed(1)} MB, RSS ${memory.rssMb.toFixed(1)} MB`);
  return memory;
}

async function startPeer(plane: ControlPlane, binary: string): Promise<Server> {
  const [httpPort, grpcPort] = [await freePort(), await freePort()];
  const grpc = `127.0.0.1:${grpcPort}`;
  const config = join(plane.runDir, 'opa-envoy.yaml');
  await writeFile(config, stringify({ plugins: { envoy_ext_authz_grpc: { addr: grpc, path: 'envoy/authz/allow' } } }));
  const spawned = await spawnPinned(plane, SERVER_CPU, 'opa-envoy.log', binary, [
    'run', '--server', '--addr', `127.0.0.1:${httpPort}`, '--skip-version-check', '--log-level', 'error', '--config-file', config, REGO,
  ]);
  await readyWithin('the OPA ext_authz server to start', `http://127.0.0.1:${httpPort}/health?plugins`, spawned.logTail);
  return { name: 'opa', grpc, ...spawned };
}

interface HeaderOption { header: { key: string; value: string } }
interface CheckAnswer { status?: { code?: number }; ok_response?: { headers?: HeaderOption[] }; denied_response?: { status: { code: string }; body?: string } }

/** The answer as the Envoy filter sees it: allow, or the denied status and the decision of the JSON body. */
async function answerOf(plane: ControlPlane, server: Server, params: Record<string, unknown>, host = 'payments.tools.svc:8080', path = '/v1/payments'): Promise<string> {
  const body = JSON.stringify(params);
  const file = join(plane.runDir, `check-${server.name}-${createHash('sha256').update(body).digest('hex').slice(0, 12)}.json`);
  await writeFile(file, JSON.stringify({ method: 'POST', host, path, headers: { 'content-type': 'application/json', 'content-length': String(body.length) }, body }));
  const { stdout } = await run(plane.tools.extauthzClient, ['-addr', server.grpc, '-request', file]).catch(async (error: unknown) => {
    await cpuTicks(server); // throws ServerGone when the server died
    throw error;
  });
  const answer = JSON.parse(stdout) as CheckAnswer;
  if (answer.denied_response === undefined) {
    return `ok ${answer.ok_response?.headers?.find((h) => h.header.key === 'x-portcullis-decision')?.header.value ?? '?'}`;
  }
  const denied = JSON.parse(answer.denied_response.body ?? '{}') as { decision?: string; rule?: string };
  return `${answer.denied_response.status.code} ${denied.decision ?? '?'} ${denied.rule ?? '?'}`;
}

class ServerGone extends Error {
  readonly logTail: string;

  constructor(name: string, logTail: string) {
    super(`${name} is no longer running:\n${logTail}`);
    this.logTail = logTail;
  }
}

/** Per-CPU busy and total ticks (/proc/stat), and a process's ticks (/proc/PID/stat), to tell how loaded the machine was. */
async function cpuTicks(server: Server): Promise<{ cpus: { busy: number; total: number }[]; process: number }> {
  const stat = await readFile('/proc/stat', 'utf8');
  const cpus = stat.split('\n').filter((l) => /^cpu\d+ /.test(l)).map((l) => {
    const ticks = l.split(/\s+/).slice(1).map(Number);
    const total = ticks.slice(0, 8).reduce((a, b) => a + b, 0);
    return { busy: total - (ticks[3] ?? 0) - (ticks[4] ?? 0), total };
  });
  const processStat = await readFile(`/proc/${server.pid}/stat`, 'utf8').catch(async () => {
    throw new ServerGone(server.name, await server.logTail());
  });
  const fields = processStat.split(') ')[1]?.split(' ') ?? [];
  return { cpus, process: Number(fields[11]) + Number(fields[12]) };
}

interface Load {
  rps: number;
  ok: number;
  errors: number;
  /** Latencies of the answered calls, ms, sorted. */
  latencies: number[];
  /** Share of the server's CPU the server used, the share others used, and CPU 0's busy share. */
  serverCpu: number;
  othersOnServerCpu: number;
  clientCpu: number;
}

interface GhzReport { total: number; details?: { latency: number; status: string }[] | null }

/**
 * One ghz run from CPU 0 for `seconds`: `rate` calls per second (0: as fast as answered), at most
 * CONCURRENCY in flight; calls still in flight at the end are cut (counted as errors).
 */
async function load(plane: ControlPlane, server: Server, data: string, rate: number, seconds: number): Promise<Load> {
  const out = join(plane.runDir, 'ghz.json');
  const shape = rate === 0 ? [] : ['--rps', String(rate)];
  const before = await cpuTicks(server);
  const ghzRun = run('taskset', [
    '-c', String(CLIENT_CPU), ghz, '--insecure', '--proto', PROTO, '--import-paths', PROTO_ROOT, '--call', 'envoy.service.auth.v3.Authorization.Check',
    '-D', data, '-c', String(CONCURRENCY), '--connections', String(CONNECTIONS), '-z', `${seconds}s`, ...shape, '-O', 'json', '-o', out, server.grpc,
  ], { maxBuffer: 1 << 20 });
  // A server that died makes ghz fail: say so rather than how ghz failed.
  await ghzRun.catch(async (error: unknown) => {
    await cpuTicks(server);
    throw error;
  });
  const after = await cpuTicks(server);
  const report = JSON.parse(await readFile(out, 'utf8')) as GhzReport;
  const details = report.details ?? [];
  const answered = details.filter((d) => d.status === 'OK');
  const share = (cpu: number, ticks: number): number => ticks / ((after.cpus[cpu]?.total ?? 0) - (before.cpus[cpu]?.total ?? 0));
  const serverTicks = after.process - before.process;
  return {
    rps: answered.length / (report.total / 1e9),
    ok: answered.length,
    errors: details.length - answered.length,
    latencies: answered.map((d) => d.latency / 1e6).sort((a, b) => a - b),
    serverCpu: share(SERVER_CPU, serverTicks),
    othersOnServerCpu: share(SERVER_CPU, (after.cpus[SERVER_CPU]?.busy ?? 0) - (before.cpus[SERVER_CPU]?.busy ?? 0) - serverTicks),
    clientCpu: share(CLIENT_CPU, (after.cpus[CLIENT_CPU]?.busy ?? 0) - (before.cpus[CLIENT_CPU]?.busy ?? 0)),
  };
}

async function rssMb(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? Number.NaN) / 1024;
}

interface ManyRules {
  idle: Memory;
  /** RSS after the load, or the last sampled before the sidecar died. */
  rssMb: number;
  load?: Load;
  /** Why the sidecar stopped during the load (the runtime's fatal error). */
  failure?: string;
}

/** Runs `work` while sampling the server's RSS every 200 ms, so a server that dies under the load still has a figure. */
async function underLoad<T>(server: Server, work: () => Promise<T>): Promise<{ rssMb: number; done?: T; failure?: string }> {
  let lastRss = await rssMb(server.pid);
  const sampler = setInterval(() => {
    rssMb(server.pid).then((mb) => { lastRss = mb; }, () => undefined);
  }, 200);
  try {
    const done = await work();
    return { rssMb: await rssMb(server.pid), done };
  } catch (error) {
    if (!(error instanceof ServerGone)) throw error;
    const fatal = error.logTail.split('\n').find((line) => line.includes('FATAL')) ?? error.logTail.trim().split('\n').at(-1) ?? '';
    console.log(`${server.name} stopped under the load: ${fatal}`);
    return { rssMb: lastRss, failure: fatal };
  } finally {
    clearInterval(sampler);
  }
}

interface Measured {
  max: Load;
  rates: Map<number, Load>;
  /** RSS after the load, or the last sampled before the server died. */
  rssMb: number;
  /** Why the server stopped during the load (the runtime's fatal error); the runs after it are NOT_MEASURED. */
  failure?: string;
}

/** A run that did not happen because the server had died: no figure, and no target met. */
const NOT_MEASURED: Load = { rps: Number.NaN, ok: 0, errors: 0, latencies: [], serverCpu: Number.NaN, othersOnServerCpu: Number.NaN, clientCpu: Number.NaN };

const pct = (x: number): string => `${(100 * x).toFixed(0)} %`;

function describe(name: string, what: string, l: Load): void {
  console.log(
    `${name} ${what}: ${l.rps.toFixed(0)} rps, ${l.ok} answered, ${l.errors} errors, p50 ${percentile(l.latencies, 50).toFixed(3)} ms, ` +
      `p99 ${percentile(l.latencies, 99).toFixed(3)} ms, p99.9 ${percentile(l.latencies, 99.9).toFixed(3)} ms; ` +
      `CPU ${SERVER_CPU}: server ${pct(l.serverCpu)}, others ${pct(l.othersOnServerCpu)}; CPU ${CLIENT_CPU} (ghz and the rest) ${pct(l.clientCpu)}`,
  );
}

/** The same sequence for each server: a warm-up, saturation, then each fixed rate; RSS after. */
async function measure(plane: ControlPlane, server: Server, data: string): Promise<Measured> {
  const measured: Measured = { max: NOT_MEASURED, rates: new Map(RATES.map((rate) => [rate, NOT_MEASURED])), rssMb: Number.NaN };
  const { rssMb: rss, failure } = await underLoad(server, async () => {
    describe(server.name, 'warm-up', await load(plane, server, data, 0, 5));
    measured.max = await load(plane, server, data, 0, SECONDS);
    describe(server.name, `at saturation (${CONCURRENCY} in flight)`, measured.max);
    for (const rate of RATES) {
      const atRate = await load(plane, server, data, rate, SECONDS);
      describe(server.name, `at ${rate} rps`, atRate);
      measured.rates.set(rate, atRate);
    }
  });
  return { ...measured, rssMb: rss, ...(failure === undefined ? {} : { failure }) };
}

async function benchTools(): Promise<{ ghz: string; peer: string }> {
  const { stdout } = await run('bash', [join(REPO_ROOT, 'hack', 'build-bench-tools.sh'), '--print-env'], { maxBuffer: 1 << 20 });
  const env = new Map(stdout.trim().split('\n').map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]));
  const pick = (name: string): string => {
    const path = env.get(name);
    if (path === undefined || path === '') throw new Error(`hack/build-bench-tools.sh did not print ${name}`);
    return path;
  };
  return { ghz: pick('BENCH_ASSET_GHZ'), peer: pick('BENCH_ASSET_OPA_ENVOY') };
}

async function bundleWritten(plane: ControlPlane, namespace: string): Promise<true | undefined> {
  const out = await kubectl(plane, ['get', 'configmap', 'portcullis-bundle', '-n', namespace, '-o', 'name'], { allowFailure: true });
  return out.code === 0 ? true : undefined;
}

/** The operator, as its own process, writes both tenants' bundles and is stopped: nothing but the servers runs during the load. */
async function writeBundles(plane: ControlPlane): Promise<void> {
  await kubectl(plane, ['create', 'namespace', 'portcullis-system']);
  const operator = await spawnTracked(plane, process.execPath, [
    join(REPO_ROOT, 'bin', 'portcullis.js'), 'operator', '--kubeconfig', plane.kubeconfig, '--namespace', 'portcullis-system', '--identity', 'bench',
    '--ops-address', `127.0.0.1:${await freePort()}`, '--token-address', '127.0.0.1:0', '--log-level', 'error',
    '--lease-duration', '3s', '--renew-deadline', '2s', '--retry-period', '500ms',
  ], { TEST_ASSET_OPA: plane.tools.opa });
  try {
    const namespace = (name: string): unknown => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels: { 'portcullis.dev/tenant': name } } });
    const identity = { apiVersion: 'portcullis.dev/v1alpha1', kind: 'AgentIdentity', metadata: { name: AGENT, namespace: NS }, spec: { serviceAccountName: AGENT, owner: { name: 'Dana Ruiz', email: 'dana@example.com' }, roles: ['payments'] } };
    const docs = [namespace(NS), namespace(RULES_NS), identity, PAYMENTS_POLICY, ...rulesTenant()];
    await kubectl(plane, ['apply', '--server-side', '-f', '-'], { input: docs.map((d) => stringify(d)).join('---\n') });
    for (const ns of [NS, RULES_NS]) {
      await eventually(`the bundle of ${ns}`, () => bundleWritten(plane, ns), 120_000, 250).catch((error: unknown) => {
        throw new Error(`${String(error)}\n${operator.output()}`);
      });
    }
  } finally {
    await operator.kill('SIGTERM');
  }
}

/** Keeps the control plane and this process off the servers' CPU. */
async function pinToClientCpu(pids: number[]): Promise<void> {
  for (const pid of pids) await run('taskset', ['-a', '-p', '-c', String(CLIENT_CPU), String(pid)]);
}

const { ghz, peer: peerBinary } = await benchTools();
const peerName = 'opa-envoy-plugin';
const peerVersion = (await run(peerBinary, ['version'])).stdout.split('\n')[0] ?? '';
const loadBefore = (await readFile('/proc/loadavg', 'utf8')).split(' ').slice(0, 3).join(' ');
const plane = await startControlPlane({ log: (l) => { console.log(`[control-plane] ${l}`); } });

/** Starts a server, runs `use` on it, and stops it whatever happens. */
async function withServer<T>(start: () => Promise<Server>, use: (server: Server) => Promise<T>): Promise<T> {
  const server = await start();
  try {
    return await use(server);
  } finally {
    await server.stop();
  }
}

const calls = [payment(4200), payment(50_000), payment(10, 'GBP')];

/** The payments sidecar with `nodeOptions`: its idle memory, its answers to `calls`, then the measured load. */
async function measureSidecar(name: string, nodeOptions: string, data: string): Promise<{ idle: Memory; answers: string[]; measured: Measured }> {
  return withServer(() => startSidecar(plane, { namespace: NS, agent: AGENT, name, nodeOptions }), async (sidecar) => {
    const idle = await idleMemory(sidecar);
    const answers: string[] = [];
    for (const call of calls) answers.push(await answerOf(plane, sidecar, call));
    console.log(`${name} answers: ${answers.join(' | ')}`);
    return { idle, answers, measured: await measure(plane, sidecar, data) };
  });
}

const figures: Figure[] = [];
const notes: string[] = [];
try {
  await writeBundles(plane);
  await pinToClientCpu([plane.pids.etcd, plane.pids.kubeApiserver, process.pid]);
  const data = join(plane.runDir, 'payment.json');
  await writeFile(data, JSON.stringify(checkRequest('payments.tools.svc:8080', '/v1/payments', payment(4200))));

  const injected = await measureSidecar('sidecar', SIDECAR_NODE_OPTIONS, data);
  const unbounded = await measureSidecar('sidecar-default-heap', '', data);
  const theirs = await withServer(() => startPeer(plane, peerBinary), async (opa) => {
    const answers: string[] = [];
    for (const call of calls) answers.push(await answerOf(plane, opa, call));
    console.log(`${peerName} answers: ${answers.join(' | ')}`);
    if (answers.join('|') !== injected.answers.join('|')) throw new Error(`the two servers answer differently: ${injected.answers.join(' | ')} vs ${answers.join(' | ')}`);
    return measure(plane, opa, data);
  });

  // Above the bounds of tool-1's deny rules (301 and 651), within those of its allow rules from rule-701 on.
  const manyCall = { amount: 1690, currency: 'USD', account: '1234567890' };
  const manyData = join(plane.runDir, 'rules-call.json');
  await writeFile(manyData, JSON.stringify(checkRequest('tool-1.tools.svc:8080', '/create', manyCall)));
  const measureMany = (name: string, nodeOptions: string): Promise<ManyRules> =>
    withServer(() => startSidecar(plane, { namespace: RULES_NS, agent: 'bot', name, nodeOptions }), async (sidecar) => {
      const idle = await idleMemory(sidecar);
      const { rssMb: rss, done, failure } = await underLoad(sidecar, async () => {
        const answer = await answerOf(plane, sidecar, manyCall, 'tool-1.tools.svc:8080', '/create');
        if (answer !== 'ok allow') throw new Error(`${name} answers ${answer} to a call rule-701 allows`);
        describe(name, 'warm-up', await load(plane, sidecar, manyData, 0, 5));
        const atRate = await load(plane, sidecar, manyData, 3000, SECONDS);
        describe(name, 'at 3000 rps', atRate);
        return atRate;
      });
      return { idle, rssMb: rss, ...(done === undefined ? {} : { load: done }), ...(failure === undefined ? {} : { failure }) };
    });
  const manyInjected = await measureMany('sidecar-1000-rules', SIDECAR_NODE_OPTIONS);
  const manyUnbounded = await measureMany('sidecar-1000-rules-default-heap', '');

  const ours = injected.measured;
  const versus = (value: number): { name: string; value: number } => ({ name: peerName, value });
  figures.push(figure(`max throughput, ${CONCURRENCY} calls in flight`, ours.max.rps, 'rps', { text: `>= 1.0x ${peerName}`, met: ours.max.rps >= theirs.max.rps }, versus(theirs.max.rps)));
  for (const rate of RATES) {
    const a = ours.rates.get(rate);
    const b = theirs.rates.get(rate);
    if (a === undefined || b === undefined) throw new Error(`no run at ${rate} rps`);
    figures.push(figure(`achieved rate when offered ${rate} rps`, a.rps, 'rps', undefined, versus(b.rps)));
    for (const p of [50, 99, 99.9]) {
      const target = rate === 3000 && p === 99 ? { text: '<= 1 ms', met: percentile(a.latencies, p) <= 1 } : undefined;
      figures.push(figure(`p${p} at ${rate} rps`, percentile(a.latencies, p), 'ms', target, versus(percentile(b.latencies, p))));
    }
  }
  figures.push(figure('sidecar heap after GC, idle (payments bundle)', injected.idle.heapMb, 'MB'));
  figures.push(figure('sidecar RSS, idle (payments bundle)', injected.idle.rssMb, 'MB'));
  figures.push(figure(`sidecar heap after GC, idle (${RULES}-rule bundle)`, manyInjected.idle.heapMb, 'MB'));
  figures.push(figure(`sidecar RSS, idle (${RULES}-rule bundle)`, manyInjected.idle.rssMb, 'MB'));
  figures.push(figure('RSS after the load (payments bundle)', ours.rssMb, 'MB', undefined, versus(theirs.rssMb)));
  const manyMetric = (m: ManyRules): string => (m.failure === undefined ? 'after 3000 rps' : 'last sampled before it stopped (see notes)');
  figures.push(figure(`sidecar RSS with a ${RULES}-rule bundle, ${manyMetric(manyInjected)}`, manyInjected.rssMb, 'MB', { text: '<= 64 MB', met: manyInjected.failure === undefined && manyInjected.rssMb <= 64 }));
  if (manyInjected.load !== undefined) figures.push(figure(`sidecar p99 at 3000 rps with a ${RULES}-rule bundle`, percentile(manyInjected.load.latencies, 99), 'ms'));
  const free = unbounded.measured;
  const free3000 = free.rates.get(3000);
  figures.push(figure('V8 default heap: max throughput', free.max.rps, 'rps', undefined, versus(theirs.max.rps)));
  if (free3000 !== undefined) figures.push(figure('V8 default heap: p99 at 3000 rps', percentile(free3000.latencies, 99), 'ms', undefined, versus(percentile(theirs.rates.get(3000)?.latencies ?? [], 99))));
  figures.push(figure('V8 default heap: RSS after the load', free.rssMb, 'MB', undefined, versus(theirs.rssMb)));
  figures.push(figure(`V8 default heap: sidecar RSS with a ${RULES}-rule bundle, ${manyMetric(manyUnbounded)}`, manyUnbounded.rssMb, 'MB'));
  if (manyUnbounded.load !== undefined) figures.push(figure(`V8 default heap: sidecar p99 at 3000 rps with a ${RULES}-rule bundle`, percentile(manyUnbounded.load.latencies, 99), 'ms'));

  const cpu = (l: Load | undefined): string => (l === undefined ? '' : `server ${pct(l.serverCpu)} of CPU ${SERVER_CPU}, others ${pct(l.othersOnServerCpu)}, CPU ${CLIENT_CPU} ${pct(l.clientCpu)}`);
  const errors = (m: Measured): number => m.max.errors + [...m.rates.values()].reduce((n, l) => n + l.errors, 0);
  notes.push(
    `Peer: ${peerName} (${peerVersion}), the newest version the Go module proxy serves here.`,
    `Each server alone on CPU ${SERVER_CPU} (taskset: Go runs with GOMAXPROCS=1, Node on one core); ghz on CPU ${CLIENT_CPU}, ${CONCURRENCY} calls in flight over ${CONNECTIONS} connections; each run ${SECONDS} s after a 5 s warm-up at saturation; the control plane and this process pinned to CPU ${CLIENT_CPU}. ghz keeps at most ${CONCURRENCY} calls in flight, so a server that falls behind an offered rate answers fewer calls (the achieved rate) rather than queueing more.`,
    'Request: Check with attributes.request.http (POST payments.tools.svc:8080/v1/payments, 10 headers, JSON body {amount 4200, USD, account}) as Envoy sends it with with_request_body; the proto subset in src/sidecar/proto for both. Both answer it allow with the same headers; an over-limit (409 approval_needed) and a GBP payment (403 default deny) were checked to get the same answers from both before the load.',
    `Sidecar: NODE_OPTIONS ${SIDECAR_NODE_OPTIONS === '' ? '(none)' : SIDECAR_NODE_OPTIONS} as the webhook injects it (the targets are judged on it); the "V8 default heap" rows are the same sidecar with no heap bound. Bundles compiled and signed by the operator; --log-level warn. Peer policy: bench/fixtures/sidecar/payments.rego (input.parsed_body) with the same allow / approval_needed / deny rules and answers; it keeps the last of a repeated JSON key where the sidecar denies, gives reasons for the deciding rule only, and the delegation chain is empty for both (no verified agent token).`,
    `Load on the machine (2 cores shared with other work): load average ${loadBefore} before the run. At saturation: sidecar ${cpu(ours.max)}; default heap ${cpu(free.max)}; peer ${cpu(theirs.max)}. At 3000 rps: sidecar ${cpu(ours.rates.get(3000))}; peer ${cpu(theirs.rates.get(3000))}.`,
    `Calls not answered OK (cut at the end of a timed run): sidecar ${errors(ours)}, default heap ${errors(free)}, peer ${errors(theirs)}.`,
  );
  const failures = [['The payments sidecar as injected', injected.measured], ['The payments sidecar with the default heap', unbounded.measured], [`The ${RULES}-rule sidecar as injected`, manyInjected], [`The ${RULES}-rule sidecar with the default heap`, manyUnbounded]] as const;
  for (const [name, m] of failures) {
    if (m.failure !== undefined) notes.push(`${name} stopped under the load (runs after it not measured, its RSS the last sampled): ${m.failure}`);
  }
} finally {
  await plane.stop();
}
await report('sidecar', figures, notes);
