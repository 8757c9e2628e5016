// Vitest global setup of the integration project: one control plane for the
// whole run, shared by every test file through provide/inject.

import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { TestProject } from 'vitest/node';
import { kubectl, startControlPlane } from './control-plane.ts';
import type { ControlPlaneInfo } from './control-plane.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    controlPlane: ControlPlaneInfo & { instanceId: string; controlUrl: string };
  }
}

/** The ConfigMap that stamps this control plane with the instance id of its run. */
export const INSTANCE_MARKER = { namespace: 'default', name: 'portcullis-test-instance' };

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const started = Date.now();
  const plane = await startControlPlane({
    // Lets a test that runs a nested test run find that run's processes.
    ...(process.env.PORTCULLIS_TEST_RUN_DIR ? { runDir: process.env.PORTCULLIS_TEST_RUN_DIR } : {}),
    log: (line) => { console.log(`[control-plane] ${line}`); },
  });
  const instanceId = randomUUID();
  // Test files run in workers that cannot reach the plane object: a loopback
  // endpoint lets them ask for what only this process can do.
  const control = createServer((req, res) => {
    if (req.method === 'POST' && req.url === '/restart-apiserver') {
      plane.restartApiserver().then(
        () => { res.writeHead(200).end(JSON.stringify({ pid: plane.pids.kubeApiserver })); },
        (error: unknown) => { res.writeHead(500).end(String(error)); },
      );
      return;
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => control.listen(0, '127.0.0.1', resolve));
  const controlUrl = `http://127.0.0.1:${String((control.address() as AddressInfo).port)}`;
  await kubectl(plane, ['create', 'configmap', INSTANCE_MARKER.name, '-n', INSTANCE_MARKER.namespace, `--from-literal=instance=${instanceId}`]);
  console.log(`[control-plane] ready at ${plane.server} in ${((Date.now() - started) / 1000).toFixed(1)} s (run dir ${plane.runDir})`);
  project.provide('controlPlane', {
    runDir: plane.runDir,
    kubeconfig: plane.kubeconfig,
    server: plane.server,
    caCert: plane.caCert,
    admin: plane.admin,
    serviceAccountIssuer: plane.serviceAccountIssuer,
    tools: plane.tools,
    pids: plane.pids,
    instanceId,
    controlUrl,
  });
  return async () => {
    control.close();
    await plane.stop();
  };
}
