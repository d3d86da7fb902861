#!/usr/bin/env node
/**
 * The `baton` command line. `baton sidecar` runs a node; every option is also read from
 * its BATON_* environment variable. Bad options and unusable addresses end the process
 * with one line naming the option and a non-zero exit code. `baton status` shows the
 * cluster as one node sees it. `baton demo` shows a session surviving the death of the
 * node serving it; `baton demo-shop` serves that demo's shop beside one node (the Helm
 * chart's example), and `baton check` writes, reads and deletes a throw-away session (helm test).
 */
import { setLogger, setLogVerbosity, logVerbosity } from '@grpc/grpc-js';
import { Command, Option } from 'commander';
import { ConfigError } from '../../src/wire/errors';
import { parseClusterKeys } from '../../src/wire/cluster-key';
import { adoptClusterSettings } from '../transport/config-from-peers';
import { envName, type NetworkTimings, parseConfig, presetDefaultText, SIDECAR_OPTIONS } from '../config/config';
import { runDemo } from '../demo/demo';
import { runShop, type ShopOptions } from '../demo/shop-command';
import { runCheck, type CheckOptions } from './check-command';
import { createLogger } from '../config/logger';
import { BatonNode, ListenError } from '../node';
import { VERSION } from '../config/package-root';
import { DEFAULT_STATUS_API, DEFAULT_STATUS_TIMEOUT_MS, runStatus, STATUS_API_ENV, type StatusOptions } from './status-command';

const EXIT_CONFIG = 2;
const EXIT_LISTEN = 1;

function sidecarCommand(): Command {
  const command = new Command('sidecar').description('run a baton node beside a web server');
  for (const spec of SIDECAR_OPTIONS) {
    const option =
      spec.valueName === undefined
        ? new Option(`--${spec.flag}`, spec.description)
        : new Option(`--${spec.flag} <${spec.valueName}>`, spec.description).default(
            spec.default(),
            spec.fromPreset === true ? presetDefaultText(spec.key as keyof NetworkTimings) : undefined,
          );
    command.addOption(option.env(envName(spec.flag)));
  }
  command.action(async (options: Record<string, string>) => {
    // Only what was given (flag or variable): parseConfig fills in the defaults, and an
    // option given explicitly must win over --preset while its default must not.
    const values: Record<string, string> = {};
    for (const spec of SIDECAR_OPTIONS) {
      const value = options[camel(spec.flag)] as string | boolean | undefined;
      if (value !== undefined && command.getOptionValueSource(camel(spec.flag)) !== 'default') values[spec.flag] = String(value);
    }
    await runSidecar(values);
  });
  return command;
}

