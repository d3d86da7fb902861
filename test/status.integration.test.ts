/**
 * `baton status` (the compiled CLI) against a real three-node cluster on loopback: exit 0
 * and a table naming every member while all are alive, JSON equal to what Status answers,
 * BATON_API_LISTEN as the address when no flag is given, exit 1 naming a member killed with
 * SIGKILL once it is found dead, exit 1 with a message for an address nothing listens on,
 * and exit 2 for usage errors.
 *
 * The tests share one cluster and run in order: the last one kills node c.
 */
import { freePeerPorts } from './support/ports';
import { runBaton } from './support/sidecar-process';
import { FAST_FAILURE_DETECTION, pollUntil, StaticCluster } from './support/static-cluster';

const IDS = ['a', 'b', 'c'];

let cluster: StaticCluster | undefined;

beforeAll(async () => {
  cluster = await StaticCluster.start(IDS, ['--replicas', '2', '--partitions', '16', ...FAST_FAILURE_DETECTION]);
  await cluster.waitForAlive(IDS, 10_000);
  for (let i = 0; i < 10; i++) await cluster.client('a').put(`status-${i}`, { greeting: Buffer.from(`hello ${i}`) }, { minReplicas: 2 });
});

afterAll(async () => {
  await cluster?.stopAll();
  cluster = undefined;
});

function api(id: string): string {
  return cluster!.node(id).process!.apiAddress;
}

/** The table's member rows (after the blank line), split into cells. */
function rows(stdout: string): string[][] {
  const [, table = ''] = stdout.split('\n\n');
  return table.trim().split('\n').slice(1).map((line) => line.split(/\s{2,}/));
}

describe('baton status', () => {
  test('all alive: exit 0, nothing on stderr, a summary line and a row per member', async () => {
    const run = await runBaton(['status', '--api', api('a')]);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    // 10 written and baton's own TLS ticket-key session.
    expect(run.stdout).toMatch(/^node a: 11 sessions, 11 parts, [\d.]+ (B|KiB) of 512 MiB \(0\.0%\), 0 tombstones, 16 partitions; baton \S+, up \d+s\n/);
    const members = rows(run.stdout);
    expect(members.map((r) => [r[0], r[2]])).toEqual([
      ['a', 'alive'],
      ['b', 'alive'],
      ['c', 'alive'],
    ]);
    expect(members[0]![3]).toBe('*');
    for (const id of ['b', 'c']) expect(members.find((r) => r[0] === id)![1]).toBe(`127.0.0.1:${cluster!.node(id).peerPort}`);
  });

  test('--json parses and matches what ClusterService/Status answers', async () => {
    const run = await runBaton(['status', '--json', '--api', api('b')]);
    expect(run.code).toBe(0);
    const printed = JSON.parse(run.stdout) as Record<string, unknown>;
    const direct = await cluster!.status('b');
    // No writes meanwhile: every field holds still between the two calls.
    expect(printed).toEqual(JSON.parse(JSON.stringify(direct, (_k, v: unknown) => (typeof v === 'bigint' ? Number(v) : v))));
    expect(printed.nodeId).toBe('b');
    expect(printed.sessions).toBe(Number(direct.sessions));
  });

  test('with no --api, BATON_API_LISTEN (the sidecar\'s own variable) is the address', async () => {
    const run = await runBaton(['status'], { BATON_API_LISTEN: api('c') });
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^node c: /);
  });

  test('an address with nothing listening: exit 1, one line naming it and the flag', async () => {
    const [port] = await freePeerPorts(1);
    const run = await runBaton(['status', '--api', `127.0.0.1:${port}`]);
    expect(run.code).toBe(1);
    expect(run.stdout).toBe('');
    expect(run.stderr).toBe(
      `baton: cannot get the status from the baton API at 127.0.0.1:${port} (set by --api or BATON_API_LISTEN): ` +
        `nothing is listening there (connect ECONNREFUSED 127.0.0.1:${port})\n`,
    );
  });

  test.each([
    [['--no-such-flag'], {}, /unknown option '--no-such-flag'/],
    [['--api', 'nope'], {}, /^baton: invalid --api \(or BATON_API_LISTEN\) "nope": expected host:port/],
    [[], { BATON_API_LISTEN: '127.0.0.1:0' }, /port 0 is not an address to ask/],
    [['--timeout-ms', 'soon'], {}, /^baton: invalid --timeout-ms "soon"/],
  ])('usage error %j %j: exit 2 with a message', async (args, env, message) => {
    const run = await runBaton(['status', ...args], env);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(message);
  });

  test('after node c is killed and found dead: exit 1 naming it, and its row says dead', async () => {
    const cPort = cluster!.node('c').peerPort;
    await cluster!.kill('c', 'SIGKILL');
    await pollUntil('a sees c dead', async () => (await cluster!.status('a')).members.some((m) => m.nodeId === 'c' && m.state === 'dead'), 10_000);
    const run = await runBaton(['status', '--api', api('a')]);
    expect(run.code).toBe(1);
    expect(run.stderr).toBe(`baton: unhealthy as node a sees it: c (127.0.0.1:${cPort}) is dead\n`);
    expect(rows(run.stdout).find((r) => r[0] === 'c')?.[2]).toBe('dead');
    // --json still prints the status for scripts, and the exit code carries the verdict.
    const json = await runBaton(['status', '--json', '--api', api('b')]);
    expect(json.code).toBe(1);
    expect((JSON.parse(json.stdout) as { members: { nodeId: string; state: string }[] }).members.find((m) => m.nodeId === 'c')?.state).toBe('dead');
  });
});
