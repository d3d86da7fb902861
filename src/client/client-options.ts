/**
 * What callers pass the client: its options and defaults, each call's options, and the
 * checks and conversions applied to them before anything is sent. Checks throw
 * BatonClientError INVALID_ARGUMENT naming the option, so a bad value fails its own call
 * (or the constructor), never the stream other calls share.
 */
import { status as Status, type ChannelCredentials, type ChannelOptions } from '@grpc/grpc-js';
import type { PutRequest } from '../gen/baton/v1/session';
import { BatonClientError } from './client-errors';
import { bufferView } from '../wire/proto-writer';

export interface BatonClientOptions {
  /** Channel credentials. Default: insecure, as the sidecar listens on localhost or a unix socket. */
  credentials?: ChannelCredentials;
  /** Deadline of each put/get/delete/touch in milliseconds, unless the call gives its own. Default 5000. */
  defaultDeadlineMs?: number;
  /**
   * Most calls waiting to be written to the stream (encoded but not yet handed to gRPC); a call
   * beyond it is rejected with RESOURCE_EXHAUSTED. Default 100000.
   */
  maxQueued?: number;
  /**
   * Largest encoded request in bytes. A larger one is rejected alone (RESOURCE_EXHAUSTED) rather
   * than sent, since the sidecar would end the stream every call shares. Keep it at or below the
   * sidecar's grpc.max_receive_message_length. Default 4 MiB, gRPC's default.
   */
  maxRequestBytes?: number;
  /** grpc-js channel options, applied over DEFAULT_CHANNEL_OPTIONS. */
  channelOptions?: ChannelOptions;
  /** How the Exchange stream is reopened after it failed; see ReconnectOptions. */
  reconnect?: ReconnectOptions;
}

/**
 * Reopening the Exchange stream. The channel's own reconnection (grpc-js, between TCP or unix
 * socket connection attempts) is set by the channel options grpc.initial_reconnect_backoff_ms
 * and grpc.max_reconnect_backoff_ms, which default to the same numbers.
 */
export interface ReconnectOptions {
  /** Wait after a stream failed without answering anything, in ms; doubles with each such failure in a row. Default 50. */
  initialBackoffMs?: number;
  /** Longest wait between two stream attempts, in ms. Default 2000. */
  maxBackoffMs?: number;
  /** Jitter source, uniform in [0, 1). Default Math.random. */
  random?: () => number;
  /** Timer functions for the backoff wait; default the global ones (tests pass virtual time). */
  timers?: ReconnectTimers;
}

