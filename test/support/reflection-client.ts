/**
 * A generic gRPC client that knows nothing of baton's .proto files: it asks the server's
 * reflection service for the file descriptors and builds its stubs from them, as grpcurl
 * and similar tools do.
 */
import * as grpc from '@grpc/grpc-js';
import { loadFileDescriptorSetFromBuffer, loadSync } from '@grpc/proto-loader';
import * as path from 'node:path';

const REFLECTION_PROTO = path.join(
  path.dirname(require.resolve('@grpc/reflection/package.json')),
  'build/proto/grpc/reflection/v1alpha/reflection.proto',
);

interface ReflectionResponse {
  file_descriptor_response?: { file_descriptor_proto: Buffer[] };
  list_services_response?: { service: { name: string }[] };
  error_response?: { error_message: string };
}

function reflect(address: string, request: object): Promise<ReflectionResponse> {
  const definition = loadSync(REFLECTION_PROTO, { keepCase: true });
  const pkg = grpc.loadPackageDefinition(definition) as any;
  const client = new pkg.grpc.reflection.v1alpha.ServerReflection(address, grpc.credentials.createInsecure());
  return new Promise((resolve, reject) => {
    const call = client.ServerReflectionInfo();
    call.on('data', (response: ReflectionResponse) => {
      resolve(response);
      call.end();
    });
    call.on('error', reject);
    call.on('end', () => client.close());
    call.write(request);
  });
}

export async function listServices(address: string): Promise<string[]> {
  const response = await reflect(address, { list_services: '' });
  return (response.list_services_response?.service ?? []).map((s) => s.name);
}

/** Client constructors for every service in the file that defines `symbol`. */
export async function discover(address: string, symbol: string): Promise<any> {
  const response = await reflect(address, { file_containing_symbol: symbol });
  if (response.error_response) throw new Error(response.error_response.error_message);
  const files = response.file_descriptor_response!.file_descriptor_proto;
  // A FileDescriptorSet is field 1 repeated: tag 0x0a, length, bytes.
  const chunks: Buffer[] = [];
  for (const file of files) chunks.push(Buffer.from([0x0a]), varint(file.length), Buffer.from(file));
  const definition = loadFileDescriptorSetFromBuffer(Buffer.concat(chunks), { keepCase: true, longs: String, defaults: true });
  return grpc.loadPackageDefinition(definition);
}

function varint(n: number): Buffer {
  const bytes: number[] = [];
  while (n > 0x7f) {
    bytes.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  bytes.push(n);
  return Buffer.from(bytes);
}
