/**
 * Asking a StaticCluster about its coordinator: Locate on one node, and a bounded wait until
 * every running node's Status names the same coordinator and view.
 */
import { credentials, Metadata } from '@grpc/grpc-js';
import { ClusterServiceClient, type LocateResponse } from '../../src/gen/baton/v1/cluster';
import { pollUntil, type StaticCluster } from './static-cluster';

/** ClusterService.Locate on node `id`. */
export async function locate(c: StaticCluster, id: string, sessionId: string): Promise<LocateResponse> {
  const process = c.node(id).process;
  if (process === undefined) throw new Error(`node ${id} is not running`);
  const client = new ClusterServiceClient(process.apiAddress, credentials.createInsecure());
  try {
    return await new Promise<LocateResponse>((resolve, reject) =>
      client.locate({ sessionId }, new Metadata(), { deadline: Date.now() + 3000 }, (err, response) => (err ? reject(err) : resolve(response))),
    );
  } finally {
    client.close();
  }
}

/** Polls until every running node's Status names the same coordinator and view id and `accept` takes them. */
export async function waitForAgreement(
  c: StaticCluster,
  withinMs: number,
  accept: (coordinator: string, viewId: bigint, members: readonly string[]) => boolean,
): Promise<{ coordinator: string; viewId: bigint }> {
  let last: { id: string; coordinator: string; viewId: bigint; members: string[] }[] = [];
  await pollUntil(
    'every running node names the same coordinator and view',
    async () => {
      last = await Promise.all(
        c.running().map(async (n) => {
          const status = await c.status(n.id).catch(() => undefined);
          // The view's members: those Status gives an index (a place in the view).
          const members = (status?.members ?? []).filter((m) => m.index !== undefined).map((m) => m.nodeId).sort();
          return { id: n.id, coordinator: status?.coordinatorNodeId ?? '?', viewId: status?.viewId ?? 0n, members };
        }),
      );
      const first = last[0]!;
      return last.every((v) => v.coordinator === first.coordinator && v.viewId === first.viewId) && accept(first.coordinator, first.viewId, first.members);
    },
    withinMs,
  ).catch((err: Error) => {
    throw new Error(`${err.message} (last seen: ${last.map((v) => `${v.id}: ${v.coordinator}@${v.viewId} [${v.members.join(',')}]`).join('; ')})`);
  });
  return last[0]!;
}
