/**
 * Configuration errors: each is a ConfigError (exit 2 at the CLI) naming the flag and the
 * environment variable to fix. The CLI's exit codes are checked against the real binary.
 */
import { parseConfig } from '../sidecar/config';
import { ConfigError } from '../src/errors';
import { runBaton } from './support/sidecar-process';

const KEY = Buffer.alloc(32, 7).toString('base64');

describe('parseConfig', () => {
  test('a malformed BATON_CLUSTER_KEY is a configuration error naming the variable and the flag', () => {
    const parse = () => parseConfig({}, { BATON_CLUSTER_KEY: 'not-a-key' });
    expect(parse).toThrow(ConfigError);
    expect(parse).toThrow(/BATON_CLUSTER_KEY \(or --cluster-key-file\): line 1 is not valid base64/);
  });

  test('a key file holding a short key is a configuration error naming the flag and file', () => {
    const parse = () => parseConfig({ 'cluster-key-file': '/keys/k' }, {}, () => `${KEY}\n${Buffer.alloc(16).toString('base64')}\n`);
    expect(parse).toThrow(ConfigError);
    expect(parse).toThrow(/--cluster-key-file \/keys\/k: line 2 decodes to 16 bytes/);
  });

  test('a good key passes', () => {
    expect(parseConfig({}, { BATON_CLUSTER_KEY: KEY }).clusterKeys).toBe(KEY);
  });
});

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
