/**
 * The baton binary's exit codes: 2 for every configuration or usage error, with a message;
 * 0 for --help and --version.
 */
import { runBaton } from './support/sidecar-process';

describe('baton exit codes', () => {
  test.each([
    ['an unknown flag', ['sidecar', '--no-such-flag'], {}, /unknown option '--no-such-flag'/],
    ['a flag without its value', ['sidecar', '--api-listen'], {}, /argument missing/],
    ['an unknown command', ['frobnicate'], {}, /unknown command/],
    ['a malformed BATON_CLUSTER_KEY', ['sidecar'], { BATON_CLUSTER_KEY: 'c2hvcnQ=' }, /BATON_CLUSTER_KEY \(or --cluster-key-file\): line 1 decodes to 5 bytes/],
    // Options not given take the preset's value, and one given as a flag or variable wins over it.
    ['a --dead-after-ms under --preset local\'s suspect-after', ['sidecar', '--preset', 'local', '--dead-after-ms', '400'], {}, /--dead-after-ms \(400\) must be greater than --suspect-after-ms \(500, from --preset local\)/],
    ['a BATON_SUSPECT_AFTER_MS over BATON_PRESET wan\'s dead-after', ['sidecar'], { BATON_PRESET: 'wan', BATON_SUSPECT_AFTER_MS: '20000' }, /--dead-after-ms \(10000, from --preset wan\) must be greater than --suspect-after-ms \(20000\)/],
    ['an unknown BATON_PRESET', ['sidecar'], { BATON_PRESET: 'moon' }, /invalid --preset \(BATON_PRESET\) "moon": use one of lan, local, wan/],
  ])('%s exits 2 with a message', async (_what, args, env, message) => {
    const run = await runBaton(args, env);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(message);
  });

  test('--help and --version exit 0', async () => {
    expect((await runBaton(['sidecar', '--help'])).code).toBe(0);
    expect((await runBaton(['--version'])).code).toBe(0);
  });
});
