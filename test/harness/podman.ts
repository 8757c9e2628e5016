// The Portcullis image under podman, as the image tests and `npm run bench -- image` run it:
// the image hack/image.sh built, loaded from its OCI archive into the project's container
// storage, containers on the host network with a read-only root filesystem, as a pod runs them.

import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parseAllDocuments } from 'yaml';
import type { TrackedProcess } from './cluster.ts';
import { spawnTracked } from './cluster.ts';
import type { ControlPlaneInfo } from './control-plane.ts';
import { REPO_ROOT } from './control-plane.ts';

const run = promisify(execFile);

/** What hack/image.sh --print-env says about the image and the container storage. */
export interface ImageEnv {
  image: string;
  archive: string;
  containerRoot: string;
  containersConf: string;
  storageConf: string;
}

const IMAGE_ENV = {
  image: 'PORTCULLIS_IMAGE',
  archive: 'PORTCULLIS_IMAGE_ARCHIVE',
  containerRoot: 'PORTCULLIS_CONTAINER_ROOT',
  containersConf: 'CONTAINERS_CONF',
  storageConf: 'CONTAINERS_STORAGE_CONF',
} as const;

/** The image's settings from the environment; throws naming what is missing and how to get it. */
export function imageEnv(env: NodeJS.ProcessEnv = process.env): ImageEnv {
  const missing = Object.values(IMAGE_ENV).filter((name) => (env[name] ?? '') === '');
  if (missing.length > 0) {
    throw new Error(`${missing.join(', ')} not set: build the image and export its settings first, e.g. while IFS= read -r l; do export "$l"; done < <(bash hack/image.sh --print-env)`);
  }
  const read = (key: keyof typeof IMAGE_ENV): string => env[IMAGE_ENV[key]] ?? '';
  return { image: read('image'), archive: read('archive'), containerRoot: read('containerRoot'), containersConf: read('containersConf'), storageConf: read('storageConf') };
}

export class Podman {
  readonly #env: ImageEnv;

  constructor(env: ImageEnv) {
    this.#env = env;
  }

  get image(): string {
    return this.#env.image;
  }

  get archive(): string {
    return this.#env.archive;
  }

