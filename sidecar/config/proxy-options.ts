/**
 * The capture proxy's options (--proxy-listen and what goes with it): part of the
 * sidecar's one option table (config.ts spreads PROXY_OPTIONS into it), kept here so the
 * table stays readable. checkProxyConfig runs once at start-up, after every value parsed:
 * options that only make sense together are checked together, and the TLS files are read
 * and loaded, so a bad certificate is a configuration error (exit 2), not a failure later.
 */
import { isIP } from 'node:net';
import { createSecureContext } from 'node:tls';
import { ConfigError } from '../../src/wire/errors';
import { isCookieName } from '../../src/capture/session-cookie';
import type { Config, ListenAddress, OptionSpec } from './config';
import { bad, envName, parseInteger, parseListen } from './option-parsing';

/** Where the proxy forwards: a web server over HTTP or HTTPS, or over a Unix socket (HTTP). */
export type ProxyUpstream =
  | { kind: 'http' | 'https'; text: string; host: string; port: number }
  | { kind: 'unix'; text: string; path: string };

export interface ProxyConfig {
  /** Where the capture proxy accepts clients: host:port; undefined = no proxy. */
  proxyListen: ListenAddress | undefined;
  /** The web server requests are forwarded to. */
  proxyUpstream: ProxyUpstream | undefined;
  /** Name of the cookie that carries the session id. */
  sessionCookie: string;
  sessionRotateOnLogin: boolean;
  /** PEM certificate (chain) and key the proxy presents; '' = not given. Re-read when they change. */
  tlsCertFile: string;
  tlsKeyFile: string;
  /** PEM roots client certificates must chain to (mTLS); '' = no client certificates. */
  tlsClientCaFile: string;
  /** Make a self-signed certificate at start (development only). */
  tlsSelfSigned: boolean;
  /** Time a client has to send a request's headers, in ms. */
  proxyHeaderTimeoutMs: number;
  /** An idle client connection (nothing in flight) is closed after this long, in ms. */
  proxyIdleTimeoutMs: number;
  /** Time the web server has to start its answer (connect included), in ms; then 504. */
  proxyUpstreamTimeoutMs: number;
  /** Largest request header block accepted, in bytes; beyond it 431. */
  proxyMaxHeaderBytes: number;
  /** Largest request body forwarded, in bytes (from --proxy-max-body-mb); 0 = no limit. */
  proxyMaxBodyBytes: number;
  /** How often each client connection's TCP state is sampled into its session's `tcp` part, in ms; 0 = off. */
  tcpCaptureIntervalMs: number;
  /**
   * Bytes the in-flight log may hold (from --replay-buffer-mb): requests forwarded and not yet
   * answered, kept for re-injection into a peer if the web server fails; 0 = no re-injection.
   */
  replayBufferBytes: number;
  /** On SIGTERM, hand idle plain-HTTP client connections to a peer (TCP_REPAIR; CAP_NET_ADMIN). */
  tcpHandover: boolean;
  /** The client-facing address that moves between nodes (an IP); '' = not given. */
  virtualAddress: string;
  /** Shell command that moves --virtual-address to the peer during a handover; '' = moved by other means. */
  handoverHook: string;
  /** Time the hook has to finish, in ms; then it is killed and the handover called off. */
  handoverHookTimeoutMs: number;
}

function parseUpstream(value: string, flag: string): ProxyUpstream | undefined {
  if (value === '') return undefined;
  if (value.startsWith('unix:')) {
    const path = value.slice('unix:'.length);
    if (path === '') throw bad(flag, value, 'expected unix:/path/to/socket');
    return { kind: 'unix', text: value, path };
  }
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw bad(flag, value, 'expected http://host:port, https://host:port or unix:/path');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw bad(flag, value, 'expected http://, https:// or unix:');
  if ((url.pathname !== '/' && url.pathname !== '') || url.search !== '' || url.username !== '' || url.password !== '') {
    throw bad(flag, value, 'give the web server as scheme://host:port, without a path, query or credentials');
  }
  const kind = url.protocol === 'https:' ? 'https' : 'http';
  const port = url.port === '' ? (kind === 'https' ? 443 : 80) : Number(url.port);
  return { kind, text: value, host: url.hostname.replace(/^\[|\]$/g, ''), port };
}

