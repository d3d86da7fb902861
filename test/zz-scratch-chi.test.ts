import { BuzHash } from '../src/buzhash';
import { SeededRandom } from '../src/random';
test('chi', () => {
  for (const seed of ['test-seed', 'a', 'b', 'c', 'cluster-1']) {
    const h = new BuzHash(seed);
    for (const P of [256, 7]) {
      const counts = new Array(P).fill(0);
      const N = 1_000_000;
      for (let i = 0; i < N; i++) counts[h.partitionOf('sess-' + i, P)]++;
      let chi = 0; const e = N / P;
      for (const c of counts) chi += (c - e) ** 2 / e;
      const rnd = new SeededRandom(42);
      const counts2 = new Array(P).fill(0);
      const t0 = Date.now();
      for (let i = 0; i < N; i++) {
        let s = '';
        for (let k = 0; k < 4; k++) s += rnd.nextUint32().toString(16).padStart(8, '0');
        counts2[h.partitionOf(s, P)]++;
      }
      const t1 = Date.now() - t0;
      let chi2 = 0;
      for (const c of counts2) chi2 += (c - e) ** 2 / e;
      console.log(seed, P, 'counter', chi.toFixed(1), 'random', chi2.toFixed(1), t1);
    }
  }
});
