// With harness-shared-b.test.ts: two files see one and the same control plane.

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect, inject, it } from 'vitest';
import { kubectl } from '../harness/control-plane.ts';
import { INSTANCE_MARKER } from '../harness/global-setup.ts';

it('uses the control plane the run started once', async () => {
  const plane = inject('controlPlane');
  const marker = await kubectl(plane, ['get', 'configmap', INSTANCE_MARKER.name, '-n', INSTANCE_MARKER.namespace, '-o', 'jsonpath={.data.instance}']);
  expect(marker.stdout).toBe(plane.instanceId);
  // The run started exactly one etcd and one kube-apiserver.
  const pids = (await readFile(join(plane.runDir, 'pids'), 'utf8')).split('\n').filter(Boolean).map(Number);
  expect(pids.slice(0, 2)).toEqual([plane.pids.etcd, plane.pids.kubeApiserver]);
});
