/**
 * Numbered cluster views (sans-IO): what the coordinator publishes and how a member adopts
 * one. A view is an id, the coordinator that published it and its members (node id,
 * priority, index in the election order, role); placement ranks a view's members, so every
 * node that holds the same view places partitions the same way.
 *
 * Adoption rules (ViewBook):
 * - A member adopts a view only from the coordinator it follows (its election's master),
 *   only when the page names that coordinator as publisher, and only with an id higher
 *   than the view it holds: a late or duplicated page, a former coordinator's view and a
 *   node that merely claims to coordinate change nothing.
 * - A view travels in pages (`viewPages`), each within `maxPayloadBytes`; pages of one view
 *   are assembled, and the view is adopted when the last one arrives. One assembly is kept
 *   at a time (the highest view id offered): a page of a lower view is dropped, a page of a
 *   higher one replaces the assembly.
 * - A view is well formed: 1..MAX_VIEW_MEMBERS members, valid unique node ids, indexes
 *   0..n-1 in member order, pages that fit inside the member count and agree with each
 *   other. Anything else is dropped and reported (`offer` returns why), never thrown.
 *
 * Memory: the current view and one assembly, each at most MAX_VIEW_MEMBERS members.
 */
import { ViewMember as WireViewMember, type ViewPage } from '../gen/baton/v1/wire';
import { isNodeId } from '../wire/datagram-fields';

/** Most members a view may list (a larger one is refused as malformed). */
export const MAX_VIEW_MEMBERS = 4096;
/** Bytes a page spends besides its members (view id, coordinator id, counts, framing). */
const PAGE_OVERHEAD_BYTES = 180;

export interface ViewMember {
  nodeId: string;
  /** Operator-stated capacity (--priority); higher wins elections. */
  priority: number;
  /** Place in the election order: 0 = smallest index (priority desc, then node id). */
  index: number;
  /** edge or store. */
  role: string;
}

export interface ClusterView {
  /** Higher is newer; 0 is never a view (it means "none" on the wire). */
  id: number;
  coordinator: string;
  /** In index order. */
  members: readonly ViewMember[];
}

/** What became of an offered page. */
export type ViewOffer = 'adopted' | 'pending' | 'not_coordinator' | 'stale' | 'malformed';

/** Members sorted into election order (priority desc, then node id), indexed 0..n-1. */
export function orderMembers(members: readonly Omit<ViewMember, 'index'>[]): ViewMember[] {
  const sorted = [...members].sort((a, b) => b.priority - a.priority || (a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : 0));
  return sorted.map((m, index) => ({ ...m, index }));
}

/** The view as pages of at most `maxPayloadBytes` each (a view always has at least one). */
export function viewPages(view: ClusterView, maxPayloadBytes: number): ViewPage[] {
  const budget = Math.max(64, maxPayloadBytes - PAGE_OVERHEAD_BYTES - view.coordinator.length);
  const pages: ViewPage[] = [];
  const base = { viewId: BigInt(view.id), coordinatorNodeId: view.coordinator, memberCount: view.members.length };
  let page: ViewPage = { ...base, first: 0, members: [] };
  let bytes = 0;
  view.members.forEach((member, i) => {
    const size = WireViewMember.encode(member).finish().length + 3;
    if (page.members.length > 0 && bytes + size > budget) {
      pages.push(page);
      page = { ...base, first: i, members: [] };
      bytes = 0;
    }
    page.members.push(member);
    bytes += size;
  });
  pages.push(page);
  return pages;
}

interface Assembly {
  id: number;
  coordinator: string;
  slots: (ViewMember | undefined)[];
  filled: number;
}

export class ViewBook {
  private view: ClusterView | undefined;
  private assembly: Assembly | undefined;

  /** The view this node holds (undefined before the first). */
  get current(): ClusterView | undefined {
    return this.view;
  }

  get currentId(): number {
    return this.view?.id ?? 0;
  }

  /** Adopts a view this node published itself (it is the coordinator); ids only grow. */
  publish(view: ClusterView): boolean {
    if (view.id <= this.currentId) return false;
    this.view = view;
    if (this.assembly !== undefined && this.assembly.id <= view.id) this.assembly = undefined;
    return true;
  }

  /**
   * A page from `from`, while this node follows `coordinator` (undefined: none). Adopts the
   * view once every page of it arrived.
   */
  offer(page: ViewPage, from: string, coordinator: string | undefined): ViewOffer {
    const id = page.viewId > 0n && page.viewId <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(page.viewId) : 0;
    const count = page.memberCount;
    if (id === 0 || count < 1 || count > MAX_VIEW_MEMBERS || page.first + page.members.length > count || page.members.length === 0) return 'malformed';
    if (page.coordinatorNodeId !== from) return 'malformed';
    if (from !== coordinator) return 'not_coordinator';
    if (id <= this.currentId) return 'stale';
    let assembly = this.assembly;
    if (assembly !== undefined && id < assembly.id) return 'stale';
    if (assembly === undefined || id > assembly.id || assembly.coordinator !== from || assembly.slots.length !== count) {
      assembly = { id, coordinator: from, slots: new Array<ViewMember | undefined>(count).fill(undefined), filled: 0 };
      this.assembly = assembly;
    }
    for (let i = 0; i < page.members.length; i++) {
      const m = page.members[i]!;
      const at = page.first + i;
      if (!isNodeId(m.nodeId) || m.index !== at || m.role.length > 16) {
        this.assembly = undefined;
        return 'malformed';
      }
      if (assembly.slots[at] === undefined) assembly.filled++;
      assembly.slots[at] = { nodeId: m.nodeId, priority: m.priority, index: m.index, role: m.role };
    }
    if (assembly.filled < count) return 'pending';
    this.assembly = undefined;
    const members = assembly.slots as ViewMember[];
    if (new Set(members.map((m) => m.nodeId)).size !== members.length) return 'malformed';
    this.view = { id, coordinator: from, members };
    return 'adopted';
  }
}