const timeout = (flag: string, key: keyof ProxyConfig, description: string, fallback: number): OptionSpec => ({
  flag,
  key,
  valueName: 'ms',
  description,
  default: () => String(fallback),
  parse: (v, f) => parseInteger(v, f, 100, 3_600_000),
});

export const PROXY_OPTIONS: readonly OptionSpec[] = [
  {
    flag: 'proxy-listen',
    key: 'proxyListen',
    valueName: 'addr',
    description: 'capture proxy: accept clients on host:port and forward to --proxy-upstream (TLS with --tls-cert-file/--tls-key-file or --tls-self-signed); empty = off',
    default: () => '',
    parse: (v, flag) => (v === '' ? undefined : parseListen(v, flag, false)),
  },
  {
    flag: 'proxy-upstream',
    key: 'proxyUpstream',
    valueName: 'url',
    description: 'the web server the proxy forwards to: http://host:port, https://host:port or unix:/path',
    default: () => '',
    parse: parseUpstream,
  },
  {
    flag: 'session-cookie',
    key: 'sessionCookie',
    valueName: 'name',
    description: 'cookie that carries the session id (minted by the proxy when absent)',
    default: () => 'baton_sid',
    parse: (v, flag) => {
      if (!isCookieName(v)) throw bad(flag, v, 'expected a cookie name (letters, digits and !#$%&\'*+-.^_`|~, at most 128)');
      return v;
    },
  },
  {
    flag: 'session-rotate-on-login',
    key: 'sessionRotateOnLogin',
    valueName: 'bool',
    description: "a login to a new subject gives the session a new id (the old id keeps the pre-login session for 60 s); false for web servers that key their own state by baton's session id",
    default: () => 'true',
    parse: (v, flag) => {
      if (!['true', 'false', '1', '0'].includes(v)) throw bad(flag, v, 'expected true or false');
      return v === 'true' || v === '1';
    },
  },
  { flag: 'tls-cert-file', key: 'tlsCertFile', valueName: 'path', description: 'PEM certificate (chain) the proxy presents; re-read when the file changes', default: () => '', parse: (v) => v },
  { flag: 'tls-key-file', key: 'tlsKeyFile', valueName: 'path', description: 'PEM private key of --tls-cert-file; re-read when the file changes', default: () => '', parse: (v) => v },
  {
    flag: 'tls-client-ca-file',
    key: 'tlsClientCaFile',
    valueName: 'path',
    description: 'mTLS: PEM roots client certificates must chain to; clients without a valid certificate are refused, and the subject goes to the web server as x-baton-client-cert-subject',
    default: () => '',
    parse: (v) => v,
  },
  {
    flag: 'tls-self-signed',
    key: 'tlsSelfSigned',
    valueName: undefined,
    description: "the proxy makes itself a self-signed certificate for this node's names at start (development only; logged as a warning)",
    default: () => 'false',
    parse: parseFlag,
  },
  timeout('proxy-header-timeout-ms', 'proxyHeaderTimeoutMs', "time a client has to send a request's headers; then 408 and the connection closes", 20_000),
  timeout('proxy-idle-timeout-ms', 'proxyIdleTimeoutMs', 'a client connection with nothing in flight is closed after this long (keep-alive and HTTP/2)', 60_000),
  timeout('proxy-upstream-timeout-ms', 'proxyUpstreamTimeoutMs', 'time the web server has to start its answer, connecting included; then 504', 60_000),
  {
    flag: 'proxy-max-header-bytes',
    key: 'proxyMaxHeaderBytes',
    valueName: 'bytes',
    description: 'largest request header block the proxy accepts (431 beyond it)',
    default: () => '16384',
    parse: (v, flag) => parseInteger(v, flag, 1024, 1024 * 1024),
  },
  {
    flag: 'proxy-max-body-mb',
    key: 'proxyMaxBodyBytes',
    valueName: 'MiB',
    description: 'largest request body the proxy forwards (413 beyond it; 0 = no limit)',
    default: () => '100',
    parse: (v, flag) => parseInteger(v, flag, 0, 1 << 20) * 1024 * 1024,
  },
  {
    flag: 'tcp-capture-interval-ms',
    key: 'tcpCaptureIntervalMs',
    valueName: 'ms',
    description: "how often the proxy samples each client connection's TCP state into its session's tcp part (written only when it changed; exact sequence positions need CAP_NET_ADMIN); 0 = off",
    default: () => '1000',
    parse: (v, flag) => {
      const ms = parseInteger(v, flag, 0, 3_600_000);
      // Below 10 ms the sampling would cost more than the state is worth.
      if (ms > 0 && ms < 10) throw bad(flag, v, 'expected 0 (off) or 10 to 3600000');
      return ms;
    },
  },
  {
    flag: 'replay-buffer-mb',
    key: 'replayBufferBytes',
    valueName: 'MiB',
    description:
      'in-flight log for re-injection: requests forwarded and not yet answered, kept (up to this much in all, 1 MiB each) so that one safe to repeat goes to a peer if the web server fails; 0 = off',
    default: () => '16',
    parse: (v, flag) => parseInteger(v, flag, 0, 4096) * 1024 * 1024,
  },
  {
    flag: 'tcp-handover',
    key: 'tcpHandover',
    valueName: undefined,
    description:
      "on SIGTERM, the proxy's idle plain-HTTP client connections move live to a peer with their sessions (Linux TCP_REPAIR: needs CAP_NET_ADMIN, koffi, and --virtual-address that can move between hosts; see docs/continuity.md)",
    default: () => 'false',
    parse: parseFlag,
  },
  {
    flag: 'virtual-address',
    key: 'virtualAddress',
    valueName: 'ip',
    description: 'the address clients reach the proxy on, which a handover moves to the peer (configured on every node; with --tcp-handover)',
    default: () => '',
    parse: (v, flag) => {
      if (v !== '' && isIP(v) === 0) throw bad(flag, v, 'expected an IPv4 or IPv6 address');
      return v;
    },
  },
  {
    flag: 'handover-hook',
    key: 'handoverHook',
    valueName: 'command',
    description: 'shell command run during a handover to move --virtual-address to the peer (BATON_HANDOVER_PEER and BATON_HANDOVER_PEER_ADDRESS name it); empty = moved by other means',
    default: () => '',
    parse: (v) => v,
  },
  {
    flag: 'handover-hook-timeout-ms',
    key: 'handoverHookTimeoutMs',
    valueName: 'ms',
    description: 'time --handover-hook has to finish; then it is killed and the connections stay (and drain) here',
    default: () => '5000',
    parse: (v, flag) => parseInteger(v, flag, 100, 600_000),
  },
];

