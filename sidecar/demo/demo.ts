/**
 * `baton demo`: the shop behind baton's capture proxy on localhost. Three baton nodes, each
 * terminating TLS in front of its own shop pod (`baton demo-shop --behind-proxy`, whose
 * code has no baton calls for auth); a customer (HTTPS, trusting only a CA the demo makes)
 * logs in and fills a cart through pod 0's proxy; baton node 0 and shop pod 0 are killed
 * with SIGKILL, and the customer's next request goes to pod 1's proxy with the same cookie
 * and the same TLS session. The demo prints each step, what the TLS layer and the proxy
 * did, and the session as pod 1 got it, and passes only if all of it holds.
 *
 * Rules:
 * - Every figure printed comes from the customer's socket or a shop answer, and every shop
 *   answer from what baton returned or told the shop (its x-baton-* headers); nothing is
 *   assumed.
 * - Pass means, on pod 1 after the kill: the handshake was resumed (the socket says so and
 *   the shop got x-baton-tls-resumed: 1), the request arrived logged in as the same user
 *   (x-baton-auth-subject) and resumed from node 0 (x-baton-resumed-from), the cart holds
 *   exactly the items added before the kill, and then the item added after it. Where the
 *   session's ownership ended up is printed, not judged.
 * - Whatever happens (failure, timeout, SIGINT/SIGTERM), the nodes and servers are stopped
 *   before runDemo returns.
 */
import * as path from 'node:path';
import { makeDemoCa, type DemoCa } from './demo-ca';
import { DemoCluster, type DemoNode, type DemoProcess } from './demo-cluster';
import { Customer, type Visit } from './demo-customer';
import type { CartLine, ShopAnswer } from './demo-shop';
import { freePeerPorts } from './free-ports';

export interface DemoOptions {
  /** Where the story goes, one line per call; default: stdout. */
  write?: (line: string) => void;
  /** The demo fails if it has not finished after this long (clean-up comes on top); default 45 s. */
  timeoutMs?: number;
  /** The compiled CLI the nodes run; default: dist/sidecar/cli/main.js. */
  batonBin?: string;
}

const NODE_IDS = ['shop-node-0', 'shop-node-1', 'shop-node-2'];
const POD_IDS = ['pod-0', 'pod-1', 'pod-2'];
// Generous: a loaded machine took 7.5 s to start three nodes with their proxies.
const NODE_START_TIMEOUT_MS = 20_000;
const CLUSTER_FORM_TIMEOUT_MS = 10_000;
// Ready: caught up and holding the cluster's TLS ticket keys (what resumption on pod 1 needs).
const CLUSTER_READY_TIMEOUT_MS = 15_000;
const SHOP_START_TIMEOUT_MS = 10_000;
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
  const abort = new AbortController();
  const ca = makeDemoCa();
  const customer = new Customer(ca.caPem, abort.signal);
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
    await Promise.race([story(write, cluster, ca, customer, abort.signal), stopped]);
  } catch (err) {
    failure = err instanceof Error ? err.message : String(err);
  }
  clearTimeout(timer);
  abort.abort();
  customer.forgetAll();
  write('');
  // Said before the wait: a node's drain can take seconds (until a dead peer is declared dead).
  if (cluster.nodes.length > 0) write('stopping the shop pods and the nodes (SIGTERM: each node drains before it exits)…');
  await cluster.stop(STOP_GRACE_MS);
  ca.remove();
  const ends = (processes: readonly DemoProcess[]) => processes.map((p) => `${p.id} ${p.exit ?? 'still running'}`).join(', ');
  const elapsed = ((Date.now() - started) / 1000).toFixed(1);
  write(`cleaned up: ${ends(cluster.shops) || 'no shop pods started'}; ${ends(cluster.nodes) || 'no nodes started'} (${elapsed} s in all)`);
  if (failure !== undefined) {
    write(`FAIL: ${failure}`);
    return 1;
  }
  write(
    `PASS: the session survived the loss of ${NODE_IDS[0]} and ${POD_IDS[0]}: TLS resumed on ${POD_IDS[1]}, still logged in, ` +
      'the cart from before the kill, and the item added after it.',
  );
  return 0;
}

