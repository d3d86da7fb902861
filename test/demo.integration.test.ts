/**
 * `baton demo` end to end, as a user runs it: the compiled CLI starts three nodes and the
 * shop, kills the node serving the customer, and must report the session recovered on
 * another node (which now owns it), exit 0, and leave no node running; stopped early by
 * SIGTERM, it must stop its nodes too.
 *
 * The demo runs in its own process group, so whatever happens the test can tell whether any
 * of its processes is left, and kill them all as a last resort: a demo that hangs is sent
 * SIGTERM (it stops its nodes), and its whole group SIGKILL only if it does not exit.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { BATON_BIN, childEnv } from './support/sidecar-process';

jest.setTimeout(100_000);

// The demo bounds itself within a minute; these only guard against a hung process.
const TERM_AFTER_MS = 65_000;
const KILL_GROUP_AFTER_MS = 20_000;

const demos = new Set<ChildProcess>();

afterAll(() => {
  for (const demo of demos) killGroup(demo, 'SIGKILL');
});

interface DemoRun {
  child: ChildProcess;
  /** Everything written so far. */
  output: { stdout: string; stderr: string };
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>;
}

function startDemo(): DemoRun {
  // No BATON_* variable of this process reaches the demo (it strips them for its nodes too).
  const child = spawn(process.execPath, [BATON_BIN, 'demo'], { stdio: ['ignore', 'pipe', 'pipe'], detached: true, env: childEnv({}) });
  demos.add(child);
  const output = { stdout: '', stderr: '' };
  child.stdout!.on('data', (d: Buffer) => (output.stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (output.stderr += d.toString()));
  const term = setTimeout(() => child.kill('SIGTERM'), TERM_AFTER_MS);
  const kill = setTimeout(() => killGroup(child, 'SIGKILL'), TERM_AFTER_MS + KILL_GROUP_AFTER_MS);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve) => {
    child.once('close', (code, signal) => {
      clearTimeout(term);
      clearTimeout(kill);
      // What is left of the group is the test's to check and kill; see leftBehind().
      resolve({ code, signal, ...output });
    });
  });
  return { child, output, exited };
}

/** Signals every process in the demo's group (the demo and the nodes it started). */
function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  try {
    process.kill(-child.pid!, signal);
  } catch {
    // ESRCH: nothing is left in the group.
  }
}

/**
 * Once the demo has exited: whether any process of its group (a node it started) is left,
 * which is then killed so the test leaves nothing behind either way.
 */
function leftBehind(child: ChildProcess): boolean {
  try {
    process.kill(-child.pid!, 0);
  } catch {
    demos.delete(child);
    return false;
  }
  killGroup(child, 'SIGKILL');
  demos.delete(child);
  return true;
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitFor(what: string, check: () => boolean, withinMs: number): Promise<void> {
  const until = Date.now() + withinMs;
  while (!check()) {
    if (Date.now() > until) throw new Error(`${what}: not within ${withinMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function nodePids(stdout: string): number[] {
  return [...stdout.matchAll(/started shop-node-\d {2}pid (\d+)/g)].map((m) => Number(m[1]));
}

describe('baton demo', () => {
  it('recovers the session on another node after SIGKILL, which takes over its ownership, exits 0 and stops its nodes', async () => {
    const demo = startDemo();
    let result: Awaited<DemoRun['exited']>;
    try {
      result = await demo.exited;
    } finally {
      expect(leftBehind(demo.child)).toBe(false);
    }
    const { code, stdout, stderr } = result;
    // The whole transcript says which step went wrong.
    if (code !== 0) throw new Error(`baton demo exited with ${code} (signal ${result.signal}):\n${stdout}\n${stderr}`);

    const [before, after] = stdout.split(/^\d+\. SIGKILL shop-node-0 .*$/m);
    expect(after).toBeDefined();
    expect(before).toMatch(/^\d+\. alice logs in on pod 0 \(baton shop-node-0\)/m);
    const owned = /^\s+baton: owner shop-node-0, epoch (\d+), cart part written by shop-node-0$/m.exec(before!);
    expect(owned).not.toBeNull();

    // The recovered session, as pod 1 got it from its own baton node, which claimed it.
    expect(after).toMatch(/^\d+\. alice's next request goes to pod 1 \(baton shop-node-1\): GET \/cart -> the recovered session:$/m);
    const recovered = after!.split(/^\d+\. alice adds/m)[0]!;
    expect(recovered).toMatch(/user alice,/);
    expect(recovered).toMatch(/1 x Desk lamp\s+LAMP-1\s+29\.99 EUR/);
    expect(recovered).toMatch(/2 x Coffee mug\s+MUG-2\s+25\.00 EUR/);
    const moved = /^\s+owner moved to shop-node-1 \(epoch (\d+)\)$/m.exec(recovered);
    expect(moved).not.toBeNull();
    expect(Number(moved![1])).toBeGreaterThan(Number(owned![1]));
    expect(after).toMatch(/3 x Notebook\s+BOOK-3\s+14\.97 EUR/);
    expect(after).toMatch(/total\s+69\.96 EUR/);
    expect(after).toMatch(/^\s+baton: owner shop-node-1, epoch \d+, cart part written by shop-node-1$/m);
    expect(stdout.trimEnd().split('\n').pop()).toMatch(/^PASS: /);

    // Every node the demo started is gone (leftBehind checked its whole group).
    const pids = nodePids(stdout);
    expect(pids).toHaveLength(3);
    expect(pids.filter(isRunning)).toEqual([]);
    expect(stdout).toMatch(/^cleaned up: shop stopped; shop-node-0 signal SIGKILL, shop-node-1 code 0, shop-node-2 code 0 /m);
  });

  it('stops its nodes and exits 1 when it is sent SIGTERM', async () => {
    const demo = startDemo();
    let result: Awaited<DemoRun['exited']>;
    try {
      await waitFor('the demo started its nodes', () => nodePids(demo.output.stdout).length === 3, 30_000);
      demo.child.kill('SIGTERM');
      result = await demo.exited;
    } finally {
      if (demo.child.exitCode === null && demo.child.signalCode === null) killGroup(demo.child, 'SIGKILL');
      await demo.exited;
      // None of the processes the demo started may be left behind.
      expect(leftBehind(demo.child)).toBe(false);
    }
    const { code, stdout, stderr } = result;
    expect({ code, last: stdout.trimEnd().split('\n').pop() }).toEqual({ code: 1, last: 'FAIL: interrupted by SIGTERM' });
    const pids = nodePids(stdout);
    expect(pids).toHaveLength(3);
    expect(pids.filter(isRunning)).toEqual([]);
    expect(stdout).toMatch(/^cleaned up: shop stopped; shop-node-0 code 0, shop-node-1 code 0, shop-node-2 code 0 /m);
    expect(stderr).toBe('');
  });
});
