/**
 * Where a process spent a stretch of time, from a V8 CPU profile (`--cpu-prof`): each
 * function's own time and its time with what it called, within a window of the profile's
 * clock (CLOCK_MONOTONIC, µs: the window bench:replication's BENCH_DEBUG line prints as "load
 * from … to …"), so a sidecar's start and warm-up stay out of a phase's figures.
 *
 * Run: node dist/bench/profile-window.js <file.cpuprofile> [<from µs> <to µs>] [--top N] [--match text]
 * (no window: the whole profile). A function is named `name file:line` (the file's last two
 * path parts); "(idle)", "(program)" and "(garbage collector)" are V8's. Time with callees
 * counts a function once per sample even when it recurses. A reading aid, not a figure to
 * quote alone: the profiler slows calls into native code (koffi's above all) several times,
 * and on a machine whose processes wait for a CPU a sample lands on whatever ran before the
 * process was descheduled, so functions that fault pages or make system calls collect that
 * wait. For where CPU goes, `perf record -k CLOCK_MONOTONIC` on processes started with
 * `--perf-basic-prof` (docs/benchmarks.md, "Exchange requests read in place").
 */
import { readFileSync } from 'node:fs';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

/** The parts of a .cpuprofile this reads. */
export interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface WindowSummary {
  /** Sampled time inside the window, µs. */
  totalUs: number;
  /** Per function: its own time and its time with callees, µs. */
  functions: Map<string, { selfUs: number; totalUs: number }>;
}

function nameOf(frame: CallFrame): string {
  return `${frame.functionName || '(anonymous)'} ${frame.url.split('/').slice(-2).join('/')}:${frame.lineNumber + 1}`;
}

/**
 * Own and inclusive time per function of the samples taken in [fromUs, toUs]. A sample's
 * time is the gap to the next sample (what the profiler charges it with).
 */
export function summarizeWindow(profile: CpuProfile, fromUs = -Infinity, toUs = Infinity): WindowSummary {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parentOf = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parentOf.set(child, node.id);
  const functions = new Map<string, { selfUs: number; totalUs: number }>();
  const entry = (name: string) => {
    let found = functions.get(name);
    if (found === undefined) functions.set(name, (found = { selfUs: 0, totalUs: 0 }));
    return found;
  };
  let at = profile.startTime;
  let totalUs = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    at += profile.timeDeltas[i] ?? 0;
    if (at < fromUs || at > toUs) continue;
    const us = profile.timeDeltas[i + 1] ?? 0;
    totalUs += us;
    const leaf = byId.get(profile.samples[i]!);
    if (leaf === undefined) continue;
    entry(nameOf(leaf.callFrame)).selfUs += us;
    const seen = new Set<string>();
    for (let id: number | undefined = leaf.id; id !== undefined; id = parentOf.get(id)) {
      const name = nameOf(byId.get(id)!.callFrame);
      if (seen.has(name)) continue;
      seen.add(name);
      entry(name).totalUs += us;
    }
  }
  return { totalUs, functions };
}

function main(): void {
  const args = process.argv.slice(2);
  const option = (flag: string): string | undefined => {
    const i = args.indexOf(flag);
    return i < 0 ? undefined : args.splice(i, 2)[1];
  };
  const top = Number(option('--top') ?? 40);
  const match = option('--match');
  const [file, from, to] = args;
  if (file === undefined || !Number.isInteger(top) || top < 1) {
    console.error('usage: node dist/bench/profile-window.js <file.cpuprofile> [<from µs> <to µs>] [--top N] [--match text]');
    process.exitCode = 2;
    return;
  }
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const summary = summarizeWindow(profile, from === undefined ? undefined : Number(from), to === undefined ? undefined : Number(to));
  const rows = [...summary.functions].filter(([name]) => match === undefined || name.includes(match));
  const print = (title: string, key: 'selfUs' | 'totalUs') => {
    console.log(`\n${title}`);
    for (const [name, times] of [...rows].sort((a, b) => b[1][key] - a[1][key]).slice(0, top)) {
      const ms = times[key] / 1000;
      console.log(`${ms.toFixed(1).padStart(9)} ms ${((100 * times[key]) / Math.max(1, summary.totalUs)).toFixed(1).padStart(5)}%  ${name}`);
    }
  };
  console.log(`${(summary.totalUs / 1000).toFixed(1)} ms sampled in the window`);
  print('own time', 'selfUs');
  print('with callees', 'totalUs');
}

if (require.main === module) main();
