/**
 * Scenario files against real sidecars on loopback (test/support/scenario-process-backend.ts):
 * the same story the simulator runs must have the same outcome with real processes, the
 * real session API and real UDP and gRPC between them. The outcome lines of the transcript
 * (everything but the `~` details: virtual time, counters) must equal the golden's the
 * simulation wrote, and every expect must hold.
 *
 * Stories that lose or cut datagrams cannot run here (loopback has no loss; the backend
 * refuses such commands loudly); a test below proves that refusal.
 */
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { parseScenario } from './support/scenario-parser';
import { outcomeLines, runScenario } from './support/scenario-runner';
import { ProcessBackend } from './support/scenario-process-backend';

const DIR = path.join(__dirname, 'scenarios');

/** The stories whose every command real processes on loopback can carry out. */
const ON_PROCESSES = ['owner-crash-and-resume', 'restart-new-incarnation', 'joiner-state-transfer'];

jest.setTimeout(120_000);

describe.each(ON_PROCESSES)('%s', (name) => {
  test('real sidecars reach the outcome the simulation recorded in the golden', async () => {
    const commands = parseScenario(readFileSync(path.join(DIR, `${name}.scenario`), 'utf8'));
    const backend = new ProcessBackend();
    let result;
    try {
      result = await runScenario(commands, backend);
    } catch (err) {
      throw new Error(`${(err as Error).message}\nlogs:\n${backend.logTail()}`, { cause: err });
    }
    expect(result.failures).toEqual([]);
    const golden = readFileSync(path.join(DIR, `${name}.golden`), 'utf8').trimEnd().split('\n');
    expect(outcomeLines(result.transcript)).toEqual(outcomeLines(golden));
  });
});

test('a command real processes on loopback cannot carry out fails the run, naming its line', async () => {
  const commands = parseScenario('nodes a b\nwrite a s1 basket=x\ndrop 10% a->b');
  await expect(runScenario(commands, new ProcessBackend())).rejects.toThrow(/^line 3: drop 10% a->b: the process backend cannot lose datagrams on loopback/);
});
