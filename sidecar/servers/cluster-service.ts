/**
 * gRPC handlers of baton.v1.ClusterService: Status (built by the node, sidecar/node.ts) and
 * Locate (the name service, src/core/name-service.ts). Locate validates the session id like
 * every session call, answers from this node's copy or one lookup per holder, and never
 * waits longer than LOCATE_DEADLINE_MS (or the caller's deadline, if sooner).
 */
import type { sendUnaryData, ServerUnaryCall } from '@grpc/grpc-js';
import type { ClusterServiceServer, LocateRequest, LocateResponse, StatusResponse } from '../../src/gen/baton/v1/cluster';
import { locateSession, type NameServiceSource } from '../../src/core/name-service';
import { checkSessionId } from '../../src/wire/validation';
import { toStatus } from '../net/grpc-status';

/** Longest a Locate waits for the holders' answers. */
export const LOCATE_DEADLINE_MS = 2000;

export interface ClusterSource {
  status(): StatusResponse;
  /** The node core (undefined: replication is off, the node is alone). */
  names(): NameServiceSource | undefined;
  viewId(): number;
}

export function clusterService(source: ClusterSource): ClusterServiceServer {
  return {
    status: (_call, callback) => callback(null, source.status()),
    locate: (call: ServerUnaryCall<LocateRequest, LocateResponse>, callback: sendUnaryData<LocateResponse>) => {
      void locate(source, call).then(
        (response) => callback(null, response),
        (err: unknown) => {
          const s = toStatus(err);
          callback({ code: s.code, details: s.details });
        },
      );
    },
  };
}

async function locate(source: ClusterSource, call: ServerUnaryCall<LocateRequest, LocateResponse>): Promise<LocateResponse> {
  const sessionId = call.request.sessionId;
  checkSessionId(sessionId);
  const names = source.names();
  const viewId = BigInt(source.viewId());
  if (names === undefined) {
    const self = source.status();
    const me = { nodeId: self.nodeId, address: self.members.find((m) => m.isSelf)?.address ?? '' };
    return { partition: 0, master: me, owner: undefined, viewId };
  }
  const now = Date.now();
  const callDeadline = call.getDeadline();
  const asked = callDeadline instanceof Date ? callDeadline.getTime() : Number(callDeadline);
  const deadline = Math.min(now + LOCATE_DEADLINE_MS, Number.isFinite(asked) && asked > now ? asked : Infinity);
  const where = await locateSession(names, sessionId, deadline, now);
  return { partition: where.partition, master: where.master, owner: where.owner, viewId };
}