async function runSidecar(values: Record<string, string>): Promise<void> {
  let config;
  try {
    config = parseConfig(values);
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message, EXIT_CONFIG);
    throw err;
  }
  const log = createLogger(config.logLevel, config.nodeId);
  // grpc-js logs to stderr on its own; baton reports failures itself, so route it to debug.
  setLogger({ error: (...args: unknown[]) => log.debug({ grpc: args.map(String).join(' ') }, 'grpc-js') });
  setLogVerbosity(logVerbosity.ERROR);
  if (config.configFromPeers) {
    try {
      const keys = config.clusterKeys === '' ? undefined : parseClusterKeys(config.clusterKeys, config.clusterKeySource);
      const adopted = await adoptClusterSettings(config, keys);
      config = adopted.config;
      log.info({ ...adopted.adopted }, "adopted the cluster's settings from its peers (--config-from-peers)");
    } catch (err) {
      if (err instanceof ConfigError) fail(err.message, EXIT_CONFIG);
      throw err;
    }
  }
  const node = new BatonNode(config, log);
  try {
    await node.start();
  } catch (err) {
    if (err instanceof ListenError) fail(err.message, EXIT_LISTEN);
    if (err instanceof ConfigError) fail(err.message, EXIT_CONFIG);
    throw err;
  }
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    if (++signals > 1) {
      log.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    log.info({ signal }, 'signal received');
    node.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, 'stop failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}

function demoCommand(): Command {
  return new Command('demo')
    .summary('see a session survive the death of the node serving it')
    .description(
      "start three baton nodes, each a TLS proxy in front of its own pod of a small shop, on localhost; kill the node and pod serving a customer " +
        'with SIGKILL, and show her next request on another pod resume TLS, logged in, with her cart (exit 0 only if all of it holds)',
    )
    .action(async () => {
      process.exit(await runDemo());
    });
}

function demoShopCommand(): Command {
  return new Command('demo-shop')
    .summary("serve the demo's shop beside a baton node (the Helm chart's example)")
    .description('serve the demo shop (POST /login, POST /cart, GET /cart) on --listen, keeping its sessions in the baton node at --api, until SIGTERM')
    .requiredOption('--listen <addr>', 'host:port to serve HTTP on')
    .addOption(new Option('--api <addr>', "the baton node's API address").default(DEFAULT_STATUS_API).env(STATUS_API_ENV))
    .option('--pod <name>', "this pod's name, shown in answers (default: the host name)")
    .option('--behind-proxy', "clients come through baton's capture proxy: login answers x-baton-auth-subject and the user is the request's x-baton-auth-subject")
    .action(async (options: ShopOptions) => {
      let code;
      try {
        code = await runShop(options);
      } catch (err) {
        if (err instanceof ConfigError) fail(err.message, EXIT_CONFIG);
        throw err;
      }
      process.exit(code);
    });
}

function checkCommand(): Command {
  return new Command('check')
    .summary("write, read and delete a throw-away session on one node; exit 1 when that fails")
    .description(
      "a smoke test (helm test runs it): put a random session with --min-replicas secondaries acknowledging it, get it back, delete it; " +
        'exit 0 when all three succeed, 1 otherwise, 2 for a usage error',
    )
    .addOption(new Option('--api <addr>', "the node's API address: host:port, [ipv6]:port or unix:/path").default(DEFAULT_STATUS_API).env(STATUS_API_ENV))
    .option('--min-replicas <n>', 'secondaries that must acknowledge the write', '1')
    .option('--timeout-ms <ms>', 'give up after this long (the write is retried meanwhile)', '30000')
    .action(async (options: CheckOptions) => {
      let code;
      try {
        code = await runCheck(options);
      } catch (err) {
        if (err instanceof ConfigError) fail(err.message, EXIT_CONFIG);
        throw err;
      }
      process.exit(code);
    });
}

function statusCommand(): Command {
  return new Command('status')
    .summary("show the cluster as one node sees it; exit 1 when it is unhealthy")
    .description(
      "ask a node's API for its status and print it with its members, their states and replication lag; " +
        'exit 0 when healthy, 1 when a member is suspect or dead or the node does not answer or is not serving, 2 for a usage error',
    )
    .addOption(new Option('--api <addr>', "the node's API address: host:port, [ipv6]:port or unix:/path").default(DEFAULT_STATUS_API).env(STATUS_API_ENV))
    .option('--json', 'print the status as JSON, for scripts')
    .option('--timeout-ms <ms>', 'give up on a node that has not answered after this long', String(DEFAULT_STATUS_TIMEOUT_MS))
    .action(async (options: StatusOptions) => {
      let code;
      try {
        code = await runStatus(options);
      } catch (err) {
        if (err instanceof ConfigError) fail(err.message, EXIT_CONFIG);
        throw err;
      }
      process.exit(code);
    });
}

/** Thrown from Commander's exit hook: the process ends with `code` once parsing unwinds. */
class UsageExit {
  constructor(readonly code: number) {}
}

function fail(message: string, code: number): never {
  process.stderr.write(`baton: ${message}\n`);
  process.exit(code);
}

function camel(flag: string): string {
  return flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

export function main(argv: string[]): void {
  const program = new Command('baton')
    .description('baton: session-state replication sidecar')
    .version(VERSION)
    .showHelpAfterError()
    .addCommand(sidecarCommand())
    .addCommand(statusCommand())
    .addCommand(checkCommand())
    .addCommand(demoCommand())
    .addCommand(demoShopCommand());
  program.addHelpText('after', () => `\nOptions of 'baton sidecar':\n${sidecarCommand().helpInformation().split('\nOptions:\n')[1] ?? ''}`);
  // Usage errors (an unknown flag, a missing value) are configuration errors: exit 2, as for
  // a bad value. Commander has already printed what was wrong and the help.
  const overrideExit = (command: Command) => {
    command.exitOverride((err) => {
      throw err.exitCode === 0 ? new UsageExit(0) : new UsageExit(EXIT_CONFIG);
    });
    for (const sub of command.commands) overrideExit(sub);
  };
  overrideExit(program);
  program.parseAsync(argv).catch((err: unknown) => {
    if (err instanceof UsageExit) process.exit(err.code);
    process.stderr.write(`baton: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}

if (require.main === module) main(process.argv);
