// Where the sidecar's API server is and how the sidecar proves who it is:
// from a kubeconfig file, or in a pod from its ServiceAccount. Only what a
// sidecar uses is supported — a bearer token (inline, or a token file read
// afresh for every request, since the kubelet rotates it) or a client
// certificate, and the CA of the server's certificate. A kubeconfig asking
// for anything else (exec plugins, auth providers, basic auth, impersonation,
// a proxy) is refused with an error naming the field, never half-honoured.
import { access, readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { delimiter, dirname, isAbsolute, join } from 'node:path';
import { parseDocument } from 'yaml';

export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

/** What a request needs to reach the API server as the configured identity. */
export interface ApiConnection {
  /** Where it was configured, for error messages: a kubeconfig and context, or in-cluster. */
  readonly origin: string;
  /** The API server's base URL (https://host:port, possibly with a path prefix). */
  readonly server: URL;
  /** PEM: the CAs of the server's certificate (the system's when absent), the client certificate and key. */
  readonly ca?: string;
  readonly cert?: string;
  readonly key?: string;
  readonly insecureSkipTlsVerify: boolean;
  /** The name to check the server's certificate against, when not the server's host. */
  readonly tlsServerName?: string;
  /** The bearer token of the next request; a token file is read at each call. */
  readonly token?: () => Promise<string>;
}

/** A kubeconfig or in-cluster setup that cannot be used; the message names the file and field. */
export class KubeConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KubeConfigError';
  }
}

export interface ConfigFiles {
  readFile(path: string): Promise<string>;
  exists(path: string): Promise<boolean>;
}

/** The files of this machine. */
export const localFiles: ConfigFiles = {
  readFile: (path) => readFile(path, 'utf8'),
  exists: (path) => access(path).then(() => true, () => false),
};

type Env = Readonly<Record<string, string | undefined>>;

/** Fields whose meaning the sidecar does not implement: refused rather than ignored. */
const UNSUPPORTED_USER_FIELDS = ['exec', 'auth-provider', 'username', 'password', 'as', 'as-uid', 'as-groups', 'as-user-extra'];
const UNSUPPORTED_CLUSTER_FIELDS = ['proxy-url'];

type Fields = Readonly<Record<string, unknown>>;

function isFields(value: unknown): value is Fields {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function optionalString(fields: Fields, name: string, where: string): string | undefined {
  const value = fields[name];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') throw new KubeConfigError(`${where}: ${name} is not a string`);
  return value;
}

function optionalBoolean(fields: Fields, name: string, where: string): boolean {
  const value = fields[name];
  if (value === undefined || value === null) return false;
  if (typeof value !== 'boolean') throw new KubeConfigError(`${where}: ${name} is not true or false`);
  return value;
}

function base64Text(value: string, where: string): string {
  const compact = value.replace(/\s+/g, '');
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(compact) || compact.length % 4 !== 0) throw new KubeConfigError(`${where} is not base64`);
  return Buffer.from(compact, 'base64').toString('utf8');
}

interface Named {
  name: string;
  fields: Fields;
}

/** The `clusters`, `users` or `contexts` list of one file: each entry's name and its nested object. */
function namedList(root: Fields, list: string, inner: string, where: string): Named[] {
  const value = root[list];
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) throw new KubeConfigError(`${where}: ${list} is not a list`);
  return value.map((entry: unknown, index) => {
    const at = `${where}: ${list}[${index}]`;
    if (!isFields(entry)) throw new KubeConfigError(`${at} is not a mapping`);
    const name = optionalString(entry, 'name', at);
    if (name === undefined || name === '') throw new KubeConfigError(`${at} has no name`);
    const fields = entry[inner] ?? {};
    if (!isFields(fields)) throw new KubeConfigError(`${at}: ${inner} is not a mapping`);
    return { name, fields };
  });
}

/** One kubeconfig file, parsed; paths inside it are relative to its folder. */
interface ConfigFile {
  path: string;
  currentContext: string | undefined;
  clusters: Named[];
  users: Named[];
  contexts: Named[];
}

export function parseKubeconfig(text: string, path: string): ConfigFile {
  const document = parseDocument(text, { uniqueKeys: true, prettyErrors: false });
  const problem = document.errors[0];
  if (problem !== undefined) throw new KubeConfigError(`kubeconfig ${path} is not valid YAML: ${problem.message}`);
  const root: unknown = document.toJS() ?? {};
  if (!isFields(root)) throw new KubeConfigError(`kubeconfig ${path} is not a mapping`);
  const where = `kubeconfig ${path}`;
  const currentContext = optionalString(root, 'current-context', where);
  return {
    path,
    currentContext: currentContext === '' ? undefined : currentContext,
    clusters: namedList(root, 'clusters', 'cluster', where),
    users: namedList(root, 'users', 'user', where),
    contexts: namedList(root, 'contexts', 'context', where),
  };
}