function parseFlag(v: string, flag: string): boolean {
  if (!['true', 'false', '1', '0', ''].includes(v)) throw bad(flag, v, 'expected true or false');
  return v === 'true' || v === '1' || v === '';
}

function named(flag: string): string {
  return `--${flag} (${envName(flag)})`;
}

/** Cross-checks the proxy's options and loads its TLS files once; throws ConfigError. */
export function checkProxyConfig(config: Config, readFile: (path: string) => string): void {
  const tlsGiven = [config.tlsCertFile, config.tlsKeyFile, config.tlsClientCaFile].some((p) => p !== '') || config.tlsSelfSigned;
  checkHandoverConfig(config, tlsGiven);
  if (config.proxyListen === undefined) {
    if (config.proxyUpstream !== undefined || tlsGiven) {
      throw new ConfigError(`${named('proxy-upstream')} and the --tls-* options belong to the capture proxy: set ${named('proxy-listen')} too`);
    }
    return;
  }
  if (config.proxyUpstream === undefined) throw new ConfigError(`${named('proxy-listen')} needs ${named('proxy-upstream')}: the web server to forward to`);
  if ((config.tlsCertFile === '') !== (config.tlsKeyFile === '')) {
    throw new ConfigError(`${named('tls-cert-file')} and ${named('tls-key-file')} go together`);
  }
  if (config.tlsSelfSigned && config.tlsCertFile !== '') {
    throw new ConfigError(`${named('tls-self-signed')} and ${named('tls-cert-file')} exclude each other`);
  }
  if (config.tlsClientCaFile !== '' && config.tlsCertFile === '' && !config.tlsSelfSigned) {
    throw new ConfigError(`${named('tls-client-ca-file')} needs TLS: set ${named('tls-cert-file')} and ${named('tls-key-file')}`);
  }
  const read = (flag: string, path: string) => {
    try {
      return readFile(path);
    } catch (err) {
      throw new ConfigError(`cannot read ${named(flag)} ${JSON.stringify(path)}: ${(err as Error).message}`);
    }
  };
  const ca = config.tlsClientCaFile === '' ? undefined : read('tls-client-ca-file', config.tlsClientCaFile);
  if (config.tlsCertFile !== '') {
    const cert = read('tls-cert-file', config.tlsCertFile);
    const key = read('tls-key-file', config.tlsKeyFile);
    try {
      createSecureContext({ cert, key });
    } catch (err) {
      throw new ConfigError(`${named('tls-cert-file')} and ${named('tls-key-file')} do not load as a PEM certificate and its key: ${(err as Error).message}`);
    }
  }
  if (ca !== undefined) {
    try {
      createSecureContext({ ca });
    } catch (err) {
      throw new ConfigError(`${named('tls-client-ca-file')} does not load as PEM certificates: ${(err as Error).message}`);
    }
    if (!ca.includes('-----BEGIN CERTIFICATE-----')) throw new ConfigError(`${named('tls-client-ca-file')} holds no PEM certificate`);
  }
}

