/**
 * WriteTickets: waits learn their sequence numbers as channels send, acknowledgements
 * count per holder, forwarded writes need their owner's confirmation, and superseded
 * owners send the write again (virtual channels: acknowledgement levels in a map).
 */
import { FOLLOW_FORWARDED_MS, MAX_FORWARDED_RESENDS, WriteTickets, type TicketWait } from '../src/core/write-tickets';

const wait = (nodeId: string, queued: number, channel = nodeId): TicketWait => ({ nodeId, channel, seq: 0, firstSeq: 0, queued });

function acks(levels: Record<string, number>) {
  return (channel: string, nodeId: string) => levels[`${channel}>${nodeId}`] ?? 0;
}

/** A write made as owner on s1, awaited, sent to b in packet 3. */
function ownWriteSentToB() {
  const t = new WriteTickets();
  const ticket = t.open([wait('b', 1)], undefined, { sessionId: 's1', changes: [], resends: 0 });
  t.await(ticket.id, 1);
  t.sent('b', 3, 1, 3);
  return { t, ticket };
}

describe('WriteTickets', () => {
  it('counts nothing until sent, then each holder whose acknowledgement covers the write', () => {
    const t = new WriteTickets();
    const ticket = t.open([wait('b', 1), wait('c', 1)], undefined, undefined);
    t.await(ticket.id, 2);
    expect(t.ackCount(ticket.id, acks({ 'b>b': 9, 'c>c': 9 }))).toBe(0);
    expect(t.awaitedOn('b')).toBe(true);
    t.sent('b', 1, 1, 3);
    expect(t.get(ticket.id)!.flushed).toBe(false);
    t.sent('c', 5, 1, 5);
    expect(t.get(ticket.id)!.flushed).toBe(true);
    expect(t.awaitedOn('b')).toBe(false);
    expect(t.ackCount(ticket.id, acks({ 'b>b': 3, 'c>c': 4 }))).toBe(1);
    t.check(acks({ 'b>b': 3, 'c>c': 4 }));
    expect(t.takeCompleted()).toEqual([]);
    t.check(acks({ 'b>b': 3, 'c>c': 5 }));
    expect(t.takeCompleted()).toEqual([{ id: ticket.id, acked: 2 }]);
    expect(t.size).toBe(0);
  });

  it('a write made as owner counts a holder only once its acknowledgement vouched for it: notes complete for it, none against it', () => {
    const t = new WriteTickets();
    const own = () => ({ sessionId: 's1', changes: [], resends: 0 });
    const ticket = t.open([wait('b', 1), wait('c', 1)], undefined, own());
    t.await(ticket.id, 1);
    t.sent('b', 4, 1, 4);
    t.sent('c', 4, 1, 4);
    const levels = acks({ 'b>b': 4, 'c>c': 4 });
    // Covered by both channels' levels, but nobody vouched yet.
    expect(t.ackCount(ticket.id, levels)).toBe(0);
    // b's notes may be incomplete for it (above 4 only): no vouch, sent again.
    expect(t.ownerAck('b', 'b', 4, 4, []).map((x) => x.id)).toEqual([ticket.id]);
    // c noted a newer owner of s1 on the packet: sent again.
    expect(t.ownerAck('c', 'c', 4, 0, [{ seq: 4, sessionId: 's1' }]).map((x) => x.id)).toEqual([ticket.id]);
    expect(t.ackCount(ticket.id, levels)).toBe(0);
    // A note on another session, or on another packet, says nothing of this write.
    expect(t.ownerAck('c', 'c', 4, 0, [{ seq: 4, sessionId: 's2' }, { seq: 9, sessionId: 's1' }])).toEqual([]);
    expect(t.ackCount(ticket.id, levels)).toBe(1);
    t.check(levels);
    expect(t.takeCompleted()).toEqual([{ id: ticket.id, acked: 1 }]);
  });

  // After a long split, the writer's side had placed another secondary (c); the holder from
  // before (b) comes back acknowledging with notes that no longer reach the write. c, which
  // was on the writer's side, vouches before it hears the other side's claim; b has heard it.
  it("a write made as owner that its holder could not vouch for counts only once that holder did, not on another holder's word", () => {
    const { t, ticket } = ownWriteSentToB();
    expect(t.ownerAck('b', 'b', 9, 9, []).map((x) => x.id)).toEqual([ticket.id]);
    expect(t.get(ticket.id)!.mustVouch).toBe('b');
    // Not lost: b could not say (were the write to reach no one, it would keep waiting for b).
    expect(t.get(ticket.id)!.lost).toBe(false);
    // Sent again (by the engine) to the secondary placed now, and to b.
    t.reopen(ticket, undefined, [], [wait('c', 2), wait('b', 2)]);
    t.sent('c', 4, 2, 4);
    t.sent('b', 10, 2, 10);
    const levels = acks({ 'c>c': 4, 'b>b': 10 });
    expect(t.ownerAck('c', 'c', 4, 0, [])).toEqual([]);
    expect(t.ackCount(ticket.id, levels)).toBe(0);
    t.check(levels);
    expect(t.takeCompleted()).toEqual([]);
    expect(t.ownerAck('b', 'b', 10, 0, [])).toEqual([]);
    expect(t.ackCount(ticket.id, levels)).toBe(2);
  });

  it('the holder that could not say notes a newer owner instead: the write goes to that owner, and the holder is no longer awaited', () => {
    const { t, ticket } = ownWriteSentToB();
    t.ownerAck('b', 'b', 9, 9, []);
    t.reopen(ticket, undefined, [], [wait('c', 2), wait('b', 2)]);
    t.sent('c', 4, 2, 4);
    t.sent('b', 10, 2, 10);
    expect(t.ownerAck('b', 'b', 10, 0, [{ seq: 10, sessionId: 's1' }]).map((x) => x.id)).toEqual([ticket.id]);
    expect(t.get(ticket.id)!.mustVouch).toBeUndefined();
    expect(t.get(ticket.id)!.lost).toBe(true);
    // Sent to the owner b named, as a forwarded write: its confirmation counts.
    t.reopen(ticket, 'x', [], [wait('x', 3)]);
    t.sent('x', 2, 3, 2);
    t.ownerAck('x', 'x', 2, 0, []);
    expect(t.ackCount(ticket.id, acks({ 'x>x': 2 }))).toBe(1);
  });

  it('a write sent again to no holder counts nobody and is listed stranded until it goes again', () => {
    const { t, ticket } = ownWriteSentToB();
    t.ownerAck('b', 'b', 3, 0, [{ seq: 3, sessionId: 's1' }]);
    expect(t.stranded()).toEqual([]);
    expect(t.countResend(ticket)).toBe(true);
    t.reopen(ticket, undefined, [], []);
    // That sending went to no one: not one of its resends.
    expect(ticket.write!.resends).toBe(0);
    t.sent('c', 1, 0, 1);
    expect(t.stranded().map((x) => x.id)).toEqual([ticket.id]);
    expect(t.ackCount(ticket.id, acks({ 'b>b': 3 }))).toBe(0);
    t.reopen(ticket, 'x', [], [wait('x', 2)]);
    expect(t.stranded()).toEqual([]);
  });

  it('a holder that could not say and is not among the waits the write went again to is not awaited', () => {
    const { t, ticket } = ownWriteSentToB();
    t.ownerAck('b', 'b', 9, 9, []);
    t.reopen(ticket, undefined, [], [wait('c', 2)]);
    expect(t.get(ticket.id)!.mustVouch).toBeUndefined();
    t.sent('c', 4, 2, 4);
    t.ownerAck('c', 'c', 4, 0, []);
    expect(t.ackCount(ticket.id, acks({ 'c>c': 4 }))).toBe(1);
  });

  // A retransmission leaves out a delta a later packet supersedes: the write's part may reach
  // the holder in a later packet than its wait names, and be noted there.
  it('a note on the session in a later packet the acknowledgement covers counts against the write', () => {
    const t = new WriteTickets();
    const ticket = t.open([wait('b', 1)], undefined, { sessionId: 's1', changes: [], resends: 0 });
    t.await(ticket.id, 1);
    t.sent('b', 4, 1, 4);
    expect(t.ownerAck('b', 'b', 9, 0, [{ seq: 7, sessionId: 's1' }]).map((x) => x.id)).toEqual([ticket.id]);
    expect(t.ackCount(ticket.id, acks({ 'b>b': 9 }))).toBe(0);
    // Past what the acknowledgement covers, a note says nothing yet.
    expect(t.ownerAck('b', 'b', 9, 0, [{ seq: 12, sessionId: 's1' }])).toEqual([]);
    expect(t.ackCount(ticket.id, acks({ 'b>b': 9 }))).toBe(1);
  });

  // A tie's or a claim's forward of the part, sent after the write, supersedes it in the
  // sender's buffer: a retransmission of the write's packet then leaves it out.
  it("a write whose keys a later packet carries counts only once that packet is acknowledged, and that packet's notes count against it", () => {
    const latest = new Map<string, number>();
    const t = new WriteTickets((channel, key) => latest.get(`${channel}>${key}`) ?? 0);
    const put = { kind: 'put' as const, name: 'cart', value: Buffer.from('v'), version: 7 };
    const forwarded = t.open([wait('b', 1)], undefined, undefined);
    const own = t.open([wait('b', 1)], undefined, { sessionId: 's1', changes: [put], resends: 0 });
    for (const ticket of [forwarded, own]) t.await(ticket.id, 1);
    t.sent('b', 4, 1, 4);
    latest.set('b>s1\u0000cart', 9);
    expect(t.ownerAck('b', 'b', 4, 0, [])).toEqual([]);
    expect(t.ackCount(own.id, acks({ 'b>b': 4 }))).toBe(0);
    // A ticket without a write (nothing to supersede) counts at its own packet.
    expect(t.ackCount(forwarded.id, acks({ 'b>b': 4 }))).toBe(1);
    expect(t.ownerAck('b', 'b', 9, 0, [{ seq: 9, sessionId: 's1' }]).map((x) => x.id)).toEqual([own.id]);
    expect(t.ownerAck('b', 'b', 9, 0, [])).toEqual([]);
    expect(t.ackCount(own.id, acks({ 'b>b': 9 }))).toBe(1);
  });

  it('follows a forwarded write nobody awaits until its owner confirms it, for FOLLOW_FORWARDED_MS at most; forgets an own one at the flush', () => {
    const t = new WriteTickets();
    const forwarded = () => ({ sessionId: 's1', changes: [], resends: 0 });
    const followed = t.open([wait('a', 1)], 'a', forwarded(), 1000);
    const own = t.open([wait('b', 1)], undefined, forwarded(), 1000);
    t.sent('a', 1, 1, 1);
    t.sent('b', 1, 1, 1);
    expect(t.get(own.id)).toBeUndefined();
    expect(t.get(followed.id)).toBeDefined();
    // The owner says a newer owner took the session: sent again, though nobody waits.
    expect(t.ownerAck('a', 'a', 1, 0, [{ seq: 1, sessionId: 's1' }]).map((x) => x.id)).toEqual([followed.id]);
    // The owner confirms it: let go.
    expect(t.ownerAck('a', 'a', 1, 0, [])).toEqual([]);
    expect(t.get(followed.id)).toBeUndefined();

    const unconfirmed = t.open([wait('a', 2)], 'a', forwarded(), 1000);
    t.sent('a', 2, 2, 2);
    t.expireFollowed(1000 + FOLLOW_FORWARDED_MS);
    expect(t.get(unconfirmed.id)).toBeDefined();
    t.expireFollowed(1001 + FOLLOW_FORWARDED_MS);
    expect(t.get(unconfirmed.id)).toBeUndefined();
  });

  it('a caller that stops waiting leaves a forwarded write followed, and any other forgotten', () => {
    const t = new WriteTickets();
    const forwarded = () => ({ sessionId: 's1', changes: [], resends: 0 });
    const viaOwner = t.open([wait('a', 1)], 'a', forwarded(), 0);
    const own = t.open([wait('b', 1)], undefined, forwarded(), 0);
    t.await(viaOwner.id, 1);
    t.await(own.id, 1);
    t.unawait(viaOwner.id);
    t.unawait(own.id);
    expect(t.get(viaOwner.id)).toMatchObject({ needed: 0 });
    expect(t.get(own.id)).toBeUndefined();
  });

  it('covers a write only once the channel sent everything queued up to it', () => {
    const t = new WriteTickets();
    const ticket = t.open([wait('b', 4)], undefined, undefined);
    t.await(ticket.id, 1);
    t.sent('b', 1, 3, 2);
    expect(t.get(ticket.id)!.waits[0]!.seq).toBe(0);
    t.sent('b', 3, 4, 3);
    expect(t.get(ticket.id)!.waits[0]).toMatchObject({ seq: 3, firstSeq: 3 });
  });

  it('forgets a ticket nobody awaits at the next flush, and a released one at once', () => {
    const t = new WriteTickets();
    const lonely = t.open([wait('b', 1)], undefined, undefined);
    const awaited = t.open([wait('c', 1)], undefined, undefined);
    t.await(awaited.id, 1);
    t.sent('other', 1, 0, 0);
    expect(t.get(lonely.id)).toBeUndefined();
    expect(t.get(awaited.id)).toBeDefined();
    t.release(awaited.id);
    expect(t.size).toBe(0);
  });

  it('counts a forwarded write only after its owner confirmed it, and sends it again when the owner was superseded', () => {
    const t = new WriteTickets();
    const forwarded = { sessionId: 's1', changes: [{ kind: 'touch' as const }], resends: 0 };
    const ticket = t.open([wait('owner', 1), wait('c', 1)], 'owner', forwarded);
    t.await(ticket.id, 2);
    t.sent('owner', 4, 1, 4);
    t.sent('c', 4, 1, 4);
    const levels = acks({ 'owner>owner': 4, 'c>c': 4 });
    expect(t.ackCount(ticket.id, levels)).toBe(0);
    // An acknowledgement whose notes may be incomplete for the write: send again.
    expect(t.ownerAck('owner', 'owner', 4, 4, [])).toEqual([ticket]);
    // A note that the owner was superseded for this session within the write's packets: send again.
    expect(t.ownerAck('owner', 'owner', 4, 0, [{ seq: 4, sessionId: 's1' }])).toEqual([ticket]);
    // A note for another session, complete notes: confirmed.
    expect(t.ownerAck('owner', 'owner', 4, 0, [{ seq: 4, sessionId: 's2' }])).toEqual([]);
    expect(t.ackCount(ticket.id, levels)).toBe(2);
    // The owner alone does not count while another holder lacks the write (a copy only the
    // owner holds is lost if it leaves before they have it).
    expect(t.ackCount(ticket.id, acks({ 'owner>owner': 4, 'c>c': 3 }))).toBe(0);
  });

  it('counts the owner of a forwarded write when no other holder is waited for', () => {
    const t = new WriteTickets();
    const ticket = t.open([wait('owner', 1)], 'owner', { sessionId: 's1', changes: [{ kind: 'touch' as const }], resends: 0 });
    t.await(ticket.id, 1);
    t.sent('owner', 2, 1, 2);
    expect(t.ownerAck('owner', 'owner', 2, 0, [])).toEqual([]);
    expect(t.ackCount(ticket.id, acks({ 'owner>owner': 2 }))).toBe(1);
  });

  // Its notes ride acknowledgements for a while only: a later one without them must not
  // vouch for a write that had to go again and could not.
  it('a write that had to go again with its resends spent is never counted', () => {
    const t = new WriteTickets();
    const ticket = t.open([wait('master', 1)], 'master', { sessionId: 's1', changes: [], resends: MAX_FORWARDED_RESENDS });
    t.await(ticket.id, 1);
    t.sent('master', 3, 1, 3);
    expect(t.ownerAck('master', 'master', 3, 0, [{ seq: 3, sessionId: 's1' }])).toEqual([ticket]);
    expect(t.countResend(ticket)).toBe(false);
    expect(t.ownerAck('master', 'master', 5, 0, [])).toEqual([]);
    expect(t.ackCount(ticket.id, acks({ 'master>master': 5 }))).toBe(0);
    t.check(acks({ 'master>master': 5 }));
    expect(t.takeCompleted()).toEqual([]);
  });

  it('bounds how often a forwarded write is sent again, and reopens it for the new holders', () => {
    const t = new WriteTickets();
    const ticket = t.open([wait('owner', 1)], 'owner', { sessionId: 's1', changes: [], resends: 0 });
    for (let i = 0; i < MAX_FORWARDED_RESENDS; i++) expect(t.countResend(ticket)).toBe(true);
    expect(ticket.refuted).toBeUndefined();
    expect(t.countResend(ticket)).toBe(false);
    expect(ticket.refuted).toBe(true);
    t.reopen(ticket, 'new-owner', [{ kind: 'claim' }], [wait('new-owner', 2)]);
    expect(ticket).toMatchObject({ owner: 'new-owner', ownerConfirmed: false, flushed: false, waits: [{ nodeId: 'new-owner', seq: 0 }] });
    expect(ticket.write!.changes).toEqual([{ kind: 'claim' }]);
  });
});
