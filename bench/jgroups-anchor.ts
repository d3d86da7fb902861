/**
 * JGroups as the reference for baton's replication figures: JGroups 2.12 (Debian's
 * libjgroups-java) on its default UDP stack (udp.xml: IP multicast, NAKACK, UNICAST), one
 * sender → receivers, fixed-size messages, on this machine's loopback interface, in the
 * same run as baton's rows.
 *
 * The Java side is bench/jgroups/JGroupsAnchor.java, compiled at bench time with javac into
 * a scratch directory (removed afterwards; no class file is ever committed). What is
 * missing (java, javac, the jar) is reported with the Debian package that provides it, and
 * the bench goes on without this anchor; nothing is installed from here.
 *
 * One round: start the receivers, then the sender; the sender waits for the full view,
 * sends a warm-up, and once every receiver holds the warm-up the clock starts (the sender's
 * START) and stops per receiver when it holds every message (its DONE). Receiver msgs/s =
 * messages ÷ (START → its DONE), the same definition as baton's delivered deltas/s (first put →
 * converged). Every process has a deadline of its own, exits when its stdin closes, and is
 * stopped here in a finally.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { cpuSecondsOf, findOnPath, startChild, type Child } from './children';
import { gcRate, GcTotals, type GcRate } from './gc-pauses';
import { runToCompletion } from './support/child-process';

/** Where Debian's libjgroups-java puts the jar (BENCH_JGROUPS_JAR overrides). */
const DEBIAN_JAR = '/usr/share/java/jgroups.jar';
/** From the bench's dist/bench/ (or bench/ under ts-node) to the Java source in the repository. */
const SOURCE_CANDIDATES = [path.join(__dirname, '..', '..', 'bench', 'jgroups', 'JGroupsAnchor.java'), path.join(__dirname, 'jgroups', 'JGroupsAnchor.java')];
const MAIN_CLASS = 'JGroupsAnchor';

export interface JGroupsTools {
  java: string;
  javac: string;
  jar: string;
  source: string;
}

/** The tools the anchor needs, or a sentence saying what is missing and which package provides it. */
export function findJGroupsTools(): JGroupsTools | string {
  const missing: string[] = [];
  const java = findOnPath('java');
  const javac = findOnPath('javac');
  if (java === undefined || javac === undefined) missing.push(`${java === undefined ? 'java and javac are' : 'javac is'} not on the PATH (Debian: apt-get install default-jdk-headless)`);
  const jar = process.env.BENCH_JGROUPS_JAR ?? DEBIAN_JAR;
  if (!existsSync(jar)) missing.push(`${jar} is missing (Debian: apt-get install libjgroups-java; or set BENCH_JGROUPS_JAR)`);
  const source = SOURCE_CANDIDATES.find((p) => existsSync(p));
  if (source === undefined) missing.push(`the Java source is not at ${SOURCE_CANDIDATES[0]}`);
  if (missing.length > 0) return `JGroups anchor skipped: ${missing.join('; ')}`;
  return { java: java!, javac: javac!, jar, source: source! };
}

/** A compiled anchor: the class directory, removed by dispose(). */
export interface CompiledAnchor {
  tools: JGroupsTools;
  classDir: string;
  javaVersion: string;
  dispose(): void;
}

/** Compiles JGroupsAnchor.java into a fresh scratch directory (javac, bounded to 2 minutes). */
export async function compileJGroupsAnchor(tools: JGroupsTools): Promise<CompiledAnchor> {
  const classDir = mkdtempSync(path.join(os.tmpdir(), 'baton-jgroups-'));
  const dispose = () => rmSync(classDir, { recursive: true, force: true });
  try {
    const compiled = await runToCompletion({ name: 'javac', command: tools.javac, args: ['-nowarn', '-cp', tools.jar, '-d', classDir, tools.source] }, 120_000);
    if (compiled.code !== 0) throw new Error(`javac failed (code ${compiled.code}):\n${compiled.stderr}${compiled.stdout}`);
    const version = await runToCompletion({ name: 'java -version', command: tools.java, args: ['-version'] }, 30_000);
    const javaVersion = (version.stderr.split('\n').find((l) => /version/.test(l)) ?? 'unknown').trim();
    return { tools, classDir, javaVersion, dispose };
  } catch (err) {
    dispose();
    throw err;
  }
}

export interface JGroupsRoundOptions {
  receivers: number;
  /** Messages timed (after the warm-up). */
  messages: number;
  warmup: number;
  bytes: number;
  /** Upper bound of the whole round; every JVM exits by itself after it too. */
  maxSeconds: number;
  /** 239.x.y.z group and port, free on this machine. */
  group: string;
  port: number;
}

export interface JGroupsRound {
  /** msgs/s per receiver: messages ÷ (sender's START → the receiver's DONE). */
  perReceiver: number[];
  /** Seconds the sender took to hand every message to JGroups. */
  sendSeconds: number;
  /** Messages that arrived out of sequence, all receivers (0 for a reliable FIFO run). */
  orderErrors: number;
  /** CPU µs per message: the sender's and each receiver's process (JIT and GC threads included). */
  senderCpuUsPerMessage: number;
  receiverCpuUsPerMessage: number[];
  /** Of it, system time (the kernel's sends and receives). */
  senderSystemUsPerMessage: number;
  receiverSystemUsPerMessage: number[];
  /** GC pauses during the timed part, per process (-Xlog:gc). */
  senderGc: GcRate;
  receiverGc: GcRate[];
}

