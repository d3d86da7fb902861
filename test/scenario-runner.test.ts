/**
 * The scenario runner (test/support/scenario-runner.ts) on the simulation backend: an
 * expect that does not hold fails with its line number and the run goes on; a command
 * that cannot run ends the run naming its line; `~` detail lines are what a comparison
 * across backends leaves out.
 */
import { parseScenario } from './support/scenario-parser';
import { outcomeLines, runScenario, ScenarioError, UnsupportedCommandError } from './support/scenario-runner';
import { SimBackend } from './support/scenario-sim-backend';

test('an expect that does not hold is reported with its line number and what was found, and the story goes on', async () => {
  const script = ['nodes a b', 'write a s1 basket=apples sync=1', 'expect b s1 basket=pears', 'expect-owner s1 b', 'expect b s1 basket=apples', 'expect-alive a a'].join('\n');
  const { transcript, failures } = await runScenario(parseScenario(script), new SimBackend());
  expect(failures).toEqual([
    'line 3: expect b s1 basket=pears: on b: s1 is basket=apples (owner a, epoch 1)',
    'line 4: expect-owner s1 b: s1: a says owner a at epoch 1; s1: b says owner a at epoch 1',
    'line 6: expect-alive a a: a sees a b alive',
  ]);
  expect(transcript).toContain('  FAILED: on b: s1 is basket=apples (owner a, epoch 1)');
  expect(transcript).toContain('  ok: b holds s1 as basket=apples');
});

test('a command on a node that is not running ends the run, naming its line', async () => {
  const run = runScenario(parseScenario('nodes a b\nkill b\n\nwrite b s1 basket=x'), new SimBackend());
  await expect(run).rejects.toThrow(ScenarioError);
  await expect(runScenario(parseScenario('nodes a b\nkill b\n\nwrite b s1 basket=x'), new SimBackend())).rejects.toThrow('line 4: write b s1 basket=x: node b is not running');
});

test('a command the backend cannot do fails loudly with its line, and the backend is closed', async () => {
  const backend = new SimBackend();
  let closed = false;
  backend.drop = async () => {
    throw new UnsupportedCommandError('test', 'drop datagrams');
  };
  backend.close = async () => {
    closed = true;
  };
  await expect(runScenario(parseScenario('nodes a b\ndrop 10% a->b'), backend)).rejects.toThrow('line 2: drop 10% a->b: the test backend cannot drop datagrams');
  expect(closed).toBe(true);
});

test('outcomeLines drops the detail lines only', () => {
  expect(outcomeLines(['> converge', '  converged: a b agree', '  ~ after 8 ms of virtual time', '> advance 1s', '  ~ virtual time 1008 ms'])).toEqual([
    '> converge',
    '  converged: a b agree',
    '> advance 1s',
  ]);
});