interface Located {
  named: Named;
  /** The file it came from: relative paths in it are relative to that file's folder. */
  path: string;
}

/** kubectl's merge of the KUBECONFIG files: the first file to define a name, or a current context, wins. */
function merged(files: readonly ConfigFile[]): { currentContext: string | undefined; find: (list: 'clusters' | 'users' | 'contexts', name: string) => Located | undefined } {
  return {
    currentContext: files.find((f) => f.currentContext !== undefined)?.currentContext,
    find: (list, name) => {
      for (const file of files) {
        const named = file[list].find((n) => n.name === name);
        if (named !== undefined) return { named, path: file.path };
      }
      return undefined;
    },
  };
}

function pathIn(file: string, path: string): string {
  return isAbsolute(path) ? path : join(dirname(file), path);
}

/** PEM from the `NAME-data` field (base64) or the file `NAME` names; the data wins, as in kubectl. */
async function pemOf(located: Located, name: string, files: ConfigFiles, where: string): Promise<string | undefined> {
  const data = optionalString(located.named.fields, `${name}-data`, where);
  if (data !== undefined && data !== '') return base64Text(data, `${where}: ${name}-data`);
  const file = optionalString(located.named.fields, name, where);
  if (file === undefined || file === '') return undefined;
  const path = pathIn(located.path, file);
  try {
    return await files.readFile(path);
  } catch (error) {
    throw new KubeConfigError(`${where}: ${name} ${path} cannot be read: ${error instanceof Error ? error.message : String(error)}`);
  }
}

/** Reads a token file for a request: an empty or unreadable one fails that request, naming the file. */
export function tokenFileReader(path: string, files: Pick<ConfigFiles, 'readFile'>): () => Promise<string> {
  return async () => {
    let text: string;
    try {
      text = await files.readFile(path);
    } catch (error) {
      throw new KubeConfigError(`the token file ${path} cannot be read: ${error instanceof Error ? error.message : String(error)}`);
    }
    const token = text.trim();
    if (token === '') throw new KubeConfigError(`the token file ${path} is empty`);
    return token;
  };
}

