// Envoy's ext_authz v3 gRPC service (envoy.service.auth.v3.Authorization/Check)
// over @grpc/grpc-js, from the proto subset in ./proto. A thin adapter: the
// request becomes a call (envoy-check.ts), the Authorizer decides, the
// decision becomes a CheckResponse.
import type { sendUnaryData, ServerUnaryCall, ServiceDefinition, UntypedServiceImplementation } from '@grpc/grpc-js';
import { Server, ServerCredentials, status } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { InputError } from '../compiler/index.ts';
import type { Authorizer, SidecarDecision } from './authorizer.ts';
import type { CheckRequest, CheckResponse } from './envoy-check.ts';
import { callOfCheck, checkResponseOf } from './envoy-check.ts';
import type { ToolTable } from './tools.ts';

export interface GrpcServerOptions {
  authorizer: Authorizer;
  tools: ToolTable;
  log: Logger;
  inspectionLimit?: number;
}

const PROTO_DIR = join(import.meta.dirname, 'proto');

function authorizationService(): ServiceDefinition {
  const definition = loadSync('envoy/service/auth/v3/external_auth.proto', {
    includeDirs: [PROTO_DIR],
    keepCase: true,
    longs: String,
    enums: Number,
    defaults: false,
    oneofs: true,
  });
  const service = definition['envoy.service.auth.v3.Authorization'];
  if (service === undefined || !('Check' in service)) throw new Error('the ext_authz proto defines no envoy.service.auth.v3.Authorization service');
  return service;
}

/** Decides one CheckRequest; every failure past parsing is a deny, never a gRPC error Envoy might be told to ignore. */
export async function decideCheck(request: CheckRequest, options: GrpcServerOptions): Promise<SidecarDecision> {
  const context = { transport: 'grpc' } as const;
  const call = callOfCheck(request, options.tools, options.inspectionLimit);
  if (call.kind === 'refuse') return options.authorizer.refuse(call.reason, context);
  try {
    return await options.authorizer.authorize(call.call, context);
  } catch (error) {
    if (error instanceof InputError) return options.authorizer.refuse(error.message, context);
    throw error;
  }
}

export function createGrpcServer(options: GrpcServerOptions): Server {
  const server = new Server();
  const implementation: UntypedServiceImplementation = {
    Check: (call: ServerUnaryCall<CheckRequest, CheckResponse>, callback: sendUnaryData<CheckResponse>): void => {
      decideCheck(call.request, options).then(
        (decision) => { callback(null, checkResponseOf(decision)); },
        (error: unknown) => {
          // Envoy treats a failed Check as a deny unless failure_mode_allow is set; the bootstrap never sets it.
          options.log.error({ err: error }, 'ext_authz Check failed');
          callback({ code: status.INTERNAL, details: 'internal error' });
        },
      );
    },
  };
  server.addService(authorizationService(), implementation);
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
