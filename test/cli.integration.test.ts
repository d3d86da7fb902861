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
