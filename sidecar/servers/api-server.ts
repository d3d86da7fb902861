/**
 * The gRPC server on --api-listen: SessionService, ClusterService, the standard
 * grpc.health.v1.Health service and server reflection (v1 and v1alpha), so generic gRPC
 * clients and Kubernetes gRPC probes work without the .proto files.
 */
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation, protoPath as healthProtoPath } from 'grpc-health-check';
import { ClusterServiceService, type ClusterServiceServer } from '../../src/gen/baton/v1/cluster';
import type { SessionServiceServer } from '../../src/gen/baton/v1/session';
import type { ListenAddress } from '../config/config';
import { raiseReceiveWindows } from '../net/flow-control';
import { sessionRequestScanner, sessionServiceDefinition } from './session-service';
import { PROTO_ROOT } from '../config/package-root';
import { shutdownWithin } from '../net/server-shutdown';

export const SERVED_SERVICES = ['baton.v1.SessionService', 'baton.v1.ClusterService'] as const;

export class ApiServer {
  readonly server: Server;
  readonly health: HealthImplementation;

  constructor(session: SessionServiceServer, cluster: ClusterServiceServer, maxMessageBytes: number, maxPartsPerSession: number) {
    this.server = new Server({
      'grpc.max_receive_message_length': maxMessageBytes,
      'grpc.max_send_message_length': maxMessageBytes,
      'grpc.enable_channelz': 0,
      'grpc.keepalive_permit_without_calls': 1,
      'grpc.http2.min_ping_interval_without_data_ms': 10_000,
    });
    const definitions = loadSync(
      ['baton/v1/session.proto', 'baton/v1/cluster.proto', 'baton/v1/parts.proto', healthProtoPath],
      { includeDirs: [PROTO_ROOT], keepCase: true, longs: String, enums: String, defaults: true },
    );
    this.server.addService(sessionServiceDefinition(sessionRequestScanner(definitions, maxPartsPerSession)), session);
    this.server.addService(ClusterServiceService, cluster);
    this.health = new HealthImplementation({ '': 'NOT_SERVING', ...Object.fromEntries(SERVED_SERVICES.map((s) => [s, 'NOT_SERVING'])) });
    this.health.addToServer(this.server);
    new ReflectionService(definitions).addToServer(this.server);
  }

  /** Binds the address; resolves with the port bound (useful with port 0). */
  listen(address: ListenAddress): Promise<number> {
    const target = address.path !== undefined ? `unix:${address.path}` : `${formatHost(address.host!)}:${address.port}`;
    return new Promise((resolve, reject) => {
      this.server.bindAsync(target, ServerCredentials.createInsecure(), (err, port) => {
        if (err) return reject(err);
        raiseReceiveWindows(this.server);
        resolve(port);
      });
    });
  }

  setServing(serving: boolean): void {
    const value = serving ? 'SERVING' : 'NOT_SERVING';
    this.health.setStatus('', value);
    for (const service of SERVED_SERVICES) this.health.setStatus(service, value);
  }

  /** Stops accepting calls and waits for in-flight ones, forcing after timeoutMs. */
  shutdown(timeoutMs: number): Promise<void> {
    return shutdownWithin(this.server, timeoutMs);
  }
}

function formatHost(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}