async function story(write: (line: string) => void, cluster: DemoCluster, ca: DemoCa, customer: Customer, signal: AbortSignal): Promise<void> {
  write("baton demo: a shop behind baton's capture proxy on localhost; a customer loses the pod serving her");
  write('');
  // Each node's proxy forwards to its own shop pod, which starts once the node's API is known.
  const shopPorts = await freePeerPorts(POD_IDS.length);
  const proxyArgs = (i: number) => [
    '--proxy-listen', '127.0.0.1:0',
    '--proxy-upstream', `http://127.0.0.1:${shopPorts[i]}`,
    '--tls-cert-file', ca.certFile,
    '--tls-key-file', ca.keyFile,
  ];
  await cluster.start(NODE_IDS, NODE_START_TIMEOUT_MS, proxyArgs);
  for (const node of cluster.nodes) {
    write(`   started ${node.id}  pid ${node.pid}  api ${node.apiAddress}  peer ${node.peerAddress}  proxy https://127.0.0.1:${node.proxyPort}`);
  }
  const formingSince = Date.now();
  await cluster.waitUntilFormed(CLUSTER_FORM_TIMEOUT_MS);
  await cluster.waitUntilReady(CLUSTER_READY_TIMEOUT_MS);
  write(`   cluster formed and ready: every node sees ${cluster.nodes.length} alive members and holds the TLS ticket keys (${Date.now() - formingSince} ms)`);
  signal.throwIfAborted();
  // Spawned together, in this tick: a stop that comes later finds every pod among the children.
  const shops = await Promise.all(cluster.nodes.map((node, i) => cluster.startShop(POD_IDS[i]!, shopPorts[i]!, node, SHOP_START_TIMEOUT_MS)));
  for (const [i, shop] of shops.entries()) {
    write(`   started shop ${shop.id}  pid ${shop.pid}  http://127.0.0.1:${shopPorts[i]}, behind ${cluster.nodes[i]!.id}'s proxy`);
  }
  write('   the customer trusts only the demo CA; the shop has no baton calls for auth (its login answers x-baton-auth-subject)');
  write('');

  const [node0, node1] = cluster.nodes as [DemoNode, DemoNode, DemoNode];
  const port0 = node0.proxyPort!;
  const port1 = node1.proxyPort!;
  let step = 0;
  const say = (text: string) => write(`${++step}. ${text}`);

  const login = await customer.send(port0, 'POST', '/login', { user: USER });
  say(`${USER} logs in through pod 0's proxy (${tls(login)}) -> ${login.answer.pod} answered x-baton-auth-subject: ${login.answer.user}; session ${short(login.answer)}`);
  for (const line of BEFORE_KILL) {
    const added = await customer.send(port0, 'POST', '/cart', line);
    say(`${USER} adds ${line.quantity} x ${line.name} on ${added.answer.pod} (arrived as x-baton-auth-subject: ${added.answer.capture?.authSubject || '(none)'}), ${acked(added.answer)}`);
  }
  const before = await customer.send(port0, 'GET', '/cart');
  say(`${USER} views her cart on ${before.answer.pod}:`);
  printSession(write, before.answer);
  const beforeProblems = compare(before.answer, USER, BEFORE_KILL, 'before the kill');
  if (before.answer.capture?.authSubject !== USER) beforeProblems.push(`the request arrived as '${before.answer.capture?.authSubject ?? ''}', not as ${USER}`);
  if (beforeProblems.length > 0) throw new Error(`the session on ${before.answer.pod} is wrong before any failure: ${beforeProblems.join('; ')}`);

  signal.throwIfAborted();
  await Promise.all([cluster.kill(node0.id), cluster.kill(POD_IDS[0]!)]);
  customer.forget(port0);
  say(`SIGKILL ${node0.id} (pid ${node0.pid}, ${node0.exit}) and ${POD_IDS[0]} (pid ${cluster.shops[0]!.pid}, ${cluster.shops[0]!.exit})`);

  const recovered = await customer.send(port1, 'GET', '/cart');
  const capture = recovered.answer.capture;
  say(`${USER}'s next request goes to pod 1's proxy (baton ${node1.id}) with the same cookie and TLS session: GET /cart`);
  write(`     TLS handshake: ${recovered.tlsReused ? 'Reused' : 'New'}, ${recovered.tlsProtocol}; ${recovered.answer.pod} got x-baton-tls-resumed: ${capture?.tlsResumed || '(none)'}`);
  write(`     logged in: x-baton-auth-subject: ${capture?.authSubject || '(none)'}`);
  write(`     resumed: x-baton-resumed-from: ${capture?.resumedFrom || '(none)'}`);
  printSession(write, recovered.answer);
  write(`     ${ownership(recovered.answer, node1.id)}`);
  const problems = compare(recovered.answer, USER, BEFORE_KILL, 'after the kill');
  if (!recovered.tlsReused) problems.push('the TLS handshake was not resumed (a full handshake)');
  if (capture?.tlsResumed !== '1') problems.push(`the shop got x-baton-tls-resumed: '${capture?.tlsResumed ?? ''}', not 1`);
  if (capture?.authSubject !== USER) problems.push(`the request arrived as '${capture?.authSubject ?? ''}', not logged in as ${USER}`);
  if (capture?.resumedFrom !== node0.id) problems.push(`x-baton-resumed-from was '${capture?.resumedFrom ?? ''}', not ${node0.id}`);
  if (problems.length > 0) throw new Error(`the session did not survive intact on ${recovered.answer.pod}: ${problems.join('; ')}`);

  const added = await customer.send(port1, 'POST', '/cart', AFTER_KILL);
  say(`${USER} adds ${AFTER_KILL.quantity} x ${AFTER_KILL.name} on ${added.answer.pod}, ${acked(added.answer)}`);
  const final = await customer.send(port1, 'GET', '/cart');
  say(`${USER} views her cart on ${final.answer.pod}:`);
  printSession(write, final.answer);
  const finalProblems = compare(final.answer, USER, [...BEFORE_KILL, AFTER_KILL], 'after the new item');
  if (finalProblems.length > 0) throw new Error(`the cart on ${final.answer.pod} is wrong: ${finalProblems.join('; ')}`);
}

function tls(visit: Visit): string {
  return `TLS ${visit.tlsReused ? 'Reused' : 'New'}, ${visit.tlsProtocol}`;
}

function short(answer: ShopAnswer): string {
  return `${answer.session.slice(0, 8)}…`;
}

function printSession(write: (line: string) => void, answer: ShopAnswer): void {
  write(`     user ${answer.user}, session ${short(answer)}`);
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
