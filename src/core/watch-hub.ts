/**
 * Fans store changes out to Watch subscribers: those of one session and those of all.
 * Events are built only when someone listens, so an unwatched store pays one map lookup.
 */
import { EventType, type WatchEvent } from '../gen/baton/v1/session';
import { toProtoPart } from './session-api';
import { findStoredPart, type RemovalReason, type StoredSession, type StoreObserver } from '../store/store';

export type WatchListener = (event: WatchEvent) => void;

export class WatchHub implements StoreObserver {
  private readonly bySession = new Map<string, Set<WatchListener>>();
  private readonly everything = new Set<WatchListener>();
  private total = 0;

  /** Subscribes to one session ('' = every session); returns the unsubscribe function. */
  subscribe(sessionId: string, listener: WatchListener): () => void {
    let set = this.everything;
    if (sessionId !== '') {
      set = this.bySession.get(sessionId) ?? new Set();
      this.bySession.set(sessionId, set);
    }
    set.add(listener);
    this.total++;
    return () => {
      if (!set.delete(listener)) return;
      this.total--;
      if (set.size === 0 && sessionId !== '') this.bySession.delete(sessionId);
    };
  }

  get size(): number {
    return this.total;
  }

  partPut(session: StoredSession, name: string, version: number, writer: string): void {
    if (this.total === 0) return;
    this.publish(session.id, () => ({
      sessionId: session.id,
      type: EventType.EVENT_TYPE_PUT,
      part: toProtoPart(name, findStoredPart(session, name)!.value!, version, writer),
      partName: name,
    }));
  }

  partDeleted(sessionId: string, partName: string): void {
    if (this.total === 0) return;
    this.publish(sessionId, () => ({ sessionId, type: EventType.EVENT_TYPE_DELETE, part: undefined, partName }));
  }

  sessionRemoved(sessionId: string, reason: RemovalReason): void {
    if (this.total === 0 || reason !== 'expired') return;
    this.publish(sessionId, () => ({ sessionId, type: EventType.EVENT_TYPE_EXPIRE, part: undefined, partName: '' }));
  }

  claimed(session: StoredSession): void {
    if (this.total === 0) return;
    const sessionId = session.id;
    this.publish(sessionId, () => ({ sessionId, type: EventType.EVENT_TYPE_CLAIM, part: undefined, partName: '' }));
  }

  private publish(sessionId: string, build: () => WatchEvent): void {
    const one = this.bySession.get(sessionId);
    if (one === undefined && this.everything.size === 0) return;
    const event = build();
    if (one !== undefined) for (const listener of one) listener(event);
    for (const listener of this.everything) listener(event);
  }
}
