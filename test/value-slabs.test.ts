import { SeededRandom } from '../src/store/random';
import { EMPTY_SLAB, MAX_FREE_SLABS, readValue, type ValueSlab, ValueSlabs } from '../src/store/value-slabs';

/** An owner as the store has them (by number): values it refers to, rewritten when they move. */
interface Owner {
  readonly id: number;
  stored: boolean;
  values: { slab: ValueSlab; offset: number; length: number; bytes: Buffer }[];
}
const owners: Owner[] = [];

function slabs(slabBytes = 1024) {
  const values: ValueSlabs = new ValueSlabs(
    (id, from) => {
      const owner = owners[id]!;
      if (!owner.stored) return;
      for (const v of owner.values) {
        if (v.slab !== from) continue;
        v.slab = values.move(from, v.offset, v.length, owner.id);
        v.offset = values.lastOffset;
      }
    },
    { slabBytes },
  );
  const put = (owner: Owner, bytes: Buffer) => {
    const slab = values.store(bytes, owner.id);
    owner.values.push({ slab, offset: values.lastOffset, length: bytes.length, bytes: Buffer.from(bytes) });
  };
  const drop = (owner: Owner, index: number) => {
    const [v] = owner.values.splice(index, 1);
    values.release(v!.slab, v!.length);
  };
  const read = (owner: Owner) => owner.values.map((v) => readValue(v.slab, v.offset, v.length));
  return { values, put, drop, read };
}

const newOwner = (): Owner => {
  const owner: Owner = { id: owners.length, stored: true, values: [] };
  owners.push(owner);
  return owner;
};

test('a value reads back byte for byte; an empty value takes no slab space', () => {
  const { values, put, read } = slabs();
  const owner = newOwner();
  put(owner, Buffer.from([0, 1, 255, 128]));
  put(owner, Buffer.alloc(0));
  expect(read(owner)).toEqual([Buffer.from([0, 1, 255, 128]), Buffer.alloc(0)]);
  expect(owner.values[1]!.slab).toBe(EMPTY_SLAB);
  expect(values.liveBytes).toBe(4);
  expect(values.allocatedBytes).toBe(1024);
});

test('a value over a sixteenth of a slab gets a slab of its own, given back when released', () => {
  const { values, put, drop, read } = slabs(1024);
  const owner = newOwner();
  put(owner, Buffer.alloc(65, 7));
  expect(values.allocatedBytes).toBe(1024 + 65);
  expect(read(owner)[0]!.equals(Buffer.alloc(65, 7))).toBe(true);
  drop(owner, 0);
  expect([values.allocatedBytes, values.liveBytes]).toEqual([1024, 0]);
});

test('a slab mostly released is evacuated when the next opens: its values move, and the emptied slab is reused, not reallocated', () => {
  const { values, put, drop, read } = slabs(1024);
  const owners = Array.from({ length: 17 }, newOwner);
  for (let i = 0; i < 17; i++) put(owners[i]!, Buffer.alloc(60, i)); // 1,020 of 1,024 bytes
  const before = read(owners[16]!)[0]!;
  for (let i = 0; i < 11; i++) drop(owners[i]!, 0);
  expect(values.sparseSlabs).toBe(0); // the current slab is never sparse
  put(owners[0]!, Buffer.alloc(60, 99)); // opens the next slab: the first is retired sparse and evacuated
  expect(values.evacuatedSlabs).toBe(1);
  expect(values.movedBytes).toBe(6 * 60);
  expect(values.allocatedBytes).toBe(2 * 1024); // the second slab, and the first kept empty for reuse
  for (let i = 11; i < 17; i++) expect(read(owners[i]!)[0]!.equals(Buffer.alloc(60, i))).toBe(true);
  // Fill the second slab: the next one is the first again, written over.
  const slabOfMoved = owners[16]!.values[0]!.slab;
  for (let i = 0; i < 11; i++) put(owners[i]!, Buffer.alloc(60, 200 + i));
  expect(values.allocatedBytes).toBe(2 * 1024);
  expect(owners[10]!.values.at(-1)!.slab).not.toBe(slabOfMoved);
  expect(read(owners[10]!).at(-1)!.equals(Buffer.alloc(60, 210))).toBe(true);
  for (let i = 11; i < 17; i++) expect(read(owners[i]!)[0]!.equals(Buffer.alloc(60, i))).toBe(true);
  // What a reader got before is a copy: the bytes it read stay.
  expect(before.equals(Buffer.alloc(60, 16))).toBe(true);
});

test('an owner no longer stored is skipped by evacuation, and a slab released entirely is forgotten at once', () => {
  const { values, put, drop } = slabs(4096);
  const a = newOwner();
  const b = newOwner();
  for (let i = 0; i < 19; i++) put(a, Buffer.alloc(200, 1));
  put(b, Buffer.alloc(200, 2));
  // a leaves the store with its values still listed (as a record dropped by the store keeps
  // its parts): released, and not to be moved.
  for (const v of a.values) values.release(v.slab, v.length);
  a.stored = false;
  put(b, Buffer.alloc(200, 3)); // 4,200 bytes: the next slab opens, the first (200 of 4,000 live) is evacuated
  expect(values.movedBytes).toBe(200);
  expect(values.liveBytes).toBe(400);
  drop(b, 0);
  drop(b, 0);
  expect([values.liveBytes, values.allocatedBytes]).toEqual([0, 2 * 4096]); // the current slab and the first, kept for reuse
});

test('seeded churn: every value reads back, and after evacuation the slabs hold at most twice the live bytes plus one slab and the free ones', () => {
  const random = new SeededRandom(5);
  const { values, put, drop, read } = slabs(4096);
  const owners = Array.from({ length: 50 }, newOwner);
  for (let step = 0; step < 20_000; step++) {
    const owner = owners[random.below(owners.length)]!;
    if (owner.values.length > 0 && random.below(2) === 0) drop(owner, random.below(owner.values.length));
    else {
      const length = random.below(20) === 0 ? 300 + random.below(400) : random.below(200);
      const bytes = Buffer.alloc(length);
      for (let k = 0; k < length; k++) bytes[k] = random.below(256);
      put(owner, bytes);
    }
    if (step % 97 === 0) {
      values.evacuateSparse();
      expect(values.allocatedBytes).toBeLessThanOrEqual(2 * values.liveBytes + (1 + MAX_FREE_SLABS) * 4096);
    }
  }
  let live = 0;
  for (const owner of owners) {
    const views = read(owner);
    owner.values.forEach((v, i) => expect(views[i]!.equals(v.bytes)).toBe(true));
    live += owner.values.reduce((n, v) => n + v.length, 0);
  }
  expect(values.liveBytes).toBe(live);
  expect(values.evacuatedSlabs).toBeGreaterThan(50);
});