export interface ReconnectTimers {
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const DEFAULT_RECONNECT_INITIAL_BACKOFF_MS = 50;
export const DEFAULT_RECONNECT_MAX_BACKOFF_MS = 2000;

export const DEFAULT_DEADLINE_MS = 5000;
export const DEFAULT_MAX_QUEUED = 100_000;
export const DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024;

export const DEFAULT_CHANNEL_OPTIONS: Readonly<ChannelOptions> = {
  // The client never retries (see the header); turning grpc-js retries and channelz off
  // removes their per-call bookkeeping (about 8% faster in the team's measurement).
  'grpc.enable_retries': 0,
  'grpc.enable_channelz': 0,
  // Node's HTTP/2 receive windows are 64 KiB per stream and per connection: one batch of
  // 64 one-KiB answers would stall the sidecar until this client's WINDOW_UPDATE came back.
  'grpc-node.flow_control_window': 1024 * 1024,
  // Find a dead connection under an idle Exchange stream within ~40 s. grpc-js servers
  // accept pings this often; pings only go out while a call is open.
  'grpc.keepalive_time_ms': 30_000,
  'grpc.keepalive_timeout_ms': 10_000,
  'grpc.keepalive_permit_without_calls': 0,
  // grpc-js waits 1 s doubling (×1.6) to 120 s between connection attempts: after a sidecar
  // restart that took a few seconds, calls would wait up to two minutes for a sidecar that
  // is back. The sidecar is local and a refused connection costs next to nothing.
  'grpc.initial_reconnect_backoff_ms': DEFAULT_RECONNECT_INITIAL_BACKOFF_MS,
  'grpc.max_reconnect_backoff_ms': DEFAULT_RECONNECT_MAX_BACKOFF_MS,
};

export interface CallDeadlineOption {
  /** This call's deadline in milliseconds; default BatonClientOptions.defaultDeadlineMs. */
  deadlineMs?: number;
}

/** One part to write. `ifVersion` makes the whole put conditional (0n: the part must not exist). */
export interface PartWrite {
  name: string;
  value: Uint8Array;
  ifVersion?: bigint;
}

export interface PutOptions extends CallDeadlineOption {
  /** Idle expiry in seconds; 0 or absent: the sidecar's default. */
  ttlSeconds?: number;
  /** Secondaries that must acknowledge before the put resolves; default 0. */
  minReplicas?: number;
  /**
   * Expected current version per part name (compare-and-set; 0n: the part must not exist).
   * Every name must be a part of this put; a PartWrite's own ifVersion takes precedence.
   */
  ifVersions?: Record<string, bigint>;
}

export interface GetOptions extends CallDeadlineOption {
  /** Parts to read; absent or empty: all parts. */
  parts?: readonly string[];
  /** Let the sidecar fetch missing parts from peers and claim the session. */
  resume?: boolean;
}

export type GetPartOptions = Omit<GetOptions, 'parts'>;

export interface DeleteOptions extends CallDeadlineOption {
  /** Parts to delete; absent or empty: the whole session. */
  parts?: readonly string[];
}

export interface UpdateCartOptions extends CallDeadlineOption {
  /** Idle expiry in seconds; 0 or absent: the session's current TTL (or the sidecar's default). */
  ttlSeconds?: number;
  /** Secondaries that must acknowledge before the update resolves; default 0. */
  minReplicas?: number;
}

export interface TouchOptions extends CallDeadlineOption {
  /** New idle expiry in seconds; 0 or absent: the session's current TTL. */
  ttlSeconds?: number;
}

export interface WatchOptions {
  /** Ends the watch with DEADLINE_EXCEEDED after this many milliseconds; default: no deadline. */
  deadlineMs?: number;
}

// setTimeout's largest delay; a longer one fires at once.
const MAX_TIMER_MS = 2 ** 31 - 1;
const MAX_UINT32 = 2 ** 32 - 1;

export function toPartWrites(
  parts: Record<string, Uint8Array> | readonly PartWrite[],
  ifVersions: Record<string, bigint> | undefined,
): PutRequest['parts'] {
  const entries: PartWrite[] = isPartWriteList(parts)
    ? [...parts]
    : Object.keys(parts).map((name) => ({ name, value: parts[name] as Uint8Array }));
  const writes: PutRequest['parts'] = [];
  for (const { name, value, ifVersion } of entries) {
    if (!(value instanceof Uint8Array)) {
      throw new BatonClientError(Status.INVALID_ARGUMENT, `part '${name}' value is not a Uint8Array`);
    }
    writes.push({
      name,
      value: bufferView(value),
      ifVersion: ifVersion ?? (ifVersions !== undefined && Object.hasOwn(ifVersions, name) ? ifVersions[name] : undefined),
    });
  }
  if (ifVersions !== undefined) {
    const written = new Set(writes.map((w) => w.name));
    for (const name of Object.keys(ifVersions)) {
      if (!written.has(name)) {
        throw new BatonClientError(Status.INVALID_ARGUMENT, `ifVersions names part '${name}', which this put does not write`);
      }
    }
  }
  return writes;
}

function isPartWriteList(parts: Record<string, Uint8Array> | readonly PartWrite[]): parts is readonly PartWrite[] {
  return Array.isArray(parts);
}

export function checkDeadlineMs(ms: number, name: string): void {
  if (!Number.isFinite(ms) || ms <= 0 || ms > MAX_TIMER_MS) {
    throw new BatonClientError(Status.INVALID_ARGUMENT, `${name} must be a number of milliseconds from 1 to ${MAX_TIMER_MS}, got ${ms}`);
  }
}

export function checkPositiveInteger(value: number, name: string): void {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new BatonClientError(Status.INVALID_ARGUMENT, `${name} must be a positive integer, got ${value}`);
  }
}

export function checkUint32(value: number, name: string): number {
  if (!Number.isInteger(value) || value < 0 || value > MAX_UINT32) {
    throw new BatonClientError(Status.INVALID_ARGUMENT, `${name} must be an integer from 0 to ${MAX_UINT32}, got ${value}`);
  }
  return value;
}
