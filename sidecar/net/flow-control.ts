/**
 * HTTP/2 flow-control windows for baton's gRPC servers.
 *
 * Node's HTTP/2 gives every connection and every stream a 64 KiB receive window. On an
 * Exchange stream a batch of 64 one-KiB Puts is already larger than that, so the client
 * stalls mid-batch until the sidecar's WINDOW_UPDATE comes back, and the two processes
 * take turns instead of working at once (bench:api measured Exchange Put at ~41k ops/s with
 * the default windows, ~55–64k with 1 MiB / 8 MiB). grpc-js clients take
 * `grpc-node.flow_control_window`, but grpc-js servers do not read it yet (grpc-node pull
 * request #3058), so baton raises the windows itself as each connection arrives.
 */
import type { Http2Server, Http2Session } from 'node:http2';
import type { Server } from '@grpc/grpc-js';

/** Receive window per stream: what one client may have in flight on one Exchange. */
export const STREAM_WINDOW_BYTES = 1024 * 1024;
/** Receive window per connection, shared by its streams. */
export const CONNECTION_WINDOW_BYTES = 8 * 1024 * 1024;

/**
 * Raises the receive windows of every connection `server` accepts from now on. Call it
 * once the server is bound (grpc-js creates its HTTP/2 servers in bindAsync). Returns
 * false, changing nothing, if this grpc-js version does not expose its HTTP/2 servers
 * the way this code expects: the server then runs with Node's default windows.
 */
export function raiseReceiveWindows(server: Server): boolean {
  const http2Servers = (server as unknown as { http2Servers?: unknown }).http2Servers;
  if (!(http2Servers instanceof Map)) return false;
  for (const http2Server of http2Servers.keys() as IterableIterator<Http2Server & { [WINDOWS_RAISED]?: true }>) {
    if (http2Server[WINDOWS_RAISED]) continue;
    http2Server[WINDOWS_RAISED] = true;
    http2Server.on('session', raiseSessionWindows);
  }
  return true;
}

const WINDOWS_RAISED = Symbol('baton.windowsRaised');

function raiseSessionWindows(session: Http2Session): void {
  try {
    session.setLocalWindowSize(CONNECTION_WINDOW_BYTES);
    session.settings({ initialWindowSize: STREAM_WINDOW_BYTES });
  } catch {
    // The session closed before its windows could be raised: nothing to do.
  }
}
