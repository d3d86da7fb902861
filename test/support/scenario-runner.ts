/**
 * Runs a parsed scenario against a backend (the simulator, or real processes) and writes
 * its transcript: every command as `> text`, then what it did, indented.
 *
 * Rules:
 * - The runner decides what is printed; a backend only reports observations. So two
 *   backends that observe the same outcome print the same lines.
 * - Lines starting with `  ~ ` are details only one backend can give (virtual time, datagram
 *   counters). Everything else is an outcome both backends must agree on: a comparison
 *   across backends drops the `~` lines (`outcomeLines`).
 * - An `expect` that does not hold prints `FAILED: …`, is collected with its line number,
 *   and the run goes on (the transcript shows the rest of the story). A command that cannot
 *   run at all (a node that is not running, a backend that cannot do it) ends the run with
 *   a ScenarioError naming the line.
 * - Session contents here are the scenario's own test strings: printing them is the point.
 */
import type { ClusterSettings, Command, PartValue } from './scenario-parser';
import { DEFAULT_CLUSTER_SETTINGS } from './scenario-parser';

/** A node's local copy of a session (live parts only). */
export interface SessionView {
  owner: string;
  epoch: number;
  /** Part name → value (latin1). */
  parts: Record<string, string>;
}

export interface ConvergeResult {
  converged: boolean;
  /** What still differs when it did not converge (readable lines). */
  problems: string[];
  /** Backend-specific figures (printed as `~` lines). */
  details: string[];
}

/**
 * What a scenario needs from a cluster. Node names are the scenario's; a backend maps them
 * to its own node ids and maps owners back. Every method may throw UnsupportedCommandError
 * for what the backend cannot do; it must never pretend.
 */
export interface ScenarioBackend {
  readonly name: string;
  /** Starts the first nodes and returns once every one is ready (caught up) and sees all of them alive. `allNames`: every node the scenario will ever start. */
  startCluster(settings: ClusterSettings, names: readonly string[], allNames: readonly string[]): Promise<void>;
  /** Starts a node that never ran (a joiner); returns once it runs, not once it caught up. */
  startNode(name: string): Promise<void>;
  /** Crashes a node: no leave, nothing more sent, its state gone. */
  kill(name: string): Promise<void>;
  /** Starts a stopped node again as a new incarnation with an empty store. */
  restart(name: string): Promise<void>;
  /** Graceful stop: flush, wait for acknowledgements (bounded), leave, stop. */
  drain(name: string): Promise<{ allAcknowledged: boolean }>;
  /** Puts parts through the node's API; with sync > 0 waits (bounded) for that many acknowledgements and reports how many came. */
  write(node: string, session: string, parts: readonly PartValue[], sync: number): Promise<{ acked: number | undefined }>;
  /** Deletes named parts, or the whole session when `parts` is empty; whether any of it existed. */
  delete(node: string, session: string, parts: readonly string[]): Promise<boolean>;
  /** Resumes the session on the node (fetch from peers, claim); its copy afterwards. */
  resume(node: string, session: string): Promise<SessionView | undefined>;
  /** The node's local copy, read without resuming. */
  read(node: string, session: string): Promise<SessionView | undefined>;
  /** The nodes this node sees alive (itself included), sorted. */
  alive(node: string): Promise<string[]>;
  drop(from: string, to: string, percent: number): Promise<void>;
  /** One-way delay on a link (0: the usual delay again); simulation only. */
  delay(from: string, to: string, ms: number): Promise<void>;
  partition(groups: readonly (readonly string[])[]): Promise<void>;
  heal(): Promise<void>;
  advance(ms: number): Promise<void>;
  /** Runs until membership matches the running nodes, replication is quiet and every holder of `sessions` agrees; bounded by withinMs. */
  converge(sessions: readonly string[], withinMs: number): Promise<ConvergeResult>;
  /** The coordinator the node follows ('' when none), the id of the view it holds (0: none) and that view's members, sorted. */
  coordination(name: string): Promise<{ coordinator: string; viewId: number; members: string[] }>;
  /** Backend-specific counters of a node since the cluster was ready, or since the node (re)started after that (printed as `~` lines). */
  counters(name: string): Promise<string[]>;
  /**
   * Partition masters: for each partition, what each running node that holds it names as
   * its master (nodes that hold no copy are left out; undefined: it knows none).
   */
  masters(): Promise<{ partition: number; views: Map<string, string | undefined> }[]>;
  /** Sessions the node claimed since it started, by reason. */
  claims(name: string): Promise<{ resume: number; takeover: number }>;
  /**
   * Since the cluster was ready (or the node started after that): how often the node became
   * master by its election timer, and REVOKEs it sent; the partitions it masters now.
   */
  elections(name: string): Promise<{ elected: number; revokes: number; mastered: number }>;
  /** The node's --priority from its next start (start, restart, or the first nodes line) on. */
  setPriority(name: string, priority: number): Promise<void>;
  /** Extra detail after advance (e.g. the virtual time). */
  clockDetail(): string | undefined;
  /** Stops everything this backend started. */
  close(): Promise<void>;
}

