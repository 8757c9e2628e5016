import type { V1Container, V1Pod } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import type { InjectionConfig } from './inject.ts';
import { AUTHZ_CONTAINER, ENVOY_CONTAINER, inject, REDIS_MOUNT, REDIS_VOLUME } from './inject.ts';
import type { PodModifier } from './test-support.ts';
import { agentPod, FINANCE, INJECTION } from './test-support.ts';

const base = INJECTION;
const withRedis: InjectionConfig = { ...base, countersRedisUrl: 'redis://redis.portcullis-system:6379/0' };
const context = FINANCE;
const pod = agentPod;

/** The application mounts the sidecar's Redis password volume (or brings a volume of that name). */
const mountingRedisVolume: PodModifier = (p) => {
  const spec = p.spec;
  if (spec === undefined) return;
  spec.volumes = [{ name: REDIS_VOLUME, secret: { secretName: 'portcullis-redis-other-agent' } }];
  for (const c of spec.containers) c.volumeMounts = [{ name: REDIS_VOLUME, mountPath: '/stolen' }, { name: 'data', mountPath: '/data' }];
  spec.initContainers = [{ name: 'setup', image: 'setup:1', volumeMounts: [{ name: REDIS_VOLUME, mountPath: '/stolen' }] }];
};
const withoutServiceAccount: PodModifier = (p) => {
  if (p.spec !== undefined) delete p.spec.serviceAccountName;
};

const all = (p: V1Pod): V1Container[] => [...(p.spec?.initContainers ?? []), ...(p.spec?.containers ?? [])];
const container = (p: V1Pod, name: string): V1Container | undefined => all(p).find((c) => c.name === name);
const mountsOf = (c: V1Container | undefined): string[] => (c?.volumeMounts ?? []).map((m) => m.name);

describe('injection of counters in Redis', () => {
  it('passes the URL and the password file to the sidecar, and mounts the agent Secret in it alone', () => {
    const injected = inject(pod(), withRedis, context);
    const authz = container(injected, AUTHZ_CONTAINER);
    expect(authz?.args).toEqual(expect.arrayContaining(['--counters=redis', '--redis-url=redis://redis.portcullis-system:6379/0', `--redis-password-file=${REDIS_MOUNT}/password`]));
    expect(authz?.volumeMounts).toContainEqual({ name: REDIS_VOLUME, mountPath: REDIS_MOUNT, readOnly: true });
    expect(injected.spec?.volumes).toContainEqual({ name: REDIS_VOLUME, secret: { secretName: 'portcullis-redis-finance-agent' } });
    for (const c of all(injected).filter((x) => x.name !== AUTHZ_CONTAINER)) expect(mountsOf(c), c.name).not.toContain(REDIS_VOLUME);
    expect(JSON.stringify(injected)).not.toMatch(/password=|PASSWORD/);
  });

  it("names the Secret after the pod's ServiceAccount, the default one when it names none", () => {
    expect(inject(pod(withoutServiceAccount), withRedis, context).spec?.volumes).toContainEqual({ name: REDIS_VOLUME, secret: { secretName: 'portcullis-redis-default' } });
  });

  it.each([
    ['with counters in Redis', withRedis],
    ['with counters in Redis and no native sidecars', { ...withRedis, nativeSidecars: false }],
    ['without them', base],
  ])("takes the sidecar's password volume from application containers that mount it, and replaces a volume of its name (%s)", (_, config) => {
    const injected = inject(pod(mountingRedisVolume), config, context);
    expect(mountsOf(container(injected, 'agent'))).toEqual(['data']);
    expect(mountsOf(container(injected, 'setup'))).toEqual([]);
    const volumes = (injected.spec?.volumes ?? []).filter((v) => v.name === REDIS_VOLUME);
    expect(volumes).toEqual(config.countersRedisUrl === undefined ? [] : [{ name: REDIS_VOLUME, secret: { secretName: 'portcullis-redis-finance-agent' } }]);
  });

  it('adds nothing of Redis when counters stay in memory', () => {
    const injected = inject(pod(), base, context);
    expect(container(injected, AUTHZ_CONTAINER)?.args?.filter((a) => a.includes('redis') || a.includes('counters'))).toEqual([]);
    expect(mountsOf(container(injected, AUTHZ_CONTAINER))).not.toContain(REDIS_VOLUME);
    expect(mountsOf(container(injected, ENVOY_CONTAINER))).toEqual([]);
  });

  it('is idempotent: injecting an injected pod changes nothing', () => {
    const once = inject(pod(mountingRedisVolume), withRedis, context);
    expect(inject(once, withRedis, context)).toEqual(once);
  });
});
