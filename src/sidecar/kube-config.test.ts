import { stringify } from 'yaml';
import { describe, expect, it } from 'vitest';
import type { ConfigFiles } from './kube-config.ts';
import { connectionFromKubeconfigs, inClusterConnection, KubeConfigError, loadApiConnection, SERVICE_ACCOUNT_DIR } from './kube-config.ts';

const CA = '-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n';
const CERT = '-----BEGIN CERTIFICATE-----\nCLIENT\n-----END CERTIFICATE-----\n';
const KEY = '-----BEGIN PRIVATE KEY-----\nKEY\n-----END PRIVATE KEY-----\n';
const b64 = (text: string): string => Buffer.from(text).toString('base64');

/** Files in memory: what a test wrote, and nothing else. */
function filesOf(entries: Record<string, string>): ConfigFiles & { files: Map<string, string> } {
  const files = new Map(Object.entries(entries));
  return {
    files,
    readFile: (path) => {
      const text = files.get(path);
      return text === undefined ? Promise.reject(new Error(`ENOENT: no such file, open '${path}'`)) : Promise.resolve(text);
    },
    exists: (path) => Promise.resolve(files.has(path)),
  };
}

interface Kubeconfig {
  cluster?: Record<string, unknown>;
  user?: Record<string, unknown>;
  context?: Record<string, unknown>;
  currentContext?: string;
}

function kubeconfig({ cluster = {}, user = {}, context = {}, currentContext = 'agent' }: Kubeconfig = {}): string {
  return stringify({
    apiVersion: 'v1',
    kind: 'Config',
    'current-context': currentContext,
    clusters: [{ name: 'local', cluster: { server: 'https://127.0.0.1:6443', 'certificate-authority-data': b64(CA), ...cluster } }],
    users: [{ name: 'agent', user: { token: 'sa-token', ...user } }],
    contexts: [{ name: 'agent', context: { cluster: 'local', user: 'agent', ...context } }],
  });
}

async function load(text: string, extra: Record<string, string> = {}): Promise<Awaited<ReturnType<typeof connectionFromKubeconfigs>>> {
  return connectionFromKubeconfigs(['/home/dev/.kube/agent.yaml'], filesOf({ '/home/dev/.kube/agent.yaml': text, ...extra }));
}

async function refusal(text: string, extra: Record<string, string> = {}): Promise<string> {
  const error: unknown = await load(text, extra).then(() => undefined, (e: unknown) => e);
  expect(error).toBeInstanceOf(KubeConfigError);
  return (error as Error).message;
}

