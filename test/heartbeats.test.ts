/**
 * Heartbeats: who gets one, which channels they name, and what a received one says once
 * checked (bad addresses, gossip bounds, channels not meant for this node).
 */
import { buildHeartbeats, MAX_KNOWN, readHeartbeat, type HeartbeatPlan } from '../src/core/heartbeats';
import { Heartbeat, NodeRole } from '../src/gen/baton/v1/wire';

function plan(overrides: Partial<HeartbeatPlan>): HeartbeatPlan {
  return {
    transport: 'unicast',
    configDigest: 42n,
    leaving: false,
    pulling: true,
    known: [{ nodeId: 'b', advertiseAddress: '10.0.0.2:7000' }],
    targets: ['10.0.0.2:7000', '10.0.0.3:7000', 'seed:7000'],
    nodeIdAt: (address) => ({ '10.0.0.2:7000': 'b', '10.0.0.3:7000': 'c' })[address],
    unackedHighest: (channel) => (channel === 'b' ? 17 : channel === '' ? 5 : 0),
    extras: {},
    ...overrides,
  };
}

describe('heartbeats', () => {
  it('unicast: one per target, naming the channel to that peer only while it is unacknowledged', () => {
    const out = buildHeartbeats(plan({}), 1234.9);
    expect(out.map((h) => h.to)).toEqual(['10.0.0.2:7000', '10.0.0.3:7000', 'seed:7000']);
    expect(out.map((h) => h.heartbeat.channels)).toEqual([[{ targetNodeId: 'b', highestSeq: 17n }], [], []]);
    expect(out[0]!.heartbeat).toMatchObject({ configDigest: 42n, pulling: true, leaving: false, sentAtUnixMs: 1234n });
  });

  it('multicast: one to the group naming the group channel, unicast only to targets not known as members', () => {
    const out = buildHeartbeats(plan({ transport: 'multicast' }), 0);
    expect(out.map((h) => h.to)).toEqual(['multicast', 'seed:7000']);
    expect(out[0]!.heartbeat.channels).toEqual([{ targetNodeId: '', highestSeq: 5n }]);
    expect(out[1]!.heartbeat.channels).toEqual([]);
  });

  it('reads a heartbeat: the sender address when none is advertised, channels for this node only', () => {
    const hb = Heartbeat.fromPartial({
      configDigest: 1n,
      pulling: true,
      channels: [
        { targetNodeId: 'me', highestSeq: 9n },
        { targetNodeId: 'other', highestSeq: 9n },
        { targetNodeId: '', highestSeq: 4n },
        { targetNodeId: 'me', highestSeq: 0n },
        { targetNodeId: 'me', highestSeq: 2n ** 63n },
      ],
      known: [
        { nodeId: 'ok', advertiseAddress: 'host:1' },
        { nodeId: 'bad id', advertiseAddress: 'host:1' },
        { nodeId: 'ok2', advertiseAddress: 'host:0' },
      ],
    });
    const unicast = readHeartbeat(hb, 'x', 3n, '10.0.0.9:7000', 'me', 'unicast')!;
    expect(unicast.member).toMatchObject({ nodeId: 'x', incarnation: 3n, advertiseAddress: '10.0.0.9:7000', configDigest: 1n });
    expect(unicast.member.known).toEqual([{ nodeId: 'ok', advertiseAddress: 'host:1' }]);
    expect(unicast.channels).toEqual([{ target: 'me', highest: 9 }]);
    expect(unicast.pulling).toBe(true);
    expect(readHeartbeat(hb, 'x', 3n, '10.0.0.9:7000', 'me', 'multicast')!.channels).toEqual([{ target: 'me', highest: 9 }, { target: '', highest: 4 }]);
  });

  it('drops a heartbeat whose address cannot be sent to, and bounds gossip', () => {
    expect(readHeartbeat(Heartbeat.fromPartial({ advertiseAddress: 'no port' }), 'x', 1n, '1.2.3.4:5', 'me', 'unicast')).toBeUndefined();
    const known = Array.from({ length: MAX_KNOWN + 10 }, (_, i) => ({ nodeId: `n${i}`, advertiseAddress: `h${i}:1` }));
    expect(readHeartbeat(Heartbeat.fromPartial({ known }), 'x', 1n, '1.2.3.4:5', 'me', 'unicast')!.member.known).toHaveLength(MAX_KNOWN);
  });
});

test('the role travels in heartbeats: a store node is read as store, anything else as edge', () => {
  const store = Heartbeat.fromPartial({ advertiseAddress: '10.0.0.9:7000', role: NodeRole.NODE_ROLE_STORE });
  expect(readHeartbeat(Heartbeat.decode(Heartbeat.encode(store).finish()), 'x', 1n, '1.2.3.4:5', 'me', 'unicast')!.member.role).toBe('store');
  for (const role of [NodeRole.NODE_ROLE_EDGE, NodeRole.NODE_ROLE_UNSPECIFIED, 7 as NodeRole]) {
    const hb = Heartbeat.fromPartial({ advertiseAddress: '10.0.0.9:7000', role });
    expect(readHeartbeat(hb, 'x', 1n, '1.2.3.4:5', 'me', 'unicast')!.member.role).toBe('edge');
  }
});
