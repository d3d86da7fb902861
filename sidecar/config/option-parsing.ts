/**
 * The parsers every option's value goes through, and the one shape of their errors: a
 * ConfigError naming the flag, its environment variable and the value. Shared by the
 * option tables (config.ts, proxy-options.ts).
 */
import { ConfigError } from '../../src/wire/errors';
import type { ListenAddress } from './config';

export function envName(flag: string): string {
  return 'BATON_' + flag.toUpperCase().replace(/-/g, '_');
}

export function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

export function bad(flag: string, value: string, hint: string): ConfigError {
  return new ConfigError(`invalid --${flag} (${envName(flag)}) ${JSON.stringify(value)}: ${hint}`);
}

export function parseInteger(value: string, flag: string, min: number, max: number): number {
  if (!/^\d+$/.test(value)) throw bad(flag, value, `expected a whole number from ${min} to ${max}`);
  const n = Number(value);
  if (n < min || n > max) throw bad(flag, value, `expected a whole number from ${min} to ${max}`);
  return n;
}

export function parseListen(value: string, flag: string, allowUnix: boolean): ListenAddress {
  if (value.startsWith('unix:')) {
    if (!allowUnix) throw bad(flag, value, 'expected host:port');
    const path = value.slice('unix:'.length);
    if (path.length === 0) throw bad(flag, value, 'expected unix:/path/to/socket');
    return { text: value, path };
  }
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\[\]]+)):(\d{1,5})$/.exec(value);
  const port = match === null ? NaN : Number(match[3]);
  if (match === null || !(port >= 0 && port <= 65535)) {
    throw bad(flag, value, allowUnix ? 'expected host:port, [ipv6]:port or unix:/path' : 'expected host:port or [ipv6]:port');
  }
  return { text: value, host: match[1] ?? match[2]!, port };
}
