// Envoy's ext_authz v3 gRPC service (envoy.service.auth.v3.Authorization/Check)
// over @grpc/grpc-js, from the proto subset in ./proto. A thin adapter: the
// CheckRequest becomes a proxied request, decideProxied (envoy-check.ts)
// decides it, and the answer becomes a CheckResponse.
import type { sendUnaryData, ServerUnaryCall, UntypedServiceImplementation } from '@grpc/grpc-js';
import { Server, ServerCredentials, status } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { CheckRequest, CheckResponse, ProxyOptions } from './envoy-check.ts';
import { checkResponseOf, decideProxied, proxiedRequestOfCheck } from './envoy-check.ts';
import { envoyService } from './envoy-protos.ts';

export interface GrpcServerOptions extends ProxyOptions {
  log: Logger;
}

/** Decides one CheckRequest; every failure to read or verify it is a deny, never a gRPC error Envoy might be told to ignore. */
export async function decideCheck(request: CheckRequest, options: ProxyOptions): Promise<CheckResponse> {
  return checkResponseOf(await decideProxied(proxiedRequestOfCheck(request), 'grpc', options));
}

export function createGrpcServer(options: GrpcServerOptions): Server {
  const server = new Server();
  const implementation: UntypedServiceImplementation = {
    Check: (call: ServerUnaryCall<CheckRequest, CheckResponse>, callback: sendUnaryData<CheckResponse>): void => {
      decideCheck(call.request, options).then(
        (response) => { callback(null, response); },
        (error: unknown) => {
          // Envoy treats a failed Check as a deny unless failure_mode_allow is set; the bootstrap never sets it.
          options.log.error({ err: error }, 'ext_authz Check failed');
          callback({ code: status.INTERNAL, details: 'internal error' });
        },
      );
    },
  };
  server.addService(envoyService('envoy/service/auth/v3/external_auth.proto', 'envoy.service.auth.v3.Authorization', 'Check'), implementation);
  return server;
}

/** Binds the server to HOST:PORT (port 0 picks one) and resolves with the bound port. */
export function listenGrpc(server: Server, address: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(address, ServerCredentials.createInsecure(), (error, port) => {
      if (error === null) resolve(port);
      else reject(error);
    });
  });
}
