/**
 * Election messages on the wire: what a notice, a batch and a heartbeat's election fields
 * read as, what is left out (and counted by the node), how batches stay within a datagram,
 * and what a node does with bad election datagrams, inquiries and their replies.
 */
import { electionBatches, MAX_HEARTBEAT_ENTRIES, readElection, readHeartbeatElection } from '../src/core/election-wire';
import type { ElectionNotice } from '../src/core/election';
import { Datagram, ElectionNoticeKind, Heartbeat, type Election } from '../src/gen/baton/v1/wire';
import { SimCluster } from './support/sim-cluster';

const DECLARE = ElectionNoticeKind.ELECTION_NOTICE_KIND_DECLARE;
const REVOKE = ElectionNoticeKind.ELECTION_NOTICE_KIND_REVOKE;
const index = (nodeId: string, rank = 0, priority = 0) => ({ nodeId, rank, priority });

describe('election notices on the wire', () => {
  it('reads DECLAREs and REVOKEs, leaving out and counting every bad notice', () => {
    const election: Election = {
      notices: [
        { group: 3, kind: DECLARE, sender: index('a', 1, 7), revoked: undefined },
        { group: 4, kind: REVOKE, sender: index('a', 0), revoked: index('b', 2) },
        { group: 4, kind: REVOKE, sender: index('a', 0), revoked: undefined },
        { group: 5, kind: DECLARE, sender: index('bad id'), revoked: undefined },
        { group: 5, kind: DECLARE, sender: undefined, revoked: undefined },
        { group: 5, kind: ElectionNoticeKind.ELECTION_NOTICE_KIND_UNSPECIFIED, sender: index('a'), revoked: undefined },
        { group: 5, kind: 9 as ElectionNoticeKind, sender: index('a'), revoked: undefined },
      ],
    };
    const read = readElection(election);
    expect(read.notices).toEqual([
      { kind: 'declare', group: 3, declarer: index('a', 1, 7) },
      { kind: 'revoke', group: 4, revoker: index('a', 0), revoked: index('b', 2) },
    ]);
    expect(read.dropped).toBe(5);
  });

  it('survives a round trip through the codec, garbage included', () => {
    const notices: ElectionNotice[] = [{ kind: 'revoke', group: 1, revoker: index('n-1', 0, 3), revoked: index('n-2', 1) }];
    const [batch] = electionBatches(notices, 1400, (e) => Datagram.encode({ senderNodeId: 'n-1', body: { $case: 'election', election: e } }).finish());
    const decoded = Datagram.decode(Datagram.encode({ senderNodeId: 'n-1', body: { $case: 'election', election: batch! } }).finish());
    expect(decoded.body?.$case === 'election' && readElection(decoded.body.election).notices).toEqual(notices);
    for (const bytes of [new Uint8Array([0xa2, 0x01, 0x03, 0x0a, 0x01, 0xff]), new Uint8Array([0xa2, 0x01, 0x02, 0x08, 0x80])]) {
      let read: ReturnType<typeof readElection> | undefined;
      try {
        const d = Datagram.decode(bytes);
        if (d.body?.$case === 'election') read = readElection(d.body.election);
      } catch {
        read = undefined; // the engine counts an undecodable datagram as malformed
      }
      expect(read === undefined || read.notices.length === 0).toBe(true);
    }
  });

  it('splits many notices into datagrams that each fit the payload limit, in order', () => {
    const notices: ElectionNotice[] = Array.from({ length: 600 }, (_, group) => ({ kind: 'declare', group, declarer: index('node-with-a-long-name', group % 3, 1) }));
    const encode = (e: Election) => Datagram.encode({ senderNodeId: 'node-with-a-long-name', body: { $case: 'election', election: e } }).finish();
    const batches = electionBatches(notices, 1400, encode);
    expect(batches.length).toBeGreaterThan(1);
    for (const batch of batches) expect(encode(batch).length).toBeLessThanOrEqual(1400);
    expect(batches.flatMap((b) => readElection(b).notices)).toEqual(notices);
  });

  it("reads a heartbeat's election fields: its echo of this node, valid delays, bounded", () => {
    const heartbeat = Heartbeat.fromPartial({
      priority: 12,
      echoes: [
        { nodeId: 'other', sentAtUnixMs: 5n, heldMs: 1 },
        { nodeId: 'me', sentAtUnixMs: 1000n, heldMs: 2.5 },
      ],
      delays: [
        { nodeId: 'b', roundTripMs: 1.5 },
        { nodeId: 'bad id', roundTripMs: 1 },
        { nodeId: 'c', roundTripMs: -1 },
        { nodeId: 'd', roundTripMs: Number.NaN },
        ...Array.from({ length: MAX_HEARTBEAT_ENTRIES + 5 }, (_, i) => ({ nodeId: `n${i}`, roundTripMs: 1 })),
      ],
    });
    const read = readHeartbeatElection(heartbeat, 'me');
    expect(read.priority).toBe(12);
    expect(read.echo).toEqual({ sentAtMs: 1000, heldMs: 2.5 });
    expect(read.delays.get('b')).toBe(1.5);
    expect(['bad id', 'c', 'd'].some((id) => read.delays.has(id))).toBe(false);
    expect(read.delays.size).toBeLessThanOrEqual(MAX_HEARTBEAT_ENTRIES);
    expect(readHeartbeatElection(Heartbeat.fromPartial({ echoes: [{ nodeId: 'me', sentAtUnixMs: 1n, heldMs: -4 }] }), 'me').echo).toBeUndefined();
  });
});

