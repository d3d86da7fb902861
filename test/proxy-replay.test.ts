/**
 * The origin side of a re-injection (sidecar/proxy/proxy-replay.ts) against scripted peers
 * and virtual time: which peers are tried, in what order, how many, until when, and that the
 * logged request always leaves the in-flight log.
 */
import pino from 'pino';
import type { ReplayRequest, ReplayResponse } from '../src/gen/baton/v1/peer';
import { parseConfig } from '../sidecar/config/config';
import { NO_PROXY_OBSERVER } from '../sidecar/metrics/proxy-observer';
import type { ProxyCapture } from '../sidecar/proxy/proxy-capture';
import { MAX_ATTEMPTS, ProxyReplay, REPLAY_DEADLINE_MS, type OriginRequest, type ReplayPeers } from '../sidecar/proxy/proxy-replay';
import type { ProxySessionStore } from '../sidecar/proxy/proxy-sessions';
import type { Upstream } from '../sidecar/proxy/proxy-upstream';
import { ReplayLog } from '../sidecar/proxy/replay-log';

const T0 = 1_700_000_000_000;
const config = { ...parseConfig({ 'proxy-listen': '127.0.0.1:0', 'proxy-upstream': 'http://127.0.0.1:1', 'node-id': 'a' }, {}), nodeId: 'a' };

interface Call {
  address: string;
  request: ReplayRequest;
  deadlineMs: number;
}

/** Peers that answer as scripted per address; each call costs `costMs` of virtual time. */
function scriptedPeers(names: string[], script: Record<string, 'answer' | 'refuse'>, clock: { now: number }, costMs = 0): ReplayPeers & { calls: Call[] } {
  const calls: Call[] = [];
  return {
    calls,
    candidates: () => names.map((n) => ({ nodeId: n, address: `${n}:1` })),
    send: (address, request, deadlineMs) => {
      calls.push({ address, request, deadlineMs });
      clock.now += costMs;
      if (script[address] === 'answer') {
        const response: ReplayResponse = { status: 200, headers: [], body: Buffer.from('ok'), sessionId: request.sessionId, remembered: false };
        return Promise.resolve(response);
      }
      return Promise.reject(new Error('refused'));
    },
  };
}

function setup(peers: ReplayPeers | undefined, clock: { now: number }) {
  const replay = new ProxyReplay({
    config,
    sessions: {} as ProxySessionStore,
    capture: {} as ProxyCapture,
    upstream: {} as Upstream,
    observer: NO_PROXY_OBSERVER,
    log: pino({ level: 'silent' }),
    peers,
    clock: () => clock.now,
  });
  const log = new ReplayLog(1024 * 1024);
  const admission = log.admit(64, 0);
  if (admission.kind !== 'logged') throw new Error('not logged');
  admission.entry.add(Buffer.from('body bytes'));
  const origin: OriginRequest = {
    session: { id: 'session-1', minted: false, auth: undefined, previousOwner: undefined },
    method: 'PUT',
    target: '/cart?x=1',
    headers: { host: 'shop', cookie: 'baton_sid=session-1', 'x-baton-session-id': 'forged' },
    clientAddress: '10.0.0.7',
    clientTls: true,
  };
  return { replay, log, entry: admission.entry, origin };
}

describe('ProxyReplay.reinject', () => {
  test('the first peer that answers wins; refusals move on in the given order; the request goes whole', async () => {
    const clock = { now: T0 };
    const peers = scriptedPeers(['b', 'c', 'd'], { 'c:1': 'answer', 'd:1': 'answer' }, clock);
    const { replay, log, entry, origin } = setup(peers, clock);
    const result = await replay.reinject(entry, origin, Promise.resolve(true));
    expect(result.kind).toBe('answered');
    expect(peers.calls.map((c) => c.address)).toEqual(['b:1', 'c:1']);
    const sent = peers.calls[1]!.request;
    expect(sent).toMatchObject({ originNodeId: 'a', sessionId: 'session-1', method: 'PUT', target: '/cart?x=1', clientAddress: '10.0.0.7', clientTls: true });
    expect(Buffer.from(sent.body).toString()).toBe('body bytes');
    // The client's headers go as received: the peer applies the capture rules (and strips x-baton-*).
    expect(sent.headers).toContainEqual({ name: 'cookie', value: 'baton_sid=session-1' });
    expect(log.size).toBe(0);
    expect(log.bytes).toBe(0);
  });

  test(`at most ${MAX_ATTEMPTS} peers are tried, then the request fails`, async () => {
    const clock = { now: T0 };
    const peers = scriptedPeers(['b', 'c', 'd', 'e', 'f'], { 'f:1': 'answer' }, clock);
    const { replay, log, entry, origin } = setup(peers, clock);
    expect((await replay.reinject(entry, origin, Promise.resolve(true))).kind).toBe('failed');
    expect(peers.calls).toHaveLength(MAX_ATTEMPTS);
    expect(log.size).toBe(0);
  });

  test('all attempts share one deadline: each gets what is left, none starts after it', async () => {
    const clock = { now: T0 };
    const deadline = Math.min(REPLAY_DEADLINE_MS, config.proxyUpstreamTimeoutMs);
    const peers = scriptedPeers(['b', 'c', 'd'], { 'd:1': 'answer' }, clock, deadline * 0.6);
    const { replay, entry, origin } = setup(peers, clock);
    expect((await replay.reinject(entry, origin, Promise.resolve(true))).kind).toBe('failed');
    expect(peers.calls.map((c) => c.deadlineMs)).toEqual([deadline, deadline * 0.4]);
  });

  test('no live peer, no replay peers at all, or a body the client never finished: no request is sent, the entry leaves the log', async () => {
    for (const [peers, complete, expected] of [
      [scriptedPeers([], {}, { now: T0 }), true, 'no_peer'],
      [undefined, true, 'no_peer'],
      [scriptedPeers(['b'], { 'b:1': 'answer' }, { now: T0 }), false, 'failed'],
    ] as const) {
      const clock = { now: T0 };
      const { replay, log, entry, origin } = setup(peers, clock);
      expect((await replay.reinject(entry, origin, Promise.resolve(complete))).kind).toBe(expected);
      if (peers !== undefined) expect(peers.calls).toHaveLength(0);
      expect(log.size).toBe(0);
      expect(entry.state).toBe('released');
    }
  });
});