/**
 * --tcp-handover's companions. Whether this process may use TCP_REPAIR at all (koffi,
 * CAP_NET_ADMIN) is checked when the node starts (sidecar/capture/tcp-handover.ts), so a
 * node that cannot hand over refuses to start rather than failing at drain time.
 */
function checkHandoverConfig(config: Config, tlsGiven: boolean): void {
  const companions = config.virtualAddress !== '' || config.handoverHook !== '';
  if (!config.tcpHandover) {
    if (companions) throw new ConfigError(`${named('virtual-address')} and ${named('handover-hook')} belong to ${named('tcp-handover')}: set it too`);
    return;
  }
  if (config.proxyListen === undefined) throw new ConfigError(`${named('tcp-handover')} moves the capture proxy's connections: set ${named('proxy-listen')}`);
  if (tlsGiven) {
    throw new ConfigError(
      `${named('tcp-handover')} moves plain-HTTP connections only (TLS terminated in the proxy cannot move): run the proxy without the --tls-* options, behind a TLS-terminating ingress`,
    );
  }
  if (config.virtualAddress === '') throw new ConfigError(`${named('tcp-handover')} needs ${named('virtual-address')}: the address clients reach the proxy on`);
  const host = config.proxyListen.host;
  if (host !== undefined && host !== '' && host !== '0.0.0.0' && host !== '::' && host !== config.virtualAddress) {
    throw new ConfigError(`${named('proxy-listen')} ${config.proxyListen.text} does not accept ${named('virtual-address')} ${config.virtualAddress}: listen on it or on 0.0.0.0`);
  }
}