describe('a node given election datagrams', () => {
  function cluster(): SimCluster {
    const c = new SimCluster({ seed: 3, nodes: 3, transport: 'unicast' });
    c.runUntil(() => c.membershipSettled(), 10_000);
    c.runFor(2000);
    return c;
  }
  const payload = (sender: string, body: NonNullable<Datagram['body']>) => Datagram.encode({ senderNodeId: sender, body }).finish();

  it('drops and counts notices that do not read or are not for a group it shares with the sender', () => {
    const c = cluster();
    const [a, b] = c.nodes as [(typeof c.nodes)[number], (typeof c.nodes)[number]];
    const bad: Election = {
      notices: [
        { group: 0, kind: DECLARE, sender: index('bad id'), revoked: undefined },
        { group: 0, kind: DECLARE, sender: index('node-9'), revoked: undefined },
        { group: 4000, kind: DECLARE, sender: index(a.nodeId), revoked: undefined },
        { group: 0, kind: DECLARE, sender: index(a.nodeId), revoked: undefined },
      ],
    };
    const malformed = b.core.counters.dropped.get('malformed') ?? 0;
    const ignored = b.core.counters.dropped.get('election_ignored') ?? 0;
    const masterBefore = b.core.masters.masterOf(0);
    // Sent by b's peer a, but the second notice names node-9, the third a group b does not
    // have, and the last comes from a node the datagram does not come from.
    b.core.handleDatagram(payload(a.nodeId, { $case: 'election', election: { notices: bad.notices.slice(0, 3) } }), a.incarnation, a.address, c.net.now);
    b.core.handleDatagram(payload('node-3', { $case: 'election', election: { notices: [bad.notices[3]!] } }), a.incarnation, a.address, c.net.now);
    expect((b.core.counters.dropped.get('malformed') ?? 0) - malformed).toBe(1);
    expect((b.core.counters.dropped.get('election_ignored') ?? 0) - ignored).toBe(3);
    expect(b.core.masters.masterOf(0)).toBe(masterBefore);
  });

  it('answers an inquiry with its timestamp, measures the round trip of a reply, and drops a bad one', () => {
    const c = cluster();
    const [a, b] = c.nodes as [(typeof c.nodes)[number], (typeof c.nodes)[number]];
    b.core.handleDatagram(payload(a.nodeId, { $case: 'inquiry', inquiry: { sentAtMs: 12345.5 } }), a.incarnation, a.address, c.net.now);
    const ready = b.core.flush(c.net.now);
    const replies = ready.datagrams.map((d) => ({ to: d.to, body: Datagram.decode(d.payload).body })).filter((d) => d.body?.$case === 'inquiryReply');
    expect(replies).toEqual([{ to: a.address, body: { $case: 'inquiryReply', inquiryReply: { inquirySentAtMs: 12345.5 } } }]);
    const malformed = b.core.counters.dropped.get('malformed') ?? 0;
    b.core.handleDatagram(payload(a.nodeId, { $case: 'inquiry', inquiry: { sentAtMs: Number.NaN } }), a.incarnation, a.address, c.net.now);
    const nan = b.core.flush(c.net.now);
    expect(nan.datagrams.some((d) => Datagram.decode(d.payload).body?.$case === 'inquiryReply')).toBe(false);
    expect((b.core.counters.dropped.get('malformed') ?? 0) - malformed).toBe(1);
    b.core.handleDatagram(payload(a.nodeId, { $case: 'inquiryReply', inquiryReply: { inquirySentAtMs: c.net.now - 40 } }), a.incarnation, a.address, c.net.now);
    expect(b.core.masters.elections.delays.delayMs(b.nodeId, a.nodeId)).toBeGreaterThan(0);
    // A reply from the future or from long ago is no measurement.
    const before = b.core.masters.elections.delays.delayMs(b.nodeId, a.nodeId);
    b.core.handleDatagram(payload(a.nodeId, { $case: 'inquiryReply', inquiryReply: { inquirySentAtMs: c.net.now + 1e6 } }), a.incarnation, a.address, c.net.now);
    b.core.handleDatagram(payload(a.nodeId, { $case: 'inquiryReply', inquiryReply: { inquirySentAtMs: 0 } }), a.incarnation, a.address, c.net.now);
    expect(b.core.masters.elections.delays.delayMs(b.nodeId, a.nodeId)).toBe(before);
  });

  it('heartbeats carry the priority, echoes and measured delays; peers learn round trips from them', () => {
    const c = new SimCluster({ seed: 5, nodes: 3, transport: 'unicast', priorities: { 'node-2': 4 } });
    c.runUntil(() => c.membershipSettled(), 10_000);
    c.runFor(2000);
    const [a, b] = c.nodes as [(typeof c.nodes)[number], (typeof c.nodes)[number]];
    const extras = b.core.masters.heartbeatExtras(c.net.now);
    expect(extras.priority).toBe(4);
    expect(extras.echoes!.map((e) => e.nodeId).sort()).toEqual([a.nodeId, 'node-3']);
    expect(extras.delays!.map((d) => d.nodeId).sort()).toEqual([a.nodeId, 'node-3']);
    // a learned b's priority: b wins every partition both hold.
    const shared = [...Array(32).keys()].filter((p) => a.core.masters.elections.group(p)?.memberIds().includes(b.nodeId));
    expect(shared.length).toBeGreaterThan(0);
    for (const p of shared) expect(a.core.masters.masterOf(p)).toBe(b.nodeId);
  });
});
