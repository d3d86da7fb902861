/**
 * The platform ceiling for bench/api.ts: a raw grpc-js echo server with identity (Buffer in,
 * Buffer out) serializers, so no protobuf and no baton code run. Echo is unary; Stream is
 * bidirectional and echoes every message as it arrives. Run as a child process: binds
 * 127.0.0.1 on a free port, prints "PORT <n>" on stdout, exits on SIGTERM.
 */
import {
  Server,
  ServerCredentials,
  type sendUnaryData,
  type ServerDuplexStream,
  type ServerUnaryCall,
  type ServiceDefinition,
} from '@grpc/grpc-js';

export const ECHO_METHOD_PATH = '/bench.Echo/Echo';
export const ECHO_STREAM_METHOD_PATH = '/bench.Echo/Stream';

const identity = (b: Buffer): Buffer => b;

export const ECHO_SERVICE: ServiceDefinition = {
  Echo: {
    path: ECHO_METHOD_PATH,
    requestStream: false,
    responseStream: false,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
  Stream: {
    path: ECHO_STREAM_METHOD_PATH,
    requestStream: true,
    responseStream: true,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
};

function main(): void {
  // The same server options the sidecar's API server uses where they matter for speed.
  const server = new Server({ 'grpc.enable_channelz': 0 });
  server.addService(ECHO_SERVICE, {
    Echo: (call: ServerUnaryCall<Buffer, Buffer>, callback: sendUnaryData<Buffer>) => callback(null, call.request),
    Stream: (call: ServerDuplexStream<Buffer, Buffer>) => {
      call.on('data', (message: Buffer) => call.write(message));
      call.on('end', () => call.end());
      call.on('error', () => undefined);
    },
  });
  server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, port) => {
    if (err) {
      process.stderr.write(`echo server: cannot listen: ${err.message}\n`);
      process.exit(1);
    }
    process.stdout.write(`PORT ${port}\n`);
  });
  const stop = () => {
    const timer = setTimeout(() => process.exit(0), 2000);
    server.tryShutdown(() => {
      clearTimeout(timer);
      process.exit(0);
    });
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  // The parent going away (its end of stdin closes) also ends the server.
  process.stdin.on('end', stop).resume();
}

if (require.main === module) main();
