// Envoy's gRPC services from the proto subset in ./proto, decoded the way the
// transports read them: field names as in the protos, 64-bit integers as
// strings, enums as numbers, no defaults filled in, oneofs named.
import type { ServiceDefinition } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { join } from 'node:path';

const PROTO_DIR = join(import.meta.dirname, 'proto');

/** The service `name` (package-qualified) of the proto `file`, which must have `method`. */
export function envoyService(file: string, name: string, method: string): ServiceDefinition {
  const definition = loadSync(file, { includeDirs: [PROTO_DIR], keepCase: true, longs: String, enums: Number, defaults: false, oneofs: true });
  const service = definition[name];
  if (service === undefined || !(method in service)) throw new Error(`${file} defines no ${name} service with ${method}`);
  return service as ServiceDefinition;
}
