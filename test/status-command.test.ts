/**
 * `baton status` without a node: the health verdict, the table, the JSON and the option
 * checks are pure functions of a StatusResponse; runStatus against an address with nothing
 * listening (a Unix socket path that does not exist) answers exit 1 and names the address.
 */
import { ConfigError } from '../src/wire/errors';
import type { Member, StatusResponse } from '../src/gen/baton/v1/cluster';
import { formatBytes, formatDuration, formatJson, formatTable, judge, parseTimeoutMs, runStatus, statusTarget } from '../sidecar/cli/status-command';

const NOW = 1_800_000_000_000;

function member(nodeId: string, port: number, state: string, extra: Partial<Member> = {}): Member {
  return { nodeId, address: `127.0.0.1:${port}`, state, isSelf: false, replicationLagSeqs: 0n, role: 'edge', coordinator: false, masteredPartitions: [], ...extra };
}

function status(members: Member[], extra: Partial<StatusResponse> = {}): StatusResponse {
  return {
    nodeId: 'a',
    sessions: 1234n,
    parts: 5000n,
    bytes: 3n * 1024n * 1024n + 512n * 1024n,
    members,
    maxBytes: 512n * 1024n * 1024n,
    partitions: 256,
    version: '0.1.0',
    startedAtUnixMs: BigInt(NOW - (2 * 3600 + 5 * 60 + 7) * 1000),
    tombstones: 17n,
    configMismatches: [],
    role: 'edge',
    multicastGroups: [],
    coordinatorNodeId: 'a',
    viewId: 3n,
    quorum: 0,
    membersHeard: 3,
    ...extra,
  };
}

const ALL_ALIVE = [
  member('a', 7001, 'alive', { isSelf: true }),
  member('b', 7002, 'alive', { replicationLagSeqs: 3n }),
  member('c', 7003, 'alive'),
];
const SERVING = { status: 'SERVING' };

describe('the health verdict', () => {
  test('every member alive and the node serving is healthy', () => {
    expect(judge(status(ALL_ALIVE), SERVING)).toEqual({ healthy: true, problems: [] });
  });

  test('a member that left (drained) is not a fault', () => {
    expect(judge(status([...ALL_ALIVE.slice(0, 2), member('c', 7003, 'left')]), SERVING).healthy).toBe(true);
  });

  test('suspect and dead members are named with their addresses', () => {
    const verdict = judge(status([ALL_ALIVE[0]!, member('b', 7002, 'suspect'), member('c', 7003, 'dead')]), SERVING);
    expect(verdict).toEqual({ healthy: false, problems: ['b (127.0.0.1:7002) is suspect', 'c (127.0.0.1:7003) is dead'] });
  });

  test('a configured peer never heard from is named by its address', () => {
    const verdict = judge(status([ALL_ALIVE[0]!, member('', 7009, 'dead')]), SERVING);
    expect(verdict.problems).toEqual(['peer 127.0.0.1:7009 (never heard from) is dead']);
  });

  test('a node that is not serving (draining) is unhealthy even with every member alive', () => {
    const verdict = judge(status(ALL_ALIVE), { status: 'NOT_SERVING' });
    expect(verdict.healthy).toBe(false);
    expect(verdict.problems).toEqual(['node a is not serving (gRPC health NOT_SERVING: draining or stopping)']);
  });

  test('a node without its quorum is unhealthy and says how many members it hears', () => {
    expect(judge(status(ALL_ALIVE, { quorum: 2, membersHeard: 3 }), SERVING).healthy).toBe(true);
    const verdict = judge(status([ALL_ALIVE[0]!, member('b', 7002, 'alive'), member('c', 7003, 'alive')], { quorum: 3, membersHeard: 2 }), SERVING);
    expect(verdict).toEqual({ healthy: false, problems: ['node a has no quorum: it hears 2 of the 3 members --quorum asks for, and refuses writes and claims'] });
  });

  test('a health check that failed is unhealthy and says why', () => {
    const verdict = judge(status(ALL_ALIVE), { error: 'deadline exceeded' });
    expect(verdict).toEqual({ healthy: false, problems: ['node a did not answer its health check (deadline exceeded)'] });
  });
});