export class UnsupportedCommandError extends Error {
  constructor(backend: string, what: string) {
    super(`the ${backend} backend cannot ${what}`);
    this.name = 'UnsupportedCommandError';
  }
}

/** A command that could not run; names its line. */
export class ScenarioError extends Error {
  constructor(
    readonly line: number,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(`line ${line}: ${message}`, options);
    this.name = 'ScenarioError';
  }
}

export interface ScenarioResult {
  transcript: string[];
  /** `line N: command: what did not hold`, one per failed expectation. */
  failures: string[];
}

/** The transcript without backend-specific detail lines. */
export function outcomeLines(transcript: readonly string[]): string[] {
  return transcript.filter((line) => !line.startsWith('  ~ '));
}

export async function runScenario(commands: readonly Command[], backend: ScenarioBackend): Promise<ScenarioResult> {
  const runner = new Runner(commands, backend);
  try {
    for (const command of commands) await runner.run(command);
  } finally {
    await backend.close();
  }
  return { transcript: runner.transcript, failures: runner.failures };
}

class Runner {
  readonly transcript: string[] = [];
  readonly failures: string[] = [];
  private settings: ClusterSettings = { ...DEFAULT_CLUSTER_SETTINGS };
  private readonly running = new Set<string>();
  /** Sessions the scenario wrote, deleted or resumed, in first-mention order (converge checks them). */
  private readonly sessions = new Set<string>();
  /** `node session` → acknowledgements of the last sync write. */
  private readonly acks = new Map<string, number | undefined>();
  private readonly allNames: string[];

  constructor(
    commands: readonly Command[],
    private readonly backend: ScenarioBackend,
  ) {
    this.allNames = [...new Set(commands.flatMap((c) => (c.kind === 'nodes' ? c.names : c.kind === 'start' ? [c.name] : [])))];
  }

  async run(c: Command): Promise<void> {
    this.transcript.push(`> ${c.text}`);
    try {
      await this.execute(c);
    } catch (err) {
      if (err instanceof ScenarioError) throw err;
      throw new ScenarioError(c.line, `${c.text}: ${(err as Error).message}`, { cause: err });
    }
  }

  private out(line: string): void {
    this.transcript.push(`  ${line}`);
  }

  private detail(line: string): void {
    this.transcript.push(`  ~ ${line}`);
  }

  private fail(c: Command, message: string): void {
    this.out(`FAILED: ${message}`);
    this.failures.push(`line ${c.line}: ${c.text}: ${message}`);
  }

  private needRunning(name: string): void {
    if (!this.running.has(name)) throw new Error(`node ${name} is not running`);
  }