function jvmArgs(anchor: CompiledAnchor, options: JGroupsRoundOptions): string[] {
  return [
    // A bound on each JVM's heap (4 of them share the machine); GC pauses on stdout.
    '-Xmx512m',
    '-Xlog:gc:stdout',
    '-Djava.net.preferIPv4Stack=true',
    // Everything on loopback: the stack binds 127.0.0.1 and multicasts through it, TTL 1.
    '-Djgroups.bind_addr=127.0.0.1',
    `-Djgroups.udp.mcast_addr=${options.group}`,
    `-Djgroups.udp.mcast_port=${options.port}`,
    '-Djgroups.udp.ip_ttl=1',
    '-cp',
    `${anchor.classDir}${path.delimiter}${anchor.tools.jar}`,
    MAIN_CLASS,
  ];
}

/** One timed round of 1 sender → `receivers`; every JVM it starts is stopped before it returns. */
export async function runJGroupsRound(anchor: CompiledAnchor, options: JGroupsRoundOptions): Promise<JGroupsRound> {
  const cluster = `baton-anchor-${process.pid}-${options.port}`;
  const deadline = Date.now() + options.maxSeconds * 1000;
  const remaining = () => Math.max(1000, deadline - Date.now());
  const jvmSeconds = String(Math.ceil(options.maxSeconds) + 5);
  const children: Child[] = [];
  const gc: GcTotals[] = [];
  const start = (name: string, args: string[]) => {
    const child = startChild(name, anchor.tools.java, [...jvmArgs(anchor, options), ...args]);
    const totals = new GcTotals();
    child.onLine((line) => totals.addLine(line));
    children.push(child);
    gc.push(totals);
    return child;
  };
  try {
    const receivers: Child[] = [];
    for (let i = 0; i < options.receivers; i++) {
      receivers.push(start(`jgroups receiver ${i + 1}`, ['receiver', cluster, String(options.warmup), String(options.messages), jvmSeconds]));
    }
    await Promise.all(receivers.map((r) => r.waitForLine(/^READY$/, remaining())));
    const warm = receivers.map((r) => r.waitForLine(/^WARM \d+$/, remaining()));
    const done = receivers.map((r) => r.waitForLine(/^DONE (\d+) (\d+) (\d+)$/, remaining()));
    done.forEach((d) => d.catch(() => undefined));
    const sender = start('jgroups sender', ['sender', cluster, String(options.receivers + 1), String(options.warmup), String(options.messages), String(options.bytes), jvmSeconds]);
    await sender.waitForLine(/^WARMSENT$/, remaining());
    await Promise.all(warm);
    const pids = children.map((c) => c.process.pid);
    const cpuBefore = pids.map((pid) => cpuSecondsOf(pid));
    const systemBefore = pids.map((pid) => cpuSecondsOf(pid, 'system'));
    const gcBefore = gc.map((g) => g.snapshot());
    const started = sender.waitForLine(/^START (\d+)$/, remaining());
    const sent = sender.waitForLine(/^SENT (\d+)$/, remaining());
    sent.catch(() => undefined);
    const t0 = process.hrtime.bigint();
    sender.process.stdin!.write('go\n');
    const startNs = BigInt((await started)[1]!);
    const finished = await Promise.all(done);
    const sentNs = BigInt((await sent)[1]!);
    const wallSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const cpuAfter = pids.map((pid) => cpuSecondsOf(pid));
    const systemAfter = pids.map((pid) => cpuSecondsOf(pid, 'system'));
    const gcAfter = gc.map((g) => g.snapshot());
    const cpuUs = (i: number) => ((cpuAfter[i]! - cpuBefore[i]!) * 1e6) / options.messages;
    const systemUs = (i: number) => ((systemAfter[i]! - systemBefore[i]!) * 1e6) / options.messages;
    const rates = gc.map((_, i) => gcRate(gcBefore[i]!, gcAfter[i]!, wallSeconds));
    return {
      perReceiver: finished.map((m) => options.messages / (Number(BigInt(m[2]!) - startNs) / 1e9)),
      sendSeconds: Number(sentNs - startNs) / 1e9,
      orderErrors: finished.reduce((n, m) => n + Number(m[3]), 0),
      senderCpuUsPerMessage: cpuUs(options.receivers),
      receiverCpuUsPerMessage: receivers.map((_, i) => cpuUs(i)),
      senderSystemUsPerMessage: systemUs(options.receivers),
      receiverSystemUsPerMessage: receivers.map((_, i) => systemUs(i)),
      senderGc: rates[options.receivers]!,
      receiverGc: rates.slice(0, options.receivers),
    };
  } finally {
    for (const child of children) child.process.stdin?.end();
    await Promise.all(children.map((c) => c.stop(3000)));
  }
}