describe('the table', () => {
  test('a summary line for the node, then one aligned row per member', () => {
    const members = [
      { ...ALL_ALIVE[0]!, index: 0, coordinator: true, masteredPartitions: [1, 4, 9] },
      member('b', 7002, 'alive', { replicationLagSeqs: 3n, role: 'store', index: 1 }),
      member('', 17003, 'dead', { replicationLagSeqs: 42n, role: '' }),
    ];
    const table = formatTable(status(members, { multicastGroups: ['239.1.2.3', '239.1.2.4'] }), NOW);
    expect(table.split('\n')).toEqual([
      'node a: 1234 sessions, 5000 parts, 3.5 MiB of 512 MiB (0.7%), 17 tombstones, 256 partitions; baton 0.1.0, up 2h 5m',
      'coordinator a, view 3; listening on multicast groups 239.1.2.3, 239.1.2.4',
      '',
      'NODE  ADDRESS          STATE  SELF  LAG (SEQS)  ROLE   INDEX            MASTERS',
      'a     127.0.0.1:7001   alive  *     -           edge   0 (coordinator)  3 partitions',
      'b     127.0.0.1:7002   alive        3           store  1                0 partitions',
      '-     127.0.0.1:17003  dead         42          -      -                0 partitions',
      '',
    ]);
  });

  test('with --quorum the second line says how many members the node hears, and when that is too few', () => {
    expect(formatTable(status(ALL_ALIVE, { quorum: 2, membersHeard: 3 }), NOW).split('\n')[1]).toBe('coordinator a, view 3; quorum 2: 3 heard');
    expect(formatTable(status(ALL_ALIVE, { quorum: 3, membersHeard: 1 }), NOW).split('\n')[1]).toBe('coordinator a, view 3; quorum 3: 1 heard (NO QUORUM: writes and claims refused)');
  });

  test('before the first view the line says placement follows the node itself', () => {
    expect(formatTable(status(ALL_ALIVE, { viewId: 0n, coordinatorNodeId: '' }), NOW).split('\n')[1]).toBe("coordinator none, no view yet (placement follows this node's failure detector)");
  });

  test('without a memory budget the bytes stand alone', () => {
    expect(formatTable(status(ALL_ALIVE, { maxBytes: 0n, bytes: 100n }), NOW)).toContain(', 100 B (no budget),');
  });

  test('byte sizes and durations read as an operator expects', () => {
    expect([0n, 1023n, 1024n, 1536n, 10n * 1024n ** 3n].map(formatBytes)).toEqual(['0 B', '1023 B', '1 KiB', '1.5 KiB', '10 GiB']);
    expect([-5000, 0, 45_000, 125_000, 3_600_000, 90_061_000].map(formatDuration)).toEqual(['0s', '0s', '45s', '2m 5s', '1h 0m', '1d 1h']);
  });
});