  private async execute(c: Command): Promise<void> {
    const b = this.backend;
    switch (c.kind) {
      case 'cluster':
        this.settings = c.settings;
        this.out(`seed ${c.settings.seed}, ${c.settings.transport}, ${c.settings.replicas} replicas, ${c.settings.partitions} partitions`);
        return;
      case 'nodes':
        await b.startCluster(this.settings, c.names, this.allNames);
        for (const name of c.names) this.started(name);
        this.out(`up and ready: ${c.names.join(' ')}; each sees ${[...c.names].sort().join(' ')} alive`);
        return;
      case 'start':
        await b.startNode(c.name);
        this.started(c.name);
        this.out(`${c.name} up with an empty store`);
        return;
      case 'kill':
        this.needRunning(c.name);
        await b.kill(c.name);
        this.running.delete(c.name);
        this.out(`${c.name} killed: no leave, its state gone`);
        return;
      case 'restart':
        if (this.running.has(c.name)) {
          await b.kill(c.name);
          this.running.delete(c.name);
          this.out(`${c.name} killed`);
        }
        await b.restart(c.name);
        this.running.add(c.name);
        this.out(`${c.name} restarted as a new incarnation with an empty store`);
        return;
      case 'drain': {
        this.needRunning(c.name);
        const { allAcknowledged } = await b.drain(c.name);
        this.running.delete(c.name);
        this.out(`${c.name} drained and left: ${allAcknowledged ? 'every delta acknowledged' : 'NOT every delta acknowledged before the deadline'}`);
        return;
      }
      case 'write': {
        this.needRunning(c.node);
        const results: [string, string][] = [];
        for (const session of c.sessions) {
          this.sessions.add(session);
          const { acked } = await b.write(c.node, session, c.parts, c.sync);
          if (c.sync > 0) this.acks.set(`${c.node} ${session}`, acked);
          results.push([session, c.sync === 0 ? 'written' : acked !== undefined && acked >= c.sync ? `written, acked by ${acked}` : `written, acked by ${acked ?? 0} of ${c.sync} before the deadline`]);
        }
        for (const line of grouped(results)) this.out(line);
        return;
      }
      case 'delete': {
        this.needRunning(c.node);
        const results: [string, string][] = [];
        for (const session of c.sessions) {
          this.sessions.add(session);
          const found = await b.delete(c.node, session, c.parts);
          results.push([session, found ? (c.parts.length === 0 ? 'deleted' : `deleted ${c.parts.join(' ')}`) : 'not found']);
        }
        for (const line of grouped(results)) this.out(line);
        return;
      }
      case 'resume': {
        this.needRunning(c.node);
        const results: [string, string][] = [];
        for (const session of c.sessions) {
          this.sessions.add(session);
          const view = await b.resume(c.node, session);
          results.push([session, view === undefined ? 'not found' : describeView(view)]);
        }
        for (const line of grouped(results)) this.out(line);
        return;
      }
      case 'drop':
        await b.drop(c.from, c.to, c.percent);
        if (c.both) await b.drop(c.to, c.from, c.percent);
        this.out(`${c.from}->${c.to}${c.both ? ` and ${c.to}->${c.from}` : ''} ${c.percent === 0 ? 'lose nothing' : `lose ${c.percent}% of datagrams`}`);
        return;
      case 'delay':
        await b.delay(c.from, c.to, c.ms);
        if (c.both) await b.delay(c.to, c.from, c.ms);
        this.out(`${c.from}->${c.to}${c.both ? ` and ${c.to}->${c.from}` : ''} ${c.ms === 0 ? 'usual delay' : `delayed ${c.ms} ms`}`);
        return;
      case 'partition':
        await b.partition(c.groups);
        this.out(`cut between ${c.groups.map((g) => g.join(' ')).join(' | ')}`);
        return;
      case 'heal':
        await b.heal();
        this.out('every link whole again, no loss');
        return;
      case 'advance': {
        await b.advance(c.ms);
        const clock = b.clockDetail();
        if (clock !== undefined) this.detail(clock);
        return;
      }
      case 'converge': {
        const result = await b.converge([...this.sessions], c.withinMs);
        if (result.converged) this.out(`converged: ${this.running.size === 0 ? 'no node running' : `${[...this.running].sort().join(' ')} agree`}`);
        else this.fail(c, `not converged within ${c.withinMs} ms: ${result.problems.slice(0, 5).join('; ')}${result.problems.length > 5 ? ` (+${result.problems.length - 5} more)` : ''}`);
        for (const line of result.details) this.detail(line);
        return;
      }
      case 'expect':
        return this.expectCopies(c);
      case 'expect-owner':
        return this.expectOwner(c);
      case 'expect-acked': {
        const key = `${c.node} ${c.session}`;
        if (!this.acks.has(key)) throw new Error(`no write with sync=N was made through ${c.node} on ${c.session}`);
        const acked = this.acks.get(key) ?? 0;
        if (acked >= c.atLeast) this.out(`ok: acked by ${acked}`);
        else this.fail(c, `acked by ${acked}, wanted at least ${c.atLeast}`);
        return;
      }
      case 'expect-alive': {
        this.needRunning(c.node);
        const seen = await b.alive(c.node);
        if (seen.join(' ') === c.alive.join(' ')) this.out(`ok: ${c.node} sees ${seen.join(' ')} alive`);
        else this.fail(c, `${c.node} sees ${seen.join(' ') || 'nobody'} alive`);
        return;
      }
      case 'views':
        for (const name of [...this.running].sort()) {
          const v = await b.coordination(name);
          this.out(`${name}: coordinator ${v.coordinator || 'none'}, view ${v.viewId}${v.viewId > 0 ? ` of ${v.members.join(' ')}` : ''}`);
        }
        return;
      case 'expect-coordinator': {
        this.needRunning(c.coordinator);
        const names = [...this.running].sort();
        const seen = await Promise.all(names.map((name) => b.coordination(name)));
        const ids = new Set(seen.map((v) => v.viewId));
        const wrong = names.filter((_, i) => seen[i]!.coordinator !== c.coordinator);
        const view = seen[0]!;
        if (wrong.length === 0 && ids.size === 1 && view.viewId > 0) this.out(`ok: ${names.join(' ')} follow ${c.coordinator}, view ${view.viewId} of ${view.members.join(' ')}`);
        else this.fail(c, names.map((name, i) => `${name} follows ${seen[i]!.coordinator || 'none'} at view ${seen[i]!.viewId}`).join(', '));
        return;
      }
      case 'counters':
        this.needRunning(c.name);
        for (const line of await b.counters(c.name)) this.detail(`${c.name}: ${line}`);
        return;
      case 'claims': {
        this.needRunning(c.name);
        const claims = await b.claims(c.name);
        this.out(`${c.name} claimed ${claims.takeover} by takeover, ${claims.resume} by resume`);
        return;
      }
      case 'expect-masters':
      case 'masters':
        return this.masters(c);
      case 'elections': {
        this.needRunning(c.name);
        const e = await b.elections(c.name);
        this.out(`${c.name} masters ${e.mastered} partitions; elected ${e.elected} times, sent ${e.revokes} REVOKE`);
        return;
      }
      case 'priority':
        await b.setPriority(c.name, c.priority);
        this.out(`${c.name} starts with --priority ${c.priority}`);
        return;
    }
  }

