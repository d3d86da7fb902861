/**
 * The CPU-profile reader of bench/profile-window.ts: a sample's time is the gap to the next,
 * only samples inside the window count, a function's own time is where samples landed and
 * its time with callees counts each sample once even through recursion.
 */
import { summarizeWindow, type CpuProfile } from '../bench/profile-window';

const frame = (functionName: string, lineNumber: number) => ({ functionName, url: 'file:///work/dist/src/core/x.js', lineNumber });

// root → a → b → a (recursion); root → (idle)
const PROFILE: CpuProfile = {
  nodes: [
    { id: 1, callFrame: frame('(root)', -1), children: [2, 5] },
    { id: 2, callFrame: frame('a', 9), children: [3] },
    { id: 3, callFrame: frame('b', 19), children: [4] },
    { id: 4, callFrame: frame('a', 9) },
    { id: 5, callFrame: frame('(idle)', -1) },
  ],
  startTime: 1000,
  // Samples at 1010, 1030, 1060, 1100, 1150; each charged with the gap to the next (the last: 0).
  samples: [2, 3, 4, 5, 2],
  timeDeltas: [10, 20, 30, 40, 50],
};

test('own and inclusive time per function, a sample charged with the gap to the next', () => {
  const { totalUs, functions } = summarizeWindow(PROFILE);
  expect(totalUs).toBe(20 + 30 + 40 + 50);
  expect(functions.get('a core/x.js:10')).toEqual({ selfUs: 20 + 40 + 0, totalUs: 20 + 30 + 40 + 0 });
  expect(functions.get('b core/x.js:20')).toEqual({ selfUs: 30, totalUs: 30 + 40 });
  expect(functions.get('(idle) core/x.js:0')).toEqual({ selfUs: 50, totalUs: 50 });
  expect(functions.get('(root) core/x.js:0')!.totalUs).toBe(totalUs);
});

test('only samples inside the window count', () => {
  const { totalUs, functions } = summarizeWindow(PROFILE, 1030, 1100);
  expect(totalUs).toBe(30 + 40 + 50);
  expect(functions.get('a core/x.js:10')).toEqual({ selfUs: 40, totalUs: 30 + 40 });
  expect(functions.get('(idle) core/x.js:0')!.selfUs).toBe(50);
  expect(summarizeWindow(PROFILE, 2000, 3000).totalUs).toBe(0);
});
