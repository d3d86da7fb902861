/**
 * The proxy's in-flight log (sidecar/proxy/replay-log.ts): what it admits, what it drops,
 * and that every entry gives back exactly what it held, however it leaves.
 */
import { ReplayLog } from '../sidecar/proxy/replay-log';

const KIB = 1024;

function logged(log: ReplayLog, head: number, declared = 0) {
  const admission = log.admit(head, declared);
  if (admission.kind !== 'logged') throw new Error('expected the request to be logged');
  return admission.entry;
}

describe('ReplayLog', () => {
  test('an entry holds its head and body bytes until it is released, and its body reads back whole', () => {
    const log = new ReplayLog(64 * KIB, 16 * KIB);
    const entry = logged(log, 100);
    const head = log.bytes;
    expect(head).toBeGreaterThanOrEqual(100);
    expect(entry.add(Buffer.from('hello '))).toBe(true);
    expect(entry.add(Buffer.from('world'))).toBe(true);
    expect(log.bytes).toBe(head + 11);
    expect(entry.body().toString()).toBe('hello world');
    entry.release();
    expect(log.bytes).toBe(0);
    expect(log.size).toBe(0);
    // Released twice, or written after: nothing changes.
    entry.release();
    expect(entry.add(Buffer.from('late'))).toBe(false);
    expect(log.bytes).toBe(0);
    expect(entry.state).toBe('released');
  });

  test('a declared body over the per-request cap, or over what the log has left, is refused at once', () => {
    const log = new ReplayLog(8 * KIB, 4 * KIB);
    expect(log.admit(100, 5 * KIB).kind).toBe('too_large');
    const first = logged(log, 100, 3 * KIB);
    expect(first.add(Buffer.alloc(3 * KIB))).toBe(true);
    const second = logged(log, 100, 3 * KIB);
    expect(second.add(Buffer.alloc(3 * KIB))).toBe(true);
    // 2 × (3 KiB + head) held: a third of 3 KiB does not fit in 8 KiB.
    expect(log.admit(100, 3 * KIB).kind).toBe('too_large');
    expect(log.size).toBe(2);
    first.release();
    expect(log.admit(100, 3 * KIB).kind).toBe('logged');
  });

  test('a streamed body growing past the per-request cap drops the entry and gives its bytes back', () => {
    const log = new ReplayLog(64 * KIB, 4 * KIB);
    const entry = logged(log, 10);
    expect(entry.add(Buffer.alloc(3 * KIB))).toBe(true);
    expect(entry.add(Buffer.alloc(2 * KIB))).toBe(false);
    expect(entry.state).toBe('dropped');
    expect(log.bytes).toBe(0);
    expect(log.size).toBe(0);
    // A dropped entry stays dropped, and its release gives back nothing twice.
    expect(entry.add(Buffer.alloc(1))).toBe(false);
    entry.release();
    expect(log.bytes).toBe(0);
    expect(log.size).toBe(0);
  });

  test('streamed bodies that together pass the capacity drop the one that would overflow, not the others', () => {
    const log = new ReplayLog(10 * KIB, 8 * KIB);
    const a = logged(log, 10);
    const b = logged(log, 10);
    expect(a.add(Buffer.alloc(6 * KIB))).toBe(true);
    expect(b.add(Buffer.alloc(2 * KIB))).toBe(true);
    expect(b.add(Buffer.alloc(3 * KIB))).toBe(false);
    expect(a.state).toBe('logging');
    expect(b.state).toBe('dropped');
    expect(a.body().length).toBe(6 * KIB);
    expect(log.size).toBe(1);
    a.release();
    expect(log.bytes).toBe(0);
  });

  test('under a seeded random mix of admissions, chunks, drops and releases the log never passes its capacity and ends empty', () => {
    let seed = 42;
    const random = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
    const capacity = 256 * KIB;
    const log = new ReplayLog(capacity, 32 * KIB);
    const open: ReturnType<typeof logged>[] = [];
    for (let step = 0; step < 5000; step++) {
      const r = random();
      if (r < 0.3) {
        const admission = log.admit(Math.floor(random() * 2 * KIB), random() < 0.5 ? 0 : Math.floor(random() * 40 * KIB));
        if (admission.kind === 'logged') open.push(admission.entry);
      } else if (r < 0.8 && open.length > 0) {
        open[Math.floor(random() * open.length)]!.add(Buffer.alloc(Math.floor(random() * 8 * KIB)));
      } else if (open.length > 0) {
        open.splice(Math.floor(random() * open.length), 1)[0]!.release();
      }
      expect(log.bytes).toBeLessThanOrEqual(capacity);
      expect(log.bytes).toBeGreaterThanOrEqual(0);
    }
    for (const entry of open) entry.release();
    expect(log.bytes).toBe(0);
    expect(log.size).toBe(0);
  });
});
