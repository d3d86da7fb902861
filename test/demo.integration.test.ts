/**
 * `baton demo` end to end, as a user runs it: the compiled CLI starts three nodes and the
 * shop, kills the node serving the customer, and must report the session recovered on
 * another node, exit 0, and leave no node running.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { BATON_BIN } from './support/sidecar-process';

jest.setTimeout(90_000);

// The demo bounds itself within a minute; this only guards against a hung process.
const KILL_AFTER_MS = 80_000;

let demo: ChildProcess | undefined;

afterAll(() => {
  if (demo !== undefined && demo.exitCode === null && demo.signalCode === null) demo.kill('SIGKILL');
});

function runDemo(): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BATON_BIN, 'demo'], { stdio: ['ignore', 'pipe', 'pipe'] });
    demo = child;
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), KILL_AFTER_MS);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('baton demo', () => {
  it('recovers the session on another node after SIGKILL, exits 0 and stops its nodes', async () => {
    const { code, stdout, stderr } = await runDemo();
    // The whole transcript says which step went wrong.
    if (code !== 0) throw new Error(`baton demo exited with ${code}:\n${stdout}\n${stderr}`);

    const [before, after] = stdout.split(/^\d+\. SIGKILL shop-node-0 .*$/m);
    expect(after).toBeDefined();
    expect(before).toMatch(/^\d+\. alice logs in on pod 0 \(baton shop-node-0\)/m);

    // The recovered session, as pod 1 got it from its own baton node.
    expect(after).toMatch(/^\d+\. alice's next request goes to pod 1 \(baton shop-node-1\): GET \/cart -> the recovered session:$/m);
    const recovered = after!.split(/^\d+\. alice adds/m)[0]!;
    expect(recovered).toMatch(/user alice,/);
    expect(recovered).toMatch(/1 x Desk lamp\s+LAMP-1\s+29\.99 EUR/);
    expect(recovered).toMatch(/2 x Coffee mug\s+MUG-2\s+25\.00 EUR/);
    expect(recovered).toMatch(/owner moved to shop-node-1|the owner is still/);
    expect(after).toMatch(/3 x Notebook\s+BOOK-3\s+14\.97 EUR/);
    expect(after).toMatch(/total\s+69\.96 EUR/);
    expect(stdout.trimEnd().split('\n').pop()).toMatch(/^PASS: /);

    // Every node the demo started is gone.
    const pids = [...stdout.matchAll(/started shop-node-\d {2}pid (\d+)/g)].map((m) => Number(m[1]));
    expect(pids).toHaveLength(3);
    expect(pids.filter(isRunning)).toEqual([]);
  });
});
