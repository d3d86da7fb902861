/**
 * The scenario language (test/scenarios/*.scenario; described in test/scenarios/README.md):
 * one command per line, `#` starts a comment, blank lines are ignored.
 *
 * Rules:
 * - Pure: text in, commands out. No backend, no clock, no file system.
 * - A bad line throws a ScenarioSyntaxError naming its line number and what was expected;
 *   the first bad line wins.
 * - What can be checked without running is checked here: a node is named by `nodes` or
 *   `start` before any other command names it, `cluster` comes before `nodes`, and `nodes`
 *   comes once, before everything else that touches the cluster.
 */
import { isWellKnownPart, WELL_KNOWN_PARTS } from '../../src/wire/well-known-parts';

export interface ClusterSettings {
  seed: number;
  transport: 'unicast' | 'multicast';
  /** Secondaries per session (0 = every other member), as --replicas. */
  replicas: number;
  partitions: number;
}

export const DEFAULT_CLUSTER_SETTINGS: Readonly<ClusterSettings> = Object.freeze({ seed: 1, transport: 'unicast', replicas: 2, partitions: 32 });

/** One part's expected or written value (a latin1 string; no spaces). */
export interface PartValue {
  name: string;
  value: string;
}

export type CommandBody =
  | { kind: 'cluster'; settings: ClusterSettings }
  | { kind: 'nodes'; names: string[] }
  | { kind: 'start'; name: string }
  | { kind: 'kill'; name: string }
  | { kind: 'restart'; name: string }
  | { kind: 'drain'; name: string }
  | { kind: 'write'; node: string; sessions: string[]; parts: PartValue[]; sync: number }
  | { kind: 'delete'; node: string; sessions: string[]; parts: string[] }
  | { kind: 'resume'; node: string; sessions: string[] }
  | { kind: 'drop'; percent: number; from: string; to: string; both: boolean }
  | { kind: 'delay'; ms: number; from: string; to: string; both: boolean }
  | { kind: 'partition'; groups: string[][] }
  | { kind: 'heal' }
  | { kind: 'advance'; ms: number }
  | { kind: 'converge'; withinMs: number }
  | { kind: 'expect'; node: string; sessions: string[]; parts: PartValue[] | 'absent' }
  | { kind: 'expect-owner'; sessions: string[]; owner: string; epoch: number | undefined }
  | { kind: 'expect-acked'; node: string; session: string; atLeast: number }
  | { kind: 'expect-alive'; node: string; alive: string[] }
  | { kind: 'counters'; name: string }
  | { kind: 'claims'; name: string }
  | { kind: 'elections'; name: string }
  | { kind: 'priority'; name: string; priority: number }
  | { kind: 'expect-masters' }
  | { kind: 'masters' }
  | { kind: 'expect-coordinator'; coordinator: string }
  | { kind: 'views' };

/** A command with where it came from: its 1-based line number and its text without the comment. */
export type Command = CommandBody & { line: number; text: string };

export class ScenarioSyntaxError extends Error {
  constructor(
    readonly line: number,
    message: string,
  ) {
    super(`line ${line}: ${message}`);
    this.name = 'ScenarioSyntaxError';
  }
}

/** How long `converge` may take when the line names no bound (virtual or real time). */
export const DEFAULT_CONVERGE_WITHIN_MS = 30_000;
/** Most sessions one range (s1..s500) may name: a scenario is a story, not a load test. */
export const MAX_RANGE = 1000;

const NAME = /^[a-z][a-z0-9-]{0,31}$/;
const SESSION = /^[A-Za-z0-9_.:-]{1,128}$/;
const RANGE = /^([A-Za-z_.:-]*?)(\d+)\.\.\1(\d+)$/;
const PART = /^[a-z0-9_.-]{1,64}$/;
const DURATION = /^(\d+(?:\.\d+)?)(ms|s)$/;