  /**
   * Partition masters as the running nodes see them. A partition has one master when every
   * running holder names the same node, and that node holds it and names itself. `masters`
   * prints the tally; `expect-masters` also fails unless every partition has one master.
   */
  private async masters(c: Extract<Command, { kind: 'masters' | 'expect-masters' }>): Promise<void> {
    const partitions = await this.backend.masters();
    const mastered = new Map<string, number>([...this.running].map((name) => [name, 0]));
    const wrong: string[] = [];
    let several = 0;
    for (const { partition, views } of partitions) {
      const named = new Set(views.values());
      const master = [...named][0];
      if (named.size === 1 && master !== undefined && views.get(master) === master) {
        mastered.set(master, (mastered.get(master) ?? 0) + 1);
        continue;
      }
      if ([...named].filter((m) => m !== undefined && views.get(m) === m).length > 1) several++;
      wrong.push(`p${partition}: ${[...views].map(([node, m]) => `${node}->${m ?? 'none'}`).join(' ')}`);
    }
    const counts = [...mastered].sort(([a], [b]) => (a < b ? -1 : 1)).map(([name, n]) => `${name} ${n}`).join(', ');
    const one = partitions.length - wrong.length;
    if (c.kind === 'masters') {
      this.out(`one master in ${one} of ${partitions.length} partitions (${counts}); several in ${several}`);
      return;
    }
    if (wrong.length === 0) {
      this.out(`ok: one master in each of ${partitions.length} partitions (${counts})`);
      return;
    }
    const shown = wrong.slice(0, 3).join('; ') + (wrong.length > 3 ? ` (+${wrong.length - 3} more)` : '');
    this.fail(c, `${wrong.length} of ${partitions.length} partitions without one master: ${shown}`);
  }