describe('kubeconfig files', () => {
  it('reads a bearer token and the CA data of the current context, as the tests and agents write them', async () => {
    const connection = await load(kubeconfig());
    expect(connection.server.href).toBe('https://127.0.0.1:6443/');
    expect(connection.ca).toBe(CA);
    expect(await connection.token?.()).toBe('sa-token');
    expect(connection).toMatchObject({ insecureSkipTlsVerify: false, origin: 'kubeconfig /home/dev/.kube/agent.yaml (context agent)' });
    expect(connection.cert).toBeUndefined();
  });

  it("reads an admin's client certificate and key data", async () => {
    const connection = await load(kubeconfig({ user: { token: undefined, 'client-certificate-data': b64(CERT), 'client-key-data': b64(KEY) } }));
    expect({ cert: connection.cert, key: connection.key, token: connection.token }).toEqual({ cert: CERT, key: KEY, token: undefined });
  });

  it('reads files named relative to the kubeconfig, and re-reads a token file at every request', async () => {
    const files = filesOf({
      '/home/dev/.kube/agent.yaml': kubeconfig({
        cluster: { 'certificate-authority-data': undefined, 'certificate-authority': 'pki/ca.crt', 'tls-server-name': 'kubernetes.default' },
        user: { token: undefined, tokenFile: 'token', 'client-certificate': '/etc/pki/client.crt', 'client-key': 'pki/client.key' },
      }),
      '/home/dev/.kube/pki/ca.crt': CA,
      '/etc/pki/client.crt': CERT,
      '/home/dev/.kube/pki/client.key': KEY,
      '/home/dev/.kube/token': 'first\n',
    });
    const connection = await connectionFromKubeconfigs(['/home/dev/.kube/agent.yaml'], files);
    expect({ ca: connection.ca, cert: connection.cert, key: connection.key, tlsServerName: connection.tlsServerName }).toEqual({ ca: CA, cert: CERT, key: KEY, tlsServerName: 'kubernetes.default' });
    expect(await connection.token?.()).toBe('first');
    files.files.set('/home/dev/.kube/token', 'rotated');
    expect(await connection.token?.()).toBe('rotated');
    files.files.set('/home/dev/.kube/token', '  \n');
    await expect(connection.token?.()).rejects.toThrow('the token file /home/dev/.kube/token is empty');
  });

  it('prefers an inline token to a token file, as client-go does', async () => {
    const connection = await load(kubeconfig({ user: { token: 'inline', tokenFile: '/nowhere' } }));
    expect(await connection.token?.()).toBe('inline');
  });

  it('reads insecure-skip-tls-verify, and connects with no credentials when the context names no user', async () => {
    const connection = await load(kubeconfig({ cluster: { 'insecure-skip-tls-verify': true, 'certificate-authority-data': undefined }, context: { user: undefined } }));
    expect({ insecure: connection.insecureSkipTlsVerify, ca: connection.ca, token: connection.token }).toEqual({ insecure: true, ca: undefined, token: undefined });
  });

  it.each([
    ['an exec plugin', { user: { exec: { command: 'aws' } } }, 'user "agent" uses exec, which the sidecar does not support'],
    ['an auth provider', { user: { 'auth-provider': { name: 'oidc' } } }, 'uses auth-provider'],
    ['basic auth', { user: { username: 'u', password: 'p' } }, 'uses username, password'],
    ['impersonation', { user: { as: 'admin' } }, 'uses as,'],
    ['a proxy', { cluster: { 'proxy-url': 'http://proxy:3128' } }, 'cluster "local" uses proxy-url'],
    ['a certificate without its key', { user: { 'client-certificate-data': b64(CERT) } }, 'a client certificate without its key'],
    ['CA data that is not base64', { cluster: { 'certificate-authority-data': 'not base64!' } }, 'certificate-authority-data is not base64'],
    ['a server that is not a URL', { cluster: { server: 'https://api server' } }, 'server "https://api server" is not a URL'],
    ['a server of another scheme', { cluster: { server: 'ftp://127.0.0.1' } }, 'is not an https or http URL'],
    ['no server', { cluster: { server: undefined } }, 'cluster "local" has no server'],
    ['a current context it does not have', { currentContext: 'prod' }, 'current-context "prod" is not among its contexts'],
    ['a context naming a missing cluster', { context: { cluster: 'prod' } }, 'cluster "prod" is not among its clusters'],
    ['a context naming a missing user', { context: { user: 'root' } }, 'user "root" is not among its users'],
    ['a token that is not a string', { user: { token: 42 } }, 'user "agent": token is not a string'],
    ['insecure-skip-tls-verify that is not a boolean', { cluster: { 'insecure-skip-tls-verify': 'yes' } }, 'insecure-skip-tls-verify is not true or false'],
  ] as const)('refuses %s, naming it', async (_what, change, message) => {
    expect(await refusal(kubeconfig(change as Kubeconfig))).toContain(message);
  });

  it('refuses what is not a kubeconfig, naming the file', async () => {
    expect(await refusal('clusters: [a\n')).toMatch(/^kubeconfig \/home\/dev\/.kube\/agent.yaml is not valid YAML/);
    expect(await refusal('a: 1\na: 2\n')).toContain('is not valid YAML');
    expect(await refusal('- a\n')).toBe('kubeconfig /home/dev/.kube/agent.yaml is not a mapping');
    expect(await refusal('clusters: {}\n')).toBe('kubeconfig /home/dev/.kube/agent.yaml: clusters is not a list');
    expect(await refusal('clusters: [{cluster: {}}]\n')).toBe('kubeconfig /home/dev/.kube/agent.yaml: clusters[0] has no name');
    expect(await refusal('kind: Config\n')).toBe('kubeconfig /home/dev/.kube/agent.yaml has no current-context');
    expect(await refusal(kubeconfig({ cluster: { 'certificate-authority-data': undefined, 'certificate-authority': 'missing.crt' } }))).toContain('certificate-authority /home/dev/.kube/missing.crt cannot be read');
  });
});