export function parseScenario(text: string): Command[] {
  const commands: Command[] = [];
  const started = new Set<string>();
  let sawNodes = false;
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = i + 1;
    const body = raw.replace(/#.*$/, '').trim();
    if (body === '') return;
    const words = body.split(/\s+/);
    const parsed = parseCommand(line, words[0]!, words.slice(1));
    const fail = (message: string): never => {
      throw new ScenarioSyntaxError(line, message);
    };
    if (parsed.kind === 'cluster') {
      if (sawNodes || commands.some((c) => c.kind === 'cluster')) fail('cluster must come once, before nodes');
    } else if (parsed.kind === 'nodes') {
      if (sawNodes) fail('nodes comes once; start a joiner with `start NAME`');
      sawNodes = true;
    } else if (!sawNodes && parsed.kind !== 'priority') {
      fail(`${parsed.kind} before any node was started: begin with \`nodes NAME…\``);
    }
    for (const name of namesIn(parsed)) {
      const introduces = parsed.kind === 'nodes' || (parsed.kind === 'start' && name === parsed.name);
      if (introduces) {
        if (started.has(name)) fail(parsed.kind === 'nodes' ? `node ${name} is named twice` : `node ${name} was started before: bring it back with restart`);
        started.add(name);
      } else if (!started.has(name)) {
        fail(`node ${name} is not started by an earlier nodes or start line`);
      }
    }
    commands.push({ ...parsed, line, text: words.join(' ') });
  });
  return commands;
}

/** Every node a command names. */
function namesIn(c: CommandBody): string[] {
  switch (c.kind) {
    case 'nodes':
      return c.names;
    case 'start':
    case 'kill':
    case 'restart':
    case 'drain':
    case 'counters':
    case 'claims':
    case 'elections':
      return [c.name];
    case 'priority':
      // Set before the node starts (or restarts): it need not run yet.
      return [];
    case 'write':
    case 'delete':
    case 'resume':
    case 'expect':
    case 'expect-acked':
      return [c.node];
    case 'expect-alive':
      return [c.node, ...c.alive];
    case 'expect-owner':
      return [c.owner];
    case 'expect-coordinator':
      return [c.coordinator];
    case 'drop':
    case 'delay':
      return [c.from, c.to];
    case 'partition':
      return c.groups.flat();
    case 'cluster':
    case 'heal':
    case 'advance':
    case 'converge':
    case 'expect-masters':
    case 'masters':
    case 'views':
      return [];
  }
}

