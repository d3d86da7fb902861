/**
 * Binds a node:net server (HTTP servers included) to a listen address: host:port, or a Unix
 * socket path. Resolves with the port bound (the real one when port 0 was asked; 0 for a
 * socket path), rejects with the bind error.
 */
import type { Server } from 'node:net';
import type { ListenAddress } from '../config/config';

export function listenOn(server: Server, address: ListenAddress): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    const done = () => {
      server.off('error', reject);
      const bound = server.address();
      resolve(typeof bound === 'object' && bound !== null ? bound.port : 0);
    };
    if (address.path !== undefined) server.listen(address.path, done);
    else server.listen(address.port, address.host, done);
  });
}