  private started(name: string): void {
    this.running.add(name);
  }

  private async expectCopies(c: Extract<Command, { kind: 'expect' }>): Promise<void> {
    this.needRunning(c.node);
    const wrong: string[] = [];
    for (const session of c.sessions) {
      const view = await this.backend.read(c.node, session);
      if (c.parts === 'absent') {
        if (view !== undefined) wrong.push(`${session} is ${describeView(view)}`);
        continue;
      }
      if (view === undefined) {
        wrong.push(`${session} is absent`);
        continue;
      }
      if (describeParts(view.parts) !== describeParts(Object.fromEntries(c.parts.map((p: PartValue) => [p.name, p.value])))) wrong.push(`${session} is ${describeView(view)}`);
    }
    const what = c.sessions.length === 1 ? c.sessions[0]! : `${c.sessions.length} sessions`;
    const parts = c.parts;
    if (wrong.length === 0 && parts === 'absent') this.out(`ok: ${c.node} holds no copy of ${what}`);
    else if (wrong.length === 0 && parts !== 'absent') this.out(`ok: ${c.node} holds ${what} as ${describeParts(Object.fromEntries(parts.map((p) => [p.name, p.value])))}`);
    else this.fail(c, `on ${c.node}: ${wrong.slice(0, 5).join('; ')}${wrong.length > 5 ? ` (+${wrong.length - 5} more)` : ''}`);
  }

  /** Every running node that holds a live copy names the owner (at the epoch, if given); the owner holds one. */
  private async expectOwner(c: Extract<Command, { kind: 'expect-owner' }>): Promise<void> {
    const wrong: string[] = [];
    const holdersOf: string[] = [];
    const nodes = [...this.running].sort();
    for (const session of c.sessions) {
      const holders: string[] = [];
      for (const node of nodes) {
        const view = await this.backend.read(node, session);
        if (view === undefined) {
          if (node === c.owner) wrong.push(`${session}: the owner ${node} holds no copy`);
          continue;
        }
        holders.push(node);
        if (view.owner !== c.owner || (c.epoch !== undefined && view.epoch !== c.epoch)) wrong.push(`${session}: ${node} says owner ${view.owner} at epoch ${view.epoch}`);
      }
      holdersOf.push(holders.join(' '));
    }
    const what = c.sessions.length === 1 ? `${c.sessions[0]} owned by ${c.owner}${c.epoch !== undefined ? ` at epoch ${c.epoch}` : ''}, as ${holdersOf[0]} hold it` : `${c.sessions.length} sessions owned by ${c.owner}`;
    if (wrong.length === 0) this.out(`ok: ${what}`);
    else this.fail(c, `${wrong.slice(0, 5).join('; ')}${wrong.length > 5 ? ` (+${wrong.length - 5} more)` : ''}`);
  }
}

function describeParts(parts: Record<string, string>): string {
  const names = Object.keys(parts).sort();
  return names.length === 0 ? '(no parts)' : names.map((n) => `${n}=${parts[n]}`).join(' ');
}

function describeView(view: SessionView): string {
  return `${describeParts(view.parts)} (owner ${view.owner}, epoch ${view.epoch})`;
}

/** Consecutive sessions with the same outcome on one line: `s1..s20: written`. */
function grouped(results: readonly [string, string][]): string[] {
  const lines: string[] = [];
  let i = 0;
  while (i < results.length) {
    let j = i;
    while (j + 1 < results.length && results[j + 1]![1] === results[i]![1]) j++;
    const label = j === i ? results[i]![0] : `${results[i]![0]}..${results[j]![0]}`;
    lines.push(`${label}: ${results[i]![1]}`);
    i = j + 1;
  }
  return lines;
}
