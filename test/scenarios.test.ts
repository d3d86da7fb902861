/**
 * Scenario files (test/scenarios/*.scenario, the language in test/scenarios/README.md) run
 * in simulation, each compared with its golden transcript (<name>.golden). UPDATE_GOLDEN=1
 * rewrites the goldens instead of comparing (then read the diff before committing it).
 *
 * A scenario fails on any difference from its golden, on any expect that does not hold
 * (named by line), and on any command that cannot run.
 */
import { readdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import * as path from 'node:path';
import { parseScenario } from './support/scenario-parser';
import { runScenario } from './support/scenario-runner';
import { SimBackend } from './support/scenario-sim-backend';

const DIR = path.join(__dirname, 'scenarios');
const UPDATE = process.env.UPDATE_GOLDEN === '1';
const files = readdirSync(DIR).filter((f) => f.endsWith('.scenario')).sort();

test('there are scenario files to run', () => {
  expect(files.length).toBeGreaterThanOrEqual(6);
});

describe.each(files)('%s', (file) => {
  test('runs in simulation: every expect holds and the transcript matches its golden', async () => {
    const name = file.replace(/\.scenario$/, '');
    const commands = parseScenario(readFileSync(path.join(DIR, file), 'utf8'));
    const { transcript, failures } = await runScenario(commands, new SimBackend());
    const text = transcript.join('\n') + '\n';
    const golden = path.join(DIR, `${name}.golden`);
    if (UPDATE) writeFileSync(golden, text);
    expect(failures).toEqual([]);
    if (!existsSync(golden)) throw new Error(`${golden} is missing: run with UPDATE_GOLDEN=1 to write it`);
    expect(text).toBe(readFileSync(golden, 'utf8'));
  });
});