function serverUrl(value: string | undefined, where: string): URL {
  if (value === undefined || value === '') throw new KubeConfigError(`${where} has no server`);
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new KubeConfigError(`${where}: server ${JSON.stringify(value)} is not a URL`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new KubeConfigError(`${where}: server ${JSON.stringify(value)} is not an https or http URL`);
  return url;
}

function refuseUnsupported(fields: Fields, names: readonly string[], where: string): void {
  const used = names.filter((name) => fields[name] !== undefined && fields[name] !== null);
  if (used.length > 0) throw new KubeConfigError(`${where} uses ${used.join(', ')}, which the sidecar does not support: use a token, a token file or a client certificate`);
}

async function userAuth(user: Located | undefined, files: ConfigFiles): Promise<Pick<ApiConnection, 'cert' | 'key' | 'token'>> {
  if (user === undefined) return {};
  const where = `user ${JSON.stringify(user.named.name)}`;
  const fields = user.named.fields;
  refuseUnsupported(fields, UNSUPPORTED_USER_FIELDS, where);
  const cert = await pemOf(user, 'client-certificate', files, where);
  const key = await pemOf(user, 'client-key', files, where);
  if ((cert === undefined) !== (key === undefined)) throw new KubeConfigError(`${where} has a client certificate without its key, or a key without its certificate`);
  const inline = optionalString(fields, 'token', where);
  const tokenFile = optionalString(fields, 'tokenFile', where);
  // An inline token wins over a token file, as in client-go.
  const token = inline !== undefined && inline !== '' ? (): Promise<string> => Promise.resolve(inline)
    : tokenFile !== undefined && tokenFile !== '' ? tokenFileReader(pathIn(user.path, tokenFile), files) : undefined;
  return { ...(cert === undefined || key === undefined ? {} : { cert, key }), ...(token === undefined ? {} : { token }) };
}

/** The connection of the current context of these kubeconfig files (merged as kubectl merges KUBECONFIG). */
export async function connectionFromKubeconfigs(paths: readonly string[], files: ConfigFiles): Promise<ApiConnection> {
  const parsed: ConfigFile[] = [];
  for (const path of paths) {
    let text: string;
    try {
      text = await files.readFile(path);
    } catch (error) {
      throw new KubeConfigError(`kubeconfig ${path} cannot be read: ${error instanceof Error ? error.message : String(error)}`);
    }
    parsed.push(parseKubeconfig(text, path));
  }
  const origin = `kubeconfig ${paths.join(delimiter)}`;
  const config = merged(parsed);
  if (config.currentContext === undefined) throw new KubeConfigError(`${origin} has no current-context`);
  const context = config.find('contexts', config.currentContext);
  if (context === undefined) throw new KubeConfigError(`${origin}: current-context ${JSON.stringify(config.currentContext)} is not among its contexts`);
  const where = `${origin}: context ${JSON.stringify(config.currentContext)}`;
  const clusterName = optionalString(context.named.fields, 'cluster', where);
  if (clusterName === undefined || clusterName === '') throw new KubeConfigError(`${where} names no cluster`);
  const cluster = config.find('clusters', clusterName);
  if (cluster === undefined) throw new KubeConfigError(`${where}: cluster ${JSON.stringify(clusterName)} is not among its clusters`);
  const userName = optionalString(context.named.fields, 'user', where);
  const user = userName === undefined || userName === '' ? undefined : config.find('users', userName);
  if (userName !== undefined && userName !== '' && user === undefined) throw new KubeConfigError(`${where}: user ${JSON.stringify(userName)} is not among its users`);

  const clusterWhere = `${origin}: cluster ${JSON.stringify(clusterName)}`;
  refuseUnsupported(cluster.named.fields, UNSUPPORTED_CLUSTER_FIELDS, clusterWhere);
  const ca = await pemOf(cluster, 'certificate-authority', files, clusterWhere);
  const tlsServerName = optionalString(cluster.named.fields, 'tls-server-name', clusterWhere);
  return {
    origin: `${origin} (context ${config.currentContext})`,
    server: serverUrl(optionalString(cluster.named.fields, 'server', clusterWhere), clusterWhere),
    ...(ca === undefined ? {} : { ca }),
    insecureSkipTlsVerify: optionalBoolean(cluster.named.fields, 'insecure-skip-tls-verify', clusterWhere),
    ...(tlsServerName === undefined || tlsServerName === '' ? {} : { tlsServerName }),
    ...(await userAuth(user, files)),
  };
}

/** The pod's own ServiceAccount: the API server of KUBERNETES_SERVICE_HOST/PORT, its CA and its rotating token. */
export async function inClusterConnection(env: Env, files: ConfigFiles, dir = SERVICE_ACCOUNT_DIR): Promise<ApiConnection> {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT;
  if (host === undefined || host === '' || port === undefined || port === '') throw new KubeConfigError('in-cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set');
  const caPath = join(dir, 'ca.crt');
  let ca: string;
  try {
    ca = await files.readFile(caPath);
  } catch (error) {
    throw new KubeConfigError(`in-cluster: the CA ${caPath} cannot be read: ${error instanceof Error ? error.message : String(error)}`);
  }
  const bracketed = host.includes(':') ? `[${host}]` : host;
  return {
    origin: 'in-cluster',
    server: serverUrl(`https://${bracketed}:${port}`, 'in-cluster'),
    ca,
    insecureSkipTlsVerify: false,
    token: tokenFileReader(join(dir, 'token'), files),
  };
}

/**
 * The connection the flags and environment ask for, in the order kubectl and
 * client-node look: --kubeconfig; else $KUBECONFIG (a list, merged); else
 * ~/.kube/config when it exists; else the pod's ServiceAccount.
 */
export async function loadApiConnection(kubeconfig: string | undefined, env: Env, files: ConfigFiles, home = homedir()): Promise<ApiConnection> {
  if (kubeconfig !== undefined) return connectionFromKubeconfigs([kubeconfig], files);
  const listed = (env.KUBECONFIG ?? '').split(delimiter).filter((path) => path !== '');
  if (listed.length > 0) {
    // kubectl skips the files of the list that do not exist.
    const present: string[] = [];
    for (const path of listed) if (await files.exists(path)) present.push(path);
    if (present.length === 0) throw new KubeConfigError(`none of the KUBECONFIG files exists: ${listed.join(delimiter)}`);
    return connectionFromKubeconfigs(present, files);
  }
  const own = join(home, '.kube', 'config');
  if (home !== '' && (await files.exists(own))) return connectionFromKubeconfigs([own], files);
  if (await files.exists(join(SERVICE_ACCOUNT_DIR, 'token'))) return inClusterConnection(env, files);
  throw new KubeConfigError('no Kubernetes cluster configured: pass --kubeconfig, set KUBECONFIG, or run in a cluster');
}
