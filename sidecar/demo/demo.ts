/**
 * `baton demo`: three baton nodes and a three-pod HTTP shop on localhost; a customer logs
 * in and fills a cart on pod 0, the baton node behind pod 0 is killed with SIGKILL, and the
 * customer carries on at pod 1. The demo prints each step and the session as pod 1 got it
 * back from baton, and passes only if that session is intact.
 *
 * Rules:
 * - Every figure printed comes from a shop answer, and every shop answer from what baton
 *   returned; nothing is assumed.
 * - Pass means: the same user, exactly the items added before the kill, and the item added
 *   after it. Where the session's ownership ended up is printed, not judged.
 * - Whatever happens (failure, timeout, SIGINT/SIGTERM), the nodes and servers are stopped
 *   before runDemo returns.
 */
import * as path from 'node:path';
import { DemoCluster, type DemoNode } from './demo-cluster';
import { ShopPod, type CartLine, type ShopAnswer } from './demo-shop';

export interface DemoOptions {
  /** Where the story goes, one line per call; default: stdout. */
  write?: (line: string) => void;
  /** The demo fails if it has not finished after this long (clean-up comes on top); default 45 s. */
  timeoutMs?: number;
  /** The compiled CLI the nodes run; default: dist/sidecar/cli/main.js. */
  batonBin?: string;
}

const NODE_IDS = ['shop-node-0', 'shop-node-1', 'shop-node-2'];
const NODE_START_TIMEOUT_MS = 10_000;
const CLUSTER_FORM_TIMEOUT_MS = 10_000;
// A node asked to stop waits until its writes are acknowledged or their peer is declared
// dead (3 s after a crash, by default); SIGKILL only past that.
const STOP_GRACE_MS = 10_000;
// With STOP_GRACE_MS on top, the demo ends within a minute even when it fails.
const DEFAULT_TIMEOUT_MS = 45_000;
const USER = 'alice';

const BEFORE_KILL: readonly CartLine[] = [
  { sku: 'LAMP-1', name: 'Desk lamp', quantity: 1, unitPriceMinor: 2999 },
  { sku: 'MUG-2', name: 'Coffee mug', quantity: 2, unitPriceMinor: 1250 },
];
const AFTER_KILL: CartLine = { sku: 'BOOK-3', name: 'Notebook', quantity: 3, unitPriceMinor: 499 };

/** Runs the demo; resolves with the process exit code: 0 if the session survived intact, 1 otherwise. */
export async function runDemo(options: DemoOptions = {}): Promise<number> {
  const write = options.write ?? ((line: string) => process.stdout.write(`${line}\n`));
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const cluster = new DemoCluster(options.batonBin ?? path.join(__dirname, '..', 'cli', 'main.js'));
  const pods: ShopPod[] = [];
  const abort = new AbortController();
  const started = Date.now();

  let timer: NodeJS.Timeout | undefined;
  const stopped = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the demo did not finish within ${timeoutMs / 1000} s`)), timeoutMs);
    const onSignal = (signal: NodeJS.Signals) => reject(new Error(`interrupted by ${signal}`));
    process.once('SIGINT', onSignal).once('SIGTERM', onSignal);
    abort.signal.addEventListener('abort', () => {
      process.removeListener('SIGINT', onSignal).removeListener('SIGTERM', onSignal);
    });
  });

  let failure: string | undefined;
  try {
    await Promise.race([story(write, cluster, pods, abort.signal), stopped]);
  } catch (err) {
    failure = err instanceof Error ? err.message : String(err);
  }
  clearTimeout(timer);
  abort.abort();
  write('');
  // Said before the wait: a node's drain can take seconds (until a dead peer is declared dead).
  if (cluster.nodes.length > 0) write('stopping the shop and the nodes (SIGTERM: each node drains before it exits)…');
  await Promise.all(pods.map((pod) => pod.close()));
  await cluster.stop(STOP_GRACE_MS);
  const ends = cluster.nodes.map((node) => `${node.id} ${node.exit ?? 'still running'}`).join(', ');
  write(`cleaned up: shop stopped; ${ends || 'no nodes started'} (${((Date.now() - started) / 1000).toFixed(1)} s in all)`);
  if (failure !== undefined) {
    write(`FAIL: ${failure}`);
    return 1;
  }
  write(`PASS: the session survived the loss of ${NODE_IDS[0]}: same user, the cart from before the kill, and the item added after it.`);
  return 0;
}

async function story(write: (line: string) => void, cluster: DemoCluster, pods: ShopPod[], signal: AbortSignal): Promise<void> {
  write('baton demo: three baton nodes and a shop on localhost; a customer loses the node serving her');
  write('');
  await cluster.start(NODE_IDS, NODE_START_TIMEOUT_MS);
  for (const node of cluster.nodes) write(`   started ${node.id}  pid ${node.pid}  api ${node.apiAddress}  peer ${node.peerAddress}`);
  const formingSince = Date.now();
  await cluster.waitUntilFormed(CLUSTER_FORM_TIMEOUT_MS);
  write(`   cluster formed: every node sees ${cluster.nodes.length} alive members (${Date.now() - formingSince} ms)`);
  const urls: string[] = [];
  for (const [i, node] of cluster.nodes.entries()) {
    signal.throwIfAborted();
    const pod = new ShopPod(`pod ${i}`, node.id, node.apiAddress);
    pods.push(pod);
    urls.push(await pod.listen());
    write(`   shop ${pod.name} at ${urls[i]}, beside ${node.id}`);
  }
  write('');

  const customer = new Customer(signal);
  const [node0, node1] = cluster.nodes as [DemoNode, DemoNode, DemoNode];
  let step = 0;
  const say = (text: string) => write(`${++step}. ${text}`);

  const login = await customer.send(urls[0]!, 'POST', '/login', { user: USER });
  say(`${USER} logs in on pod 0 (baton ${login.node}) -> session ${login.session.slice(0, 8)}…, ${acked(login)}`);
  for (const line of BEFORE_KILL) {
    const added = await customer.send(urls[0]!, 'POST', '/cart', line);
    say(`${USER} adds ${line.quantity} x ${line.name} on pod 0 (baton ${added.node}), ${acked(added)}`);
  }
  const before = await customer.send(urls[0]!, 'GET', '/cart');
  say(`${USER} views her cart on pod 0 (baton ${before.node}):`);
  printSession(write, before);
  const beforeProblems = compare(before, USER, BEFORE_KILL, 'before the kill');
  if (beforeProblems.length > 0) throw new Error(`the cart on ${before.node} is wrong before any failure: ${beforeProblems.join('; ')}`);

  signal.throwIfAborted();
  await cluster.kill(node0.id);
  await pods[0]!.close();
  say(`SIGKILL ${node0.id} (pid ${node0.pid}, ${node0.exit}); pod 0 is gone with it`);

  const recovered = await customer.send(urls[1]!, 'GET', '/cart');
  say(`${USER}'s next request goes to pod 1 (baton ${recovered.node}): GET /cart -> the recovered session:`);
  printSession(write, recovered);
  write(`     ${ownership(recovered, node1.id)}`);
  const problems = compare(recovered, USER, BEFORE_KILL, 'after the kill');
  if (problems.length > 0) throw new Error(`the session did not survive intact on ${recovered.node}: ${problems.join('; ')}`);

  const added = await customer.send(urls[1]!, 'POST', '/cart', AFTER_KILL);
  say(`${USER} adds ${AFTER_KILL.quantity} x ${AFTER_KILL.name} on pod 1 (baton ${added.node}), ${acked(added)}`);
  const final = await customer.send(urls[1]!, 'GET', '/cart');
  say(`${USER} views her cart on pod 1 (baton ${final.node}):`);
  printSession(write, final);
  const finalProblems = compare(final, USER, [...BEFORE_KILL, AFTER_KILL], 'after the new item');
  if (finalProblems.length > 0) throw new Error(`the cart on ${final.node} is wrong: ${finalProblems.join('; ')}`);
}

