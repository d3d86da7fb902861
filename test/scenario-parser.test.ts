/**
 * The scenario language's parser (test/support/scenario-parser.ts): what each command
 * parses to, and that every bad line is refused with its line number and what was expected.
 */
import { DEFAULT_CONVERGE_WITHIN_MS, parseScenario, ScenarioSyntaxError } from './support/scenario-parser';

function errorOf(text: string): ScenarioSyntaxError {
  try {
    parseScenario(text);
  } catch (err) {
    if (err instanceof ScenarioSyntaxError) return err;
    throw err;
  }
  throw new Error('parsed without an error');
}

describe('parseScenario', () => {
  test('parses every command, skipping comments and blank lines, with line numbers and normalised text', () => {
    const commands = parseScenario(
      [
        '# a story',
        'cluster seed=7 transport=multicast replicas=1 partitions=8',
        '',
        'nodes a b   c   # three pods',
        'write a s1 login=t basket=x,y sync=2',
        'write b s1..s3 basket=',
        'delete a s1 basket',
        'delete a s2',
        'resume b s1',
        'drop 10% a->b',
        'drop 0% a<->c',
        'partition a b | c',
        'heal',
        'advance 1.5s',
        'advance 250ms',
        'converge',
        'converge within 2s',
        'start d',
        'kill a',
        'restart a',
        'drain d',
        'expect b s1 login=t basket=x,y',
        'expect c s1..s2 absent',
        'expect-owner s1 b epoch=2',
        'expect-owner s1..s3 b',
        'expect-acked a s1 2',
        'expect-alive b c b',
        'counters b',
      ].join('\n'),
    );
    const bodies = commands.map(({ line: _line, text: _text, ...body }) => body);
    expect(bodies).toEqual([
      { kind: 'cluster', settings: { seed: 7, transport: 'multicast', replicas: 1, partitions: 8 } },
      { kind: 'nodes', names: ['a', 'b', 'c'] },
      { kind: 'write', node: 'a', sessions: ['s1'], parts: [{ name: 'login', value: 't' }, { name: 'basket', value: 'x,y' }], sync: 2 },
      { kind: 'write', node: 'b', sessions: ['s1', 's2', 's3'], parts: [{ name: 'basket', value: '' }], sync: 0 },
      { kind: 'delete', node: 'a', sessions: ['s1'], parts: ['basket'] },
      { kind: 'delete', node: 'a', sessions: ['s2'], parts: [] },
      { kind: 'resume', node: 'b', sessions: ['s1'] },
      { kind: 'drop', percent: 10, from: 'a', to: 'b', both: false },
      { kind: 'drop', percent: 0, from: 'a', to: 'c', both: true },
      { kind: 'partition', groups: [['a', 'b'], ['c']] },
      { kind: 'heal' },
      { kind: 'advance', ms: 1500 },
      { kind: 'advance', ms: 250 },
      { kind: 'converge', withinMs: DEFAULT_CONVERGE_WITHIN_MS },
      { kind: 'converge', withinMs: 2000 },
      { kind: 'start', name: 'd' },
      { kind: 'kill', name: 'a' },
      { kind: 'restart', name: 'a' },
      { kind: 'drain', name: 'd' },
      { kind: 'expect', node: 'b', sessions: ['s1'], parts: [{ name: 'login', value: 't' }, { name: 'basket', value: 'x,y' }] },
      { kind: 'expect', node: 'c', sessions: ['s1', 's2'], parts: 'absent' },
      { kind: 'expect-owner', sessions: ['s1'], owner: 'b', epoch: 2 },
      { kind: 'expect-owner', sessions: ['s1', 's2', 's3'], owner: 'b', epoch: undefined },
      { kind: 'expect-acked', node: 'a', session: 's1', atLeast: 2 },
      { kind: 'expect-alive', node: 'b', alive: ['b', 'c'] },
      { kind: 'counters', name: 'b' },
    ]);
    expect(commands[1]).toMatchObject({ line: 4, text: 'nodes a b c' });
    expect(commands[2]).toMatchObject({ line: 5 });
  });

  test('the defaults when there is no cluster line', () => {
    const [first] = parseScenario('nodes a');
    expect(first).toEqual({ kind: 'nodes', names: ['a'], line: 1, text: 'nodes a' });
  });

  test.each([
    ['frobnicate a', 2, /unknown command "frobnicate"/],
    ['write a s1', 2, /usage: write NODE SESSIONS PART=VALUE/],
    ['write a s1 basket', 2, /expected PART=VALUE, got "basket"/],
    ['write a s1 Cart=x', 2, /a part name is/],
    ['write a s1 cart=apples', 2, /part cart is typed \(baton.v1.CartState\) and a scenario value is text/],
    ['expect b s1 auth=token', 2, /part auth is typed/],
    ['write a s1 basket=x sync=many', 2, /sync is a whole number/],
    ['write a s1..s0 basket=x', 2, /a session range counts up/],
    ['write a s1..s5000 basket=x', 2, /at most 1000 sessions/],
    ['write a s/1 basket=x', 2, /a session id is/],
    ['drop 10 a->b', 2, /drop needs a percentage/],
    ['drop 101% a->b', 2, /drop needs a percentage/],
    ['drop 10% a=>b', 2, /drop needs a link A->B or A<->B/],
    ['drop 10% a->a', 2, /two different nodes/],
    ['partition a b', 2, /two or more groups/],
    ['partition a | a', 2, /more than one group/],
    ['advance 2', 2, /a duration is a number with ms or s/],
    ['advance 0.5ms', 2, /whole number of milliseconds/],
    ['converge 2s', 2, /usage: converge \[within DURATION\]/],
    ['expect b s1', 2, /usage: expect NODE SESSIONS/],
    ['expect b s1 basket=x basket=y', 2, /a part is named twice/],
    ['expect-owner s1 b epoch=0', 2, /epoch is a whole number from 1/],
    ['expect-owner s1 b 2', 2, /usage: expect-owner/],
    ['expect-acked a s1..s2 1', 2, /names one session/],
    ['kill', 2, /usage: kill NAME/],
    ['kill A', 2, /a node name is/],
    ['kill z', 2, /node z is not started by an earlier nodes or start line/],
    ['start a', 2, /node a was started before: bring it back with restart/],
    ['nodes d', 2, /nodes comes once/],
    ['cluster seed=2', 2, /cluster must come once, before nodes/],
  ])('%j after `nodes a b c` is refused on its line', (line, lineNumber, message) => {
    const err = errorOf(`nodes a b c\n${line}`);
    expect(err.line).toBe(lineNumber);
    expect(err.message).toMatch(/^line 2: /);
    expect(err.message).toMatch(message);
  });

  test('commands before nodes, bad cluster settings and duplicate names are refused on their line', () => {
    expect(errorOf('# intro\n\nwrite a s1 basket=x').message).toMatch(/^line 3: write before any node was started/);
    expect(errorOf('cluster transport=carrier-pigeon\nnodes a').message).toMatch(/^line 1: transport is unicast or multicast/);
    expect(errorOf('cluster colour=blue').message).toMatch(/^line 1: unknown cluster setting "colour"/);
    expect(errorOf('nodes a b a').message).toMatch(/^line 1: node a is named twice/);
    expect(errorOf('nodes a\nstart b\nstart b').message).toMatch(/^line 3: node b was started before/);
  });
});