  /** The global flags and variables that point podman at the project's settings and storage. */
  get #globalArgs(): string[] {
    return ['--root', `${this.#env.containerRoot}/storage`, '--runroot', `${this.#env.containerRoot}/run`];
  }

  get #processEnv(): NodeJS.ProcessEnv {
    return { ...process.env, CONTAINERS_CONF: this.#env.containersConf, CONTAINERS_STORAGE_CONF: this.#env.storageConf };
  }

  async run(args: string[], timeoutMs = 120_000): Promise<string> {
    try {
      const { stdout } = await run('podman', [...this.#globalArgs, ...args], { env: this.#processEnv, timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 });
      return stdout;
    } catch (error) {
      const detail = error !== null && typeof error === 'object' && 'stderr' in error ? String(error.stderr).trim() : String(error);
      throw new Error(`podman ${args.join(' ')} failed: ${detail}`, { cause: error });
    }
  }

  /**
   * Why no container can run here, or undefined when one can: podman missing, or a container of
   * the image itself failing to start. Anything else that fails is the image's fault and no reason.
   */
  async cannotStart(): Promise<string | undefined> {
    try {
      await run('podman', ['--version']);
    } catch {
      return 'podman is missing or does not run (podman --version failed; hack/image.sh installs it)';
    }
    try {
      await this.run(['run', '--rm', '--network', 'host', '--entrypoint', '/usr/local/bin/node', this.image, '-e', '0'], 60_000);
      return undefined;
    } catch (error) {
      return `podman cannot start a container: ${error instanceof Error ? error.message : String(error)}`;
    }
  }

  /** Loads the OCI archive, so what runs is what was shipped, under its tag. */
  async load(): Promise<void> {
    await stat(this.#env.archive).catch(() => { throw new Error(`no image archive at ${this.#env.archive}: run hack/image.sh`); });
    await this.run(['load', '--quiet', '--input', this.#env.archive], 300_000);
  }

  /**
   * A container of the image in the foreground under the run's reaper, as a restricted pod runs
   * it: host network, read-only root filesystem (podman gives it a fresh /tmp), no capabilities,
   * no privilege escalation, the image's own non-root user. `mounts` are host file → container path, read-only;
   * `memoryLimit` is a Kubernetes quantity in Mi, the container's limit as in its pod.
   */
  async start(plane: Pick<ControlPlaneInfo, 'runDir'>, options: { name: string; args: string[]; mounts?: Record<string, string>; env?: Record<string, string>; memoryLimit?: string }): Promise<Container> {
    const name = `${options.name}-${randomBytes(4).toString('hex')}`;
    const mounts = Object.entries(options.mounts ?? {}).flatMap(([host, inside]) => ['--volume', `${host}:${inside}:ro`]);
    const env = Object.entries(options.env ?? {}).flatMap(([key, value]) => ['--env', `${key}=${value}`]);
    const memory = options.memoryLimit === undefined ? [] : ['--memory', podmanMemory(options.memoryLimit)];
    const process = await spawnTracked(plane, 'podman', [
      ...this.#globalArgs, 'run', '--rm', '--name', name, '--network', 'host', '--read-only',
      '--cap-drop', 'all', '--security-opt', 'no-new-privileges', ...memory, ...mounts, ...env, this.image, ...options.args,
    ], this.#processEnv);
    return new Container(this, name, process);
  }
}

interface DeploymentDoc {
  kind?: string;
  spec?: { template?: { spec?: { containers?: { name: string; env?: { name: string; value?: string }[]; resources?: { limits?: { memory?: string } } }[] } } };
}

/** The operator container's NODE_OPTIONS and memory limit, as config/manager/deployment.yaml sets them. */
export async function operatorPodSettings(): Promise<{ nodeOptions: string; memoryLimit: string }> {
  const text = await readFile(join(REPO_ROOT, 'config', 'manager', 'deployment.yaml'), 'utf8');
  const deployment = parseAllDocuments(text).map((doc) => doc.toJS() as DeploymentDoc).find((doc) => doc.kind === 'Deployment');
  const container = deployment?.spec?.template?.spec?.containers?.find((c) => c.name === 'operator');
  const nodeOptions = container?.env?.find((e) => e.name === 'NODE_OPTIONS')?.value;
  const memoryLimit = container?.resources?.limits?.memory;
  if (nodeOptions === undefined || memoryLimit === undefined) throw new Error('config/manager/deployment.yaml: no NODE_OPTIONS or memory limit on the operator container');
  return { nodeOptions, memoryLimit };
}

/** A Kubernetes memory quantity in Mi (320Mi) as podman's --memory takes it (320m, also MiB). */
function podmanMemory(quantity: string): string {
  return `${mebibytes(quantity)}m`;
}

/** A Kubernetes memory quantity in Mi (320Mi), in MiB. */
export function mebibytes(quantity: string): number {
  const mib = /^(\d+)Mi$/.exec(quantity)?.[1];
  if (mib === undefined) throw new Error(`memory quantity ${quantity}: expected one in Mi`);
  return Number(mib);
}

export class Container {
  readonly #podman: Podman;
  readonly name: string;
  readonly process: TrackedProcess;

  constructor(podman: Podman, name: string, process: TrackedProcess) {
    this.#podman = podman;
    this.name = name;
    this.process = process;
  }

  /** A field of `podman inspect`, by Go template. */
  async inspect(template: string): Promise<string> {
    return (await this.#podman.run(['inspect', '--format', template, this.name])).trim();
  }

  /** The resident set of the container's main process (node), in bytes, read from the host's /proc. */
  async rssBytes(): Promise<number> {
    const pid = await this.inspect('{{.State.Pid}}');
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const kb = /^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1];
    if (kb === undefined) throw new Error(`no VmRSS in /proc/${pid}/status of container ${this.name}`);
    return Number(kb) * 1024;
  }

  /** Stops the container (SIGTERM, then podman's own timeout) and waits for podman run to return. */
  async stop(): Promise<void> {
    await this.#podman.run(['stop', '--ignore', '--time', '10', this.name]).catch(() => undefined);
    await this.process.kill('SIGTERM');
  }
}
