/**
 * The replication transport's multicast group sockets (real sockets on loopback): a node
 * listens on exactly the groups the core last asked for, with one socket per group, also
 * when the core asks while the groups are still opening at start (peers' heartbeats reach
 * the unicast socket before then). A socket left behind would go on receiving a group's
 * deltas that the node does not hold (found as a node outside a group receiving all of it).
 *
 * Sockets are counted in /proc/net/udp by their bound address (the group's), so a socket
 * the transport lost track of is seen too.
 */
import * as dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import pino from 'pino';
import { parseConfig } from '../sidecar/config/config';
import { UdpTransport } from '../sidecar/transport/udp-transport';
import { BuzHash } from '../src/store/buzhash';
import { HybridClock } from '../src/store/hybrid-clock';
import { DEFAULT_STORE_CONFIG, SessionStore } from '../src/store/store';
import type { NodeObserver } from '../src/core/node-core';
import { freeUdpPort } from './support/ports';
import { pollUntil } from './support/static-cluster';

const observer: NodeObserver = { lag: () => {}, resync: () => {}, membership: () => {}, peerFetch: () => {} };

/** Sockets bound to `address:port` now, from the kernel's table. */
function boundSockets(address: string, port: number): number {
  const hex = Buffer.from(address.split('.').map(Number)).readUInt32LE().toString(16).toUpperCase().padStart(8, '0');
  const local = `${hex}:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  return readFileSync('/proc/net/udp', 'utf8').split('\n').filter((line) => line.trim().split(/\s+/)[1] === local).length;
}

async function transportWithGroups(): Promise<{ transport: UdpTransport; groups: string[]; port: number }> {
  const port = await freeUdpPort();
  const groups = [`239.255.${(port >> 8) & 0xff}.${port & 0xff}`, `239.254.${(port >> 8) & 0xff}.${port & 0xff}`];
  const config = parseConfig({
    'node-id': 'groups-a',
    'api-listen': '127.0.0.1:0',
    'peer-listen': '127.0.0.1:0',
    'multicast-groups': groups.map((g) => `${g}:${port}`).join(','),
    'multicast-interface': '127.0.0.1',
    partitions: '4',
  }, {});
  const hasher = new BuzHash('groups-test');
  const store = new SessionStore({ ...DEFAULT_STORE_CONFIG, nodeId: 'groups-a', partitions: 4 }, hasher, new HybridClock());
  const transport = await UdpTransport.open(config, store, hasher, undefined, pino({ level: 'silent' }), observer);
  return { transport, groups, port };
}

let open: UdpTransport | undefined;
afterEach(async () => {
  await open?.stop();
  open = undefined;
});

test('a node alone listens on every group, one socket each', async () => {
  const { transport, groups, port } = await transportWithGroups();
  open = transport;
  await transport.start();
  await transport.groupsSettled();
  expect(transport.joinedGroups()).toEqual(groups);
  for (const group of groups) expect(boundSockets(group, port)).toBe(1);
});

test('a group joined during the start and left after it leaves no socket behind', async () => {
  const { transport, groups, port } = await transportWithGroups();
  open = transport;
  const started = transport.start();
  transport.setGroups([0, 1]);
  await started;
  transport.setGroups([0]);
  await transport.groupsSettled();
  expect(transport.joinedGroups()).toEqual([groups[0]]);
  expect(boundSockets(groups[0]!, port)).toBe(1);
  expect(boundSockets(groups[1]!, port)).toBe(0);

  transport.setGroups([1]);
  await transport.groupsSettled();
  expect(transport.joinedGroups()).toEqual([groups[1]]);
  expect(boundSockets(groups[0]!, port)).toBe(0);
  expect(boundSockets(groups[1]!, port)).toBe(1);
});

test('stop closes every group socket, also one still opening', async () => {
  const { transport, groups, port } = await transportWithGroups();
  await transport.start();
  transport.setGroups([]);
  transport.setGroups([0, 1]);
  await transport.stop();
  for (const group of groups) expect(boundSockets(group, port)).toBe(0);
});

test('a group that cannot be joined is joined once it can be (tried again every second)', async () => {
  const { transport, groups, port } = await transportWithGroups();
  open = transport;
  await transport.start();
  await transport.groupsSettled();
  transport.setGroups([0]);
  // Another socket holds group 1's address and port without SO_REUSEADDR: the join fails.
  const blocker = dgram.createSocket({ type: 'udp4' });
  await new Promise<void>((resolve) => blocker.bind({ address: groups[1], port, exclusive: true }, () => resolve()));
  try {
    transport.setGroups([0, 1]);
    await transport.groupsSettled();
    expect(transport.joinedGroups()).toEqual([groups[0]]);
  } finally {
    await new Promise<void>((resolve) => blocker.close(() => resolve()));
  }
  // Nothing asks again (the core reports its groups only when they change): the retry does.
  await pollUntil('group 1 joined on a retry', () => transport.joinedGroups().length === 2, 10_000);
  expect(transport.joinedGroups()).toEqual(groups);
  expect(boundSockets(groups[1]!, port)).toBe(1);
});

test('a datagram marked as its own but sent from another socket is skipped, and never makes the node filter that source', async () => {
  const { transport, groups, port } = await transportWithGroups();
  open = transport;
  await transport.start();
  await transport.groupsSettled();
  // The header bytes that mark a datagram as this node's are in the clear: anyone can copy
  // them. Sent from another local socket (a peer's address, say), such datagrams must keep
  // reaching the process: a kernel filter for their source would silence that peer.
  const header = Buffer.alloc(40);
  header.writeBigUInt64BE(transport.incarnation, 4);
  const other = dgram.createSocket({ type: 'udp4' });
  await new Promise<void>((resolve) => other.bind({ address: '127.0.0.1', port: 0 }, () => resolve()));
  try {
    other.setMulticastInterface('127.0.0.1');
    // One at a time: each is taken in (and any filter attached) before the next is sent.
    for (let i = 1; i <= 3; i++) {
      await new Promise<void>((resolve, reject) => other.send(header, port, groups[0], (err) => (err ? reject(err) : resolve())));
      await pollUntil(`datagram ${i} reaches the process`, () => transport.core.counters.ownDatagramsReceived === i, 5000);
    }
  } finally {
    await new Promise<void>((resolve) => other.close(() => resolve()));
  }
  expect(transport.core.counters.ownDatagramsReceived).toBe(3);
});