function parseCommand(line: number, verb: string, args: string[]): CommandBody {
  const fail = (message: string): never => {
    throw new ScenarioSyntaxError(line, message);
  };
  const arity = (min: number, max: number, usage: string) => {
    if (args.length < min || args.length > max) fail(`usage: ${usage}`);
  };
  const name = (word: string | undefined): string => {
    if (word === undefined || !NAME.test(word)) fail(`a node name is [a-z][a-z0-9-]* (up to 32 characters), got ${JSON.stringify(word ?? '')}`);
    return word!;
  };
  switch (verb) {
    case 'cluster':
      return { kind: 'cluster', settings: clusterSettings(args, fail) };
    case 'nodes': {
      if (args.length === 0) fail('usage: nodes NAME...');
      return { kind: 'nodes', names: args.map(name) };
    }
    case 'start':
    case 'kill':
    case 'restart':
    case 'drain':
    case 'counters':
    case 'claims':
    case 'elections':
      arity(1, 1, `${verb} NAME`);
      return { kind: verb, name: name(args[0]) };
    case 'priority':
      arity(2, 2, 'priority NAME N');
      return { kind: 'priority', name: name(args[0]), priority: integer(args[1]!, 'N', 0, 1_000_000, fail) };
    case 'expect-masters':
    case 'masters':
      arity(0, 0, verb);
      return { kind: verb };
    case 'write': {
      const usage = 'write NODE SESSIONS PART=VALUE... [sync=N]';
      if (args.length < 3) fail(`usage: ${usage}`);
      const words = args.slice(2);
      let sync = 0;
      const last = words[words.length - 1]!;
      if (last.startsWith('sync=')) {
        sync = integer(last.slice(5), 'sync', 0, 64, fail);
        words.pop();
      }
      if (words.length === 0) fail(`usage: ${usage}`);
      return { kind: 'write', node: name(args[0]), sessions: sessions(args[1]!, fail), parts: words.map((w) => partValue(w, fail)), sync };
    }
    case 'delete': {
      if (args.length < 2) fail('usage: delete NODE SESSIONS [PART...]');
      return { kind: 'delete', node: name(args[0]), sessions: sessions(args[1]!, fail), parts: args.slice(2).map((p) => partName(p, fail)) };
    }
    case 'resume':
      arity(2, 2, 'resume NODE SESSIONS');
      return { kind: 'resume', node: name(args[0]), sessions: sessions(args[1]!, fail) };
    case 'drop': {
      arity(2, 2, 'drop PERCENT% A->B  (or A<->B)');
      const percent = /^(\d{1,3})%$/.exec(args[0]!);
      if (percent === null || Number(percent[1]) > 100) fail(`drop needs a percentage from 0% to 100%, got ${JSON.stringify(args[0])}`);
      return { kind: 'drop', percent: Number(percent![1]), ...linkOf('drop', args[1]!, name, fail) };
    }
    case 'delay':
      arity(2, 2, 'delay DURATION A->B  (or A<->B; 0ms ends it)');
      return { kind: 'delay', ms: args[0] === '0ms' ? 0 : duration(args[0]!, fail), ...linkOf('delay', args[1]!, name, fail) };
    case 'partition': {
      const groups = args.join(' ').split('|').map((g) => g.trim().split(/\s+/).filter((w) => w !== ''));
      if (groups.length < 2 || groups.some((g) => g.length === 0)) fail('usage: partition A B | C  (two or more groups of nodes)');
      const all = groups.flat().map(name);
      if (new Set(all).size !== all.length) fail('a node is in more than one group');
      return { kind: 'partition', groups };
    }
    case 'heal':
      arity(0, 0, 'heal');
      return { kind: 'heal' };
    case 'advance':
      arity(1, 1, 'advance DURATION  (e.g. 500ms, 2s)');
      return { kind: 'advance', ms: duration(args[0]!, fail) };
    case 'converge': {
      if (args.length === 0) return { kind: 'converge', withinMs: DEFAULT_CONVERGE_WITHIN_MS };
      if (args.length !== 2 || args[0] !== 'within') fail('usage: converge [within DURATION]');
      return { kind: 'converge', withinMs: duration(args[1]!, fail) };
    }
    case 'expect': {
      const usage = 'expect NODE SESSIONS PART=VALUE...  (or: expect NODE SESSIONS absent)';
      if (args.length < 3) fail(`usage: ${usage}`);
      const rest = args.slice(2);
      const parts = rest.length === 1 && rest[0] === 'absent' ? 'absent' : rest.map((w) => partValue(w, fail));
      if (parts !== 'absent' && new Set(parts.map((p) => p.name)).size !== parts.length) fail('a part is named twice');
      return { kind: 'expect', node: name(args[0]), sessions: sessions(args[1]!, fail), parts };
    }
    case 'expect-owner': {
      arity(2, 3, 'expect-owner SESSIONS NODE [epoch=N]');
      let epoch: number | undefined;
      if (args.length === 3) {
        if (!args[2]!.startsWith('epoch=')) fail('usage: expect-owner SESSIONS NODE [epoch=N]');
        epoch = integer(args[2]!.slice(6), 'epoch', 1, Number.MAX_SAFE_INTEGER, fail);
      }
      return { kind: 'expect-owner', sessions: sessions(args[0]!, fail), owner: name(args[1]), epoch };
    }
    case 'expect-acked': {
      arity(3, 3, 'expect-acked NODE SESSION N');
      const session = args[1]!;
      if (!SESSION.test(session) || RANGE.test(session)) fail(`expect-acked names one session, got ${JSON.stringify(session)}`);
      return { kind: 'expect-acked', node: name(args[0]), session, atLeast: integer(args[2]!, 'N', 0, 64, fail) };
    }
    case 'expect-coordinator':
      if (args.length !== 1) fail('usage: expect-coordinator NODE  (every running node follows NODE and holds the same view)');
      return { kind: 'expect-coordinator', coordinator: name(args[0]) };
    case 'views':
      if (args.length !== 0) fail('usage: views');
      return { kind: 'views' };
    case 'expect-alive':
      if (args.length < 2) fail('usage: expect-alive NODE NAME...  (the nodes NODE sees alive, itself included)');
      return { kind: 'expect-alive', node: name(args[0]), alive: args.slice(1).map(name).sort() };
    default:
      return fail(`unknown command ${JSON.stringify(verb)} (known: ${VERBS.join(', ')})`);
  }
}