describe('the JSON', () => {
  test('every field under its proto3 JSON name, 64-bit counts as numbers', () => {
    const response = status(ALL_ALIVE);
    expect(JSON.parse(formatJson(response))).toEqual({
      nodeId: 'a',
      sessions: 1234,
      parts: 5000,
      bytes: 3670016,
      members: [
        { nodeId: 'a', address: '127.0.0.1:7001', state: 'alive', isSelf: true, replicationLagSeqs: 0, role: 'edge', coordinator: false, masteredPartitions: [] },
        { nodeId: 'b', address: '127.0.0.1:7002', state: 'alive', isSelf: false, replicationLagSeqs: 3, role: 'edge', coordinator: false, masteredPartitions: [] },
        { nodeId: 'c', address: '127.0.0.1:7003', state: 'alive', isSelf: false, replicationLagSeqs: 0, role: 'edge', coordinator: false, masteredPartitions: [] },
      ],
      maxBytes: 536870912,
      partitions: 256,
      version: '0.1.0',
      startedAtUnixMs: NOW - 7_507_000,
      tombstones: 17,
      configMismatches: [],
      role: 'edge',
      multicastGroups: [],
      coordinatorNodeId: 'a',
      viewId: 3,
      quorum: 0,
      membersHeard: 3,
    });
  });

  test('a count beyond 2^53 is written with every digit, and the layout is JSON.stringify\'s', () => {
    const text = formatJson(status([], { bytes: 18446744073709551615n }));
    expect(text).toContain('"bytes": 18446744073709551615,');
    expect(text).toContain('"members": [],');
    const plain = status([member('b', 7002, 'alive')], { nodeId: 'a "quoted" \\ id' });
    const asNumbers = JSON.parse(JSON.stringify(plain, (_k, v: unknown) => (typeof v === 'bigint' ? Number(v) : v)));
    expect(formatJson(plain)).toBe(`${JSON.stringify(asNumbers, null, 2)}\n`);
  });
});

describe('options', () => {
  test.each([
    ['127.0.0.1:7400', '127.0.0.1:7400'],
    ['localhost:7400', 'localhost:7400'],
    ['0.0.0.0:7400', '127.0.0.1:7400'],
    ['[::]:7400', '[::1]:7400'],
    ['[::1]:7400', '[::1]:7400'],
    ['unix:/run/baton/api.sock', 'unix:/run/baton/api.sock'],
  ])('--api %s asks %s', (api, target) => {
    expect(statusTarget(api)).toBe(target);
  });

  test.each([
    ['7400', /invalid --api \(or BATON_API_LISTEN\) "7400": expected host:port/],
    ['host', /expected host:port/],
    ['127.0.0.1:0', /port 0 is not an address to ask/],
  ])('--api %s is a usage error naming the flag and the variable', (api, message) => {
    expect(() => statusTarget(api)).toThrow(ConfigError);
    expect(() => statusTarget(api)).toThrow(message);
  });

  test.each(['0', '-1', 'abc', '1.5', '600001'])('--timeout-ms %s is a usage error', (value) => {
    expect(() => parseTimeoutMs(value)).toThrow(/invalid --timeout-ms/);
  });

  test('--timeout-ms takes whole milliseconds', () => {
    expect(parseTimeoutMs('3000')).toBe(3000);
  });
});

describe('runStatus without a node', () => {
  test('nothing at the address: exit 1, nothing on stdout, one line naming the address and the flag', async () => {
    const out: string[] = [];
    const err: string[] = [];
    const api = `unix:/tmp/baton-status-test-${process.pid}-absent.sock`;
    const code = await runStatus({ api, timeoutMs: '2000' }, { stdout: (t) => out.push(t), stderr: (t) => err.push(t), now: () => NOW });
    expect(code).toBe(1);
    expect(out).toEqual([]);
    expect(err).toHaveLength(1);
    expect(err[0]).toMatch(new RegExp(`^baton: cannot get the status from the baton API at ${api} \\(set by --api or BATON_API_LISTEN\\): connect ENOENT`));
  });

  test('a bad option throws before anything is asked', async () => {
    await expect(runStatus({ api: 'nope', timeoutMs: '3000' })).rejects.toThrow(ConfigError);
  });
});

test('a node refused for its configuration makes the verdict unhealthy, naming the settings', () => {
  const refused = { nodeId: 'd', address: '127.0.0.1:7004', settings: ['partitions', 'hash_seed'], lastSeenUnixMs: BigInt(NOW) };
  const verdict = judge(status(ALL_ALIVE, { configMismatches: [refused] }), { status: 'SERVING' });
  expect(verdict).toEqual({ healthy: false, problems: ['d (127.0.0.1:7004) is refused: its configuration differs in partitions, hash_seed'] });
});