/** The customer's browser: keeps the session cookie, sends JSON, and turns any non-200 answer into an error. */
class Customer {
  private cookie = '';

  constructor(private readonly signal: AbortSignal) {}

  async send(baseUrl: string, method: 'GET' | 'POST', route: string, body?: unknown): Promise<ShopAnswer> {
    this.signal.throwIfAborted();
    const headers: Record<string, string> = {};
    if (this.cookie !== '') headers.cookie = this.cookie;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const response = await fetch(`${baseUrl}${route}`, {
      method,
      headers,
      body: body === undefined ? null : JSON.stringify(body),
      signal: this.signal,
    });
    const setCookie = response.headers.get('set-cookie');
    if (setCookie !== null) this.cookie = setCookie.split(';', 1)[0]!;
    const answer = (await response.json()) as ShopAnswer & { error?: string };
    if (response.status !== 200) throw new Error(`${method} ${route} at ${baseUrl} answered ${response.status}: ${answer.error ?? 'no reason given'}`);
    return answer;
  }
}

function printSession(write: (line: string) => void, answer: ShopAnswer): void {
  write(`     user ${answer.user}, session ${answer.session.slice(0, 8)}…`);
  for (const item of answer.items) {
    const amount = money(item.quantity * item.unitPriceMinor, answer.currency);
    write(`     ${String(item.quantity).padStart(3)} x ${item.name.padEnd(12)} ${item.sku.padEnd(7)} ${amount.padStart(12)}`);
  }
  write(`     total ${money(answer.totalMinor, answer.currency).padStart(33)}`);
  write(`     baton: owner ${answer.owner || '(none)'}, epoch ${answer.epoch}, cart part written by ${answer.cartWrittenBy || '(nobody)'}`);
}

function ownership(answer: ShopAnswer, expected: string): string {
  if (answer.owner === expected) return `owner moved to ${expected} (epoch ${answer.epoch})`;
  return `the owner is still ${answer.owner || '(none)'} (epoch ${answer.epoch}): ${expected} served the session from its replica without claiming it`;
}

function acked(answer: ShopAnswer): string {
  const n = answer.replicasAcked ?? 0;
  return `write acknowledged by ${n} secondar${n === 1 ? 'y' : 'ies'}`;
}

/** What differs between a shop answer and the expected user and items (in order); empty when they match. */
function compare(answer: ShopAnswer, user: string, items: readonly CartLine[], when: string): string[] {
  const problems: string[] = [];
  if (answer.user !== user) problems.push(`user is '${answer.user}' ${when}, was '${user}'`);
  const describe = (lines: readonly CartLine[]) =>
    lines.map((l) => `${l.quantity} x ${l.sku} @ ${l.unitPriceMinor}`).join(', ') || 'an empty cart';
  if (describe(answer.items) !== describe(items)) problems.push(`cart holds ${describe(answer.items)} ${when}, expected ${describe(items)}`);
  return problems;
}

function money(minor: number, currency: string): string {
  return `${Math.floor(minor / 100)}.${String(minor % 100).padStart(2, '0')} ${currency}`;
}
