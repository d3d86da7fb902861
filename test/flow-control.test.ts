/**
 * The receive windows baton's gRPC servers give each connection (sidecar/net/flow-control.ts),
 * seen from a raw HTTP/2 client: the stream window arrives in the server's SETTINGS, the
 * connection window as a WINDOW_UPDATE before the answer to a PING.
 */
import * as http2 from 'node:http2';
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { CONNECTION_WINDOW_BYTES, raiseReceiveWindows, STREAM_WINDOW_BYTES } from '../sidecar/net/flow-control';

function bind(server: Server): Promise<number> {
  return new Promise((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))),
  );
}

/** Connects, waits until the server's windows are known, and returns them. */
async function windowsSeenBy(port: number): Promise<{ stream: number | undefined; connection: number | undefined }> {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  try {
    await new Promise<void>((resolve, reject) => {
      session.once('error', reject);
      session.once('remoteSettings', () => resolve());
    });
    // Frames arrive in order: once the PING is answered, any SETTINGS or WINDOW_UPDATE the
    // server sent on accepting the connection has been applied.
    await new Promise<void>((resolve, reject) => session.ping((err) => (err ? reject(err) : resolve())));
    return { stream: session.remoteSettings.initialWindowSize, connection: session.state.remoteWindowSize };
  } finally {
    session.close();
  }
}

describe('raiseReceiveWindows', () => {
  it('gives every new connection the larger stream and connection windows', async () => {
    const server = new Server();
    try {
      const port = await bind(server);
      expect(raiseReceiveWindows(server)).toBe(true);
      for (let i = 0; i < 2; i++) {
        expect(await windowsSeenBy(port)).toEqual({ stream: STREAM_WINDOW_BYTES, connection: CONNECTION_WINDOW_BYTES });
      }
    } finally {
      server.forceShutdown();
    }
  });

  it('leaves a server alone at Node’s default windows until called', async () => {
    const server = new Server();
    try {
      const port = await bind(server);
      expect(await windowsSeenBy(port)).toEqual({ stream: 65_535, connection: 65_535 });
    } finally {
      server.forceShutdown();
    }
  });
});