const VERBS = ['cluster', 'nodes', 'start', 'kill', 'restart', 'drain', 'write', 'delete', 'resume', 'drop', 'partition', 'heal', 'advance', 'converge', 'expect', 'expect-owner', 'expect-acked', 'expect-alive', 'counters', 'expect-coordinator', 'views'];

function clusterSettings(args: string[], fail: (message: string) => never): ClusterSettings {
  const settings: ClusterSettings = { ...DEFAULT_CLUSTER_SETTINGS };
  for (const word of args) {
    const [key, value = ''] = word.split('=', 2) as [string, string?];
    if (key === 'seed') settings.seed = integer(value, 'seed', 0, 2 ** 31 - 1, fail);
    else if (key === 'replicas') settings.replicas = integer(value, 'replicas', 0, 64, fail);
    else if (key === 'partitions') settings.partitions = integer(value, 'partitions', 1, 65_536, fail);
    else if (key === 'transport') {
      if (value !== 'unicast' && value !== 'multicast') fail(`transport is unicast or multicast, got ${JSON.stringify(value)}`);
      settings.transport = value as ClusterSettings['transport'];
    } else fail(`unknown cluster setting ${JSON.stringify(key)} (known: seed, transport, replicas, partitions)`);
  }
  return settings;
}

/** One session id, or a range `s1..s20` (same prefix, ascending numbers). */
function sessions(word: string, fail: (message: string) => never): string[] {
  const range = RANGE.exec(word);
  if (range !== null) {
    const [prefix, first, last] = [range[1]!, Number(range[2]), Number(range[3])];
    if (last < first) fail(`a session range counts up, got ${JSON.stringify(word)}`);
    if (last - first + 1 > MAX_RANGE) fail(`a session range names at most ${MAX_RANGE} sessions, got ${last - first + 1}`);
    return Array.from({ length: last - first + 1 }, (_, i) => `${prefix}${first + i}`);
  }
  if (!SESSION.test(word) || word.includes('..')) fail(`a session id is [A-Za-z0-9_.:-]{1,128}, or a range like s1..s20; got ${JSON.stringify(word)}`);
  return [word];
}

function partName(word: string, fail: (message: string) => never): string {
  if (!PART.test(word)) fail(`a part name is [a-z0-9_.-]{1,64}, got ${JSON.stringify(word)}`);
  return word;
}

function partValue(word: string, fail: (message: string) => never): PartValue {
  const eq = word.indexOf('=');
  if (eq < 0) fail(`expected PART=VALUE, got ${JSON.stringify(word)}`);
  const name = partName(word.slice(0, eq), fail);
  // The real API checks a typed part's value is its message; scenario values are text.
  if (isWellKnownPart(name)) fail(`part ${name} is typed (${WELL_KNOWN_PARTS[name].typeName}) and a scenario value is text: name the part otherwise (e.g. basket, login)`);
  return { name, value: word.slice(eq + 1) };
}

function integer(text: string, what: string, min: number, max: number, fail: (message: string) => never): number {
  if (!/^\d+$/.test(text) || Number(text) < min || Number(text) > max) fail(`${what} is a whole number from ${min} to ${max}, got ${JSON.stringify(text)}`);
  return Number(text);
}

/** A link `A->B` (one direction) or `A<->B` (both), for the command `command`. */
function linkOf(command: string, text: string, name: (word: string | undefined) => string, fail: (message: string) => never): { from: string; to: string; both: boolean } {
  const link = /^([^<>-][^<>]*?)(<->|->)([^<>-].*)$/.exec(text);
  if (link === null) fail(`${command} needs a link A->B or A<->B, got ${JSON.stringify(text)}`);
  const [from, to] = [name(link![1]), name(link![3])];
  if (from === to) fail('a link joins two different nodes');
  return { from, to, both: link![2] === '<->' };
}

function duration(text: string, fail: (message: string) => never): number {
  const m = DURATION.exec(text);
  if (m === null) fail(`a duration is a number with ms or s (500ms, 2s, 1.5s), got ${JSON.stringify(text)}`);
  const ms = Number(m![1]) * (m![2] === 's' ? 1000 : 1);
  if (!Number.isInteger(ms) || ms <= 0 || ms > 3_600_000) fail(`a duration is a whole number of milliseconds from 1ms to 3600s, got ${JSON.stringify(text)}`);
  return ms;
}
