/** ownerGone: when a master takes a session owner's sessions over. */
import { ownerGone } from '../src/core/partition-masters';

const STARTED = 1_700_000_000_000;
const AFTER = 6000;

test('an owner that left is gone at once; an alive or suspect one never', () => {
  expect(ownerGone({ state: 'left', lastHeardAt: STARTED }, STARTED, STARTED, AFTER)).toBe(true);
  for (const state of ['alive', 'suspect'] as const) expect(ownerGone({ state, lastHeardAt: STARTED - 60_000 }, STARTED + 60_000, STARTED, AFTER)).toBe(false);
});

test('a dead owner is gone once the grace has passed since it was last heard', () => {
  const dead = { state: 'dead' as const, lastHeardAt: STARTED + 1000 };
  expect(ownerGone(dead, STARTED + 1000 + AFTER - 1, STARTED, AFTER)).toBe(false);
  expect(ownerGone(dead, STARTED + 1000 + AFTER, STARTED, AFTER)).toBe(true);
});

// A node that just (re)started has not heard every live member yet: an owner unknown to
// its membership is not gone before it would have been declared dead since the start.
test('an owner membership does not know is gone only the grace after this node started', () => {
  expect(ownerGone(undefined, STARTED + 300, STARTED, AFTER)).toBe(false);
  expect(ownerGone(undefined, STARTED + AFTER - 1, STARTED, AFTER)).toBe(false);
  expect(ownerGone(undefined, STARTED + AFTER, STARTED, AFTER)).toBe(true);
});
