/**
 * One BatonClient keeps working across a rolling restart of its real sidecar: SIGTERM (the
 * node drains and ends the client's Exchange stream and watch), then a new process on the
 * same --api-listen address. The client must open a new stream by itself, hold a call made
 * while the sidecar is down until the new one answers (within the call's deadline), and end
 * a watch the sidecar ended with an error rather than quietly.
 *
 * The new process rebinds the port the first one was given (port 0, then that port): the
 * kernel frees it when the first process exits, and nothing else on this host picks a
 * specific port in the ephemeral range.
 */
import { status } from '@grpc/grpc-js';
import { BatonClient } from '../src/client/client';
import { startSidecar, type SidecarProcess } from './support/sidecar-process';
import { rejection } from './support/rejection';

/** Long enough to span the restart of a sidecar on a loaded CI host. */
const ACROSS_RESTART_DEADLINE_MS = 30_000;

const text = (value: Uint8Array | undefined): string => Buffer.from(value ?? new Uint8Array()).toString();

describe('BatonClient across a sidecar restart', () => {
  it('keeps working with the same client after SIGTERM and a restart on the same address', async () => {
    const processes: SidecarProcess[] = [];
    let client: BatonClient | undefined;
    try {
      const first = await startSidecar();
      processes.push(first);
      client = new BatonClient(first.apiAddress);

      await client.put('before', { v: Buffer.from('1') });
      expect(text((await client.get('before'))?.parts[0]?.value)).toBe('1');
      const watch = client.watch('');
      await watch.ready();
      const watchEnd = rejection(
        (async () => {
          for await (const _event of watch) void _event;
        })(),
      );

      expect(await first.stop('SIGTERM')).toBe(0);
      // The drain ended the watch: the application is told, not left with a silent loop end.
      expect((await watchEnd).code).toBe(status.UNAVAILABLE);

      // Made while nothing listens: it waits for the new sidecar instead of failing at once.
      const duringRestart = client.put('during', { v: Buffer.from('2') }, { deadlineMs: ACROSS_RESTART_DEADLINE_MS });
      const second = await startSidecar(['--api-listen', first.apiAddress]);
      processes.push(second);
      expect(second.apiAddress).toBe(first.apiAddress);

      expect((await duringRestart).versions.map((v) => v.name)).toEqual(['v']);
      await client.put('after', { v: Buffer.from('3') });
      expect(text((await client.get('after'))?.parts[0]?.value)).toBe('3');
      expect(text((await client.get('during'))?.parts[0]?.value)).toBe('2');
      // A lone node keeps sessions in memory only: what the first process held is gone.
      expect(await client.get('before')).toBeUndefined();
    } finally {
      client?.close();
      for (const p of processes) await p.stop('SIGKILL');
    }
  });
});
