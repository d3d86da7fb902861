/**
 * The TLS ticket key keeper's asks of its peers: while it may not generate (no coordinator
 * known) and holds no keys, it asks the peers for the key set at most once per retry
 * interval, also when the ask answers at once (no peer to ask) — not in a loop that never
 * yields to the event loop.
 */
import pino from 'pino';
import { TicketKeyKeeper } from '../sidecar/capture/ticket-key-keeper';
import { SessionApi, type Replicator } from '../src/core/session-api';
import { WatchHub } from '../src/core/watch-hub';
import { BuzHash } from '../src/store/buzhash';
import { HybridClock } from '../src/store/hybrid-clock';
import { DEFAULT_STORE_CONFIG, SessionStore } from '../src/store/store';

// The keeper plans again on its own clock (Date.now) after an ask: start there.
const T0 = Date.now();

test('with no coordinator and no peer to ask, the keys are asked for once per retry interval, not in a loop', async () => {
  let asks = 0;
  const replicator: Replicator = {
    replicas: 1,
    secondariesFor: () => 0,
    replicate: () => 1,
    waitForAcks: () => Promise.resolve(0),
    sendQueueRoom: () => undefined,
    // No peer: the ask answers at once. Past a bound it never answers, so a loop ends the test as a failure instead of a hang.
    fetchFromPeers: () => (++asks > 50 ? new Promise(() => undefined) : Promise.resolve({ asked: 0, answered: 0, snapshots: [] })),
    replicateClaim: () => undefined,
  };
  const store = new SessionStore({ ...DEFAULT_STORE_CONFIG, nodeId: 'a', partitions: 16 }, new BuzHash('keeper-test'), new HybridClock());
  const api = new SessionApi(store, { maxValueBytes: 64 * 1024, maxPartsPerSession: 64 }, replicator, undefined, () => T0);
  const keeper = new TicketKeyKeeper(
    { nodeId: 'a', rotationMs: 60_000, sessionLifetimeSeconds: 3600, sessionIdContext: 'ctx', shared: true },
    store,
    api,
    replicator,
    { generator: () => undefined },
    new WatchHub(),
    pino({ level: 'silent' }),
  );
  keeper.plan(T0);
  for (let i = 0; i < 10; i++) await new Promise((resolve) => setImmediate(resolve));
  expect(asks).toBe(1);
  const retryAt = keeper.nextDeadline();
  expect(retryAt).toBeGreaterThan(T0);
  keeper.tick(retryAt);
  for (let i = 0; i < 10; i++) await new Promise((resolve) => setImmediate(resolve));
  expect(asks).toBe(2);
  keeper.stop();
});
