/**
 * `baton demo` end to end, as a user runs it: the compiled CLI starts three nodes, each with
 * its capture proxy in front of its own shop pod, kills node 0 and pod 0 (SIGKILL) after the
 * customer logged in and filled a cart there, and must report that the customer's next
 * request on pod 1 resumed the TLS session (Reused, and the shop got x-baton-tls-resumed: 1),
 * arrived logged in (x-baton-auth-subject) and resumed from node 0 (x-baton-resumed-from),
 * with the cart; exit 0, and leave no process running. Stopped early by SIGTERM, it must
 * stop its nodes and pods too.
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

function shopPids(stdout: string): number[] {
  return [...stdout.matchAll(/started shop pod-\d {2}pid (\d+)/g)].map((m) => Number(m[1]));
}

describe('baton demo', () => {
  it('resumes TLS, the login and the cart on pod 1 after node 0 and pod 0 are SIGKILLed, exits 0 and stops every process', async () => {
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

    const [before, after] = stdout.split(/^\d+\. SIGKILL shop-node-0 \(pid \d+, signal SIGKILL\) and pod-0 \(pid \d+, signal SIGKILL\)$/m);
    expect(after).toBeDefined();
    // Pod 0's shop declared the login; the proxy then sent it with every request.
    expect(before).toMatch(/^\d+\. alice logs in through pod 0's proxy \(TLS New, TLSv1\.[23]\) -> pod-0 answered x-baton-auth-subject: alice;/m);
    expect(before).toMatch(/^\d+\. alice adds 2 x Coffee mug on pod-0 \(arrived as x-baton-auth-subject: alice\), write acknowledged by 1 secondary$/m);
    const owned = /^\s+baton: owner shop-node-0, epoch (\d+), cart part written by shop-node-0$/m.exec(before!);
    expect(owned).not.toBeNull();

    // The next request, on pod 1, as the customer's socket and pod 1's shop saw it.
    expect(after).toMatch(/^\d+\. alice's next request goes to pod 1's proxy \(baton shop-node-1\) with the same cookie and TLS session: GET \/cart$/m);
    const recovered = after!.split(/^\d+\. alice adds/m)[0]!;
    expect(recovered).toMatch(/^\s+TLS handshake: Reused, TLSv1\.[23]; pod-1 got x-baton-tls-resumed: 1$/m);
    expect(recovered).toMatch(/^\s+logged in: x-baton-auth-subject: alice$/m);
    expect(recovered).toMatch(/^\s+resumed: x-baton-resumed-from: shop-node-0$/m);
    expect(recovered).toMatch(/user alice,/);
    expect(recovered).toMatch(/1 x Desk lamp\s+LAMP-1\s+29\.99 EUR/);
    expect(recovered).toMatch(/2 x Coffee mug\s+MUG-2\s+25\.00 EUR/);
    const moved = /^\s+owner moved to shop-node-1 \(epoch (\d+)\)$/m.exec(recovered);
    expect(moved).not.toBeNull();
    expect(Number(moved![1])).toBeGreaterThan(Number(owned![1]));
    expect(after).toMatch(/^\d+\. alice adds 3 x Notebook on pod-1, write acknowledged by 1 secondary$/m);
    expect(after).toMatch(/3 x Notebook\s+BOOK-3\s+14\.97 EUR/);
    expect(after).toMatch(/total\s+69\.96 EUR/);
    expect(after).toMatch(/^\s+baton: owner shop-node-1, epoch \d+, cart part written by shop-node-1$/m);
    expect(stdout.trimEnd().split('\n').pop()).toMatch(/^PASS: /);

    // Every process the demo started is gone (leftBehind checked its whole group).
    const pids = [...nodePids(stdout), ...shopPids(stdout)];
    expect(pids).toHaveLength(6);
    expect(pids.filter(isRunning)).toEqual([]);
    expect(stdout).toMatch(/^cleaned up: pod-0 signal SIGKILL, pod-1 code 0, pod-2 code 0; shop-node-0 signal SIGKILL, shop-node-1 code 0, shop-node-2 code 0 /m);
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
    // Stopped before or after it started its pods: whichever it started are stopped too (a
    // pod still starting has no SIGTERM handler yet, and ends by the signal).
    const pod = (i: number) => `pod-${i} (?:code 0|signal SIGTERM)`;
    const pods = `(?:no shop pods started|${pod(0)}(?:, ${pod(1)}(?:, ${pod(2)})?)?)`;
    expect(stdout).toMatch(new RegExp(`^cleaned up: ${pods}; shop-node-0 code 0, shop-node-1 code 0, shop-node-2 code 0 `, 'm'));
    expect(shopPids(stdout).filter(isRunning)).toEqual([]);
    expect(stderr).toBe('');
  });
});