describe('where the connection comes from', () => {
  const env = { KUBERNETES_SERVICE_HOST: '10.0.0.1', KUBERNETES_SERVICE_PORT: '443' };

  it('takes --kubeconfig first', async () => {
    const files = filesOf({ '/flag.yaml': kubeconfig({ user: { token: 'from-flag' } }), '/env.yaml': kubeconfig({ user: { token: 'from-env' } }) });
    const connection = await loadApiConnection('/flag.yaml', { KUBECONFIG: '/env.yaml' }, files, '/home/dev');
    expect(await connection.token?.()).toBe('from-flag');
  });

  it('merges the KUBECONFIG list as kubectl does: missing files skipped, the first definition of a name wins', async () => {
    const second = stringify({
      'current-context': 'other',
      clusters: [{ name: 'local', cluster: { server: 'https://ignored:6443' } }, { name: 'remote', cluster: { server: 'https://remote:6443' } }],
      users: [{ name: 'remote-user', user: { token: 'remote-token' } }],
      contexts: [{ name: 'remote', context: { cluster: 'remote', user: 'remote-user' } }],
    });
    const files = filesOf({ '/a.yaml': kubeconfig({ currentContext: 'remote' }), '/b.yaml': second });
    const connection = await loadApiConnection(undefined, { KUBECONFIG: '/missing.yaml:/a.yaml:/b.yaml' }, files, '/home/dev');
    expect(connection.server.host).toBe('remote:6443');
    expect(await connection.token?.()).toBe('remote-token');
    await expect(loadApiConnection(undefined, { KUBECONFIG: '/missing.yaml' }, files, '/home/dev')).rejects.toThrow('none of the KUBECONFIG files exists: /missing.yaml');
  });

  it('falls back to ~/.kube/config, then to the ServiceAccount of the pod', async () => {
    const home = filesOf({ '/home/dev/.kube/config': kubeconfig({ user: { token: 'home' } }) });
    expect(await (await loadApiConnection(undefined, {}, home, '/home/dev')).token?.()).toBe('home');
    const pod = filesOf({ [`${SERVICE_ACCOUNT_DIR}/token`]: 'pod-token', [`${SERVICE_ACCOUNT_DIR}/ca.crt`]: CA });
    const connection = await loadApiConnection(undefined, env, pod, '/home/dev');
    expect({ origin: connection.origin, server: connection.server.href, ca: connection.ca }).toEqual({ origin: 'in-cluster', server: 'https://10.0.0.1/', ca: CA });
    await expect(loadApiConnection(undefined, env, filesOf({}), '/home/dev')).rejects.toThrow('no Kubernetes cluster configured: pass --kubeconfig, set KUBECONFIG, or run in a cluster');
  });

  it('in a pod, re-reads the rotated ServiceAccount token and brackets an IPv6 service address', async () => {
    const pod = filesOf({ '/sa/token': 'first', '/sa/ca.crt': CA });
    const connection = await inClusterConnection({ KUBERNETES_SERVICE_HOST: 'fd00::1', KUBERNETES_SERVICE_PORT: '6443' }, pod, '/sa');
    expect(connection.server.host).toBe('[fd00::1]:6443');
    expect(await connection.token?.()).toBe('first');
    pod.files.set('/sa/token', 'second\n');
    expect(await connection.token?.()).toBe('second');
    pod.files.delete('/sa/token');
    await expect(connection.token?.()).rejects.toThrow('the token file /sa/token cannot be read');
  });

  it('in a pod, refuses a missing service address or CA', async () => {
    const pod = filesOf({ '/sa/token': 't' });
    await expect(inClusterConnection({}, pod, '/sa')).rejects.toThrow('in-cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set');
    await expect(inClusterConnection(env, pod, '/sa')).rejects.toThrow('in-cluster: the CA /sa/ca.crt cannot be read');
  });
});
