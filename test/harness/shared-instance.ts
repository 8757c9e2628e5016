// What both harness-shared-*.test.ts files check: the control plane they see
// is the one the run started, once.

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect, inject } from 'vitest';
import { kubectl } from './control-plane.ts';
import { INSTANCE_MARKER } from './global-setup.ts';

export async function expectTheRunsOnlyControlPlane(): Promise<void> {
  const plane = inject('controlPlane');
  const marker = await kubectl(plane, ['get', 'configmap', INSTANCE_MARKER.name, '-n', INSTANCE_MARKER.namespace, '-o', 'jsonpath={.data.instance}']);
  expect(marker.stdout).toBe(plane.instanceId);
  // The run started exactly one etcd and one kube-apiserver.
  const pids = (await readFile(join(plane.runDir, 'pids'), 'utf8')).split('\n').filter(Boolean).map(Number);
  expect(pids.slice(0, 2)).toEqual([plane.pids.etcd, plane.pids.kubeApiserver]);
}
