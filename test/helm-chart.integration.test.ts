/**
 * The Helm chart: `helm lint --strict` and `helm template` over the defaults and every ci/
 * values file, each rendered object validated against the Kubernetes (and prometheus-operator)
 * schemas offline, the schema's refusals, and what the chart promises (the key Secret, the
 * sidecar's placement, probes, grace period, the options it passes). The rendered arguments
 * starting a real node are test/helm-sidecar.integration.test.ts. In the integration lane
 * although it needs no build: the many helm runs take 10-20 s on a shared machine.
 */
import { cpSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import * as core from 'kubernetes-models/v1';
import * as apps from 'kubernetes-models/apps/v1';
import * as policy from 'kubernetes-models/policy/v1';
import * as networking from 'kubernetes-models/networking.k8s.io/v1';
import * as monitoring from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1';
import { SIDECAR_OPTIONS } from '../sidecar/config/config';
import { batonContainer, CHART_DIR, ciValuesFiles, examplePod, helm, type K8sObject, render, templateArgs } from './support/helm';

/** The models every rendered kind is checked with; a kind missing here fails the test. */
const MODELS: Record<string, { validate(): void } extends infer _ ? new (object: never) => { validate(): void } : never> = {
  'v1/Secret': core.Secret as never,
  'v1/Service': core.Service as never,
  'v1/ConfigMap': core.ConfigMap as never,
  'v1/Pod': core.Pod as never,
  'apps/v1/Deployment': apps.Deployment as never,
  'policy/v1/PodDisruptionBudget': policy.PodDisruptionBudget as never,
  'networking.k8s.io/v1/NetworkPolicy': networking.NetworkPolicy as never,
  'monitoring.coreos.com/v1/ServiceMonitor': monitoring.ServiceMonitor as never,
  'monitoring.coreos.com/v1/PrometheusRule': monitoring.PrometheusRule as never,
};

/** Options the chart sets from its own values; `config` must not set them. */
const MANAGED_FLAGS = [
  'node-id', 'api-listen', 'http-listen', 'resp-listen', 'metrics-listen', 'peer-listen', 'advertise-address', 'peers', 'peers-dns',
  'replicas', 'multicast', 'multicast-interface', 'multicast-ttl', 'cluster-key-file', 'drain-timeout-seconds', 'insecure',
  // Proxy mode (issue 13).
  'proxy-listen', 'proxy-upstream', 'session-cookie', 'tls-cert-file', 'tls-key-file', 'tls-client-ca-file', 'tls-self-signed',
];

const VALUE_SETS: (string | undefined)[] = [undefined, ...ciValuesFiles()];
const rendered = new Map<string | undefined, K8sObject[]>(VALUE_SETS.map((file) => [file, render({ valuesFile: file })]));

function argsOf(objects: K8sObject[]): string[] {
  return batonContainer(examplePod(objects)).args!;
}

describe('helm lint --strict', () => {
  it.each(VALUE_SETS.map((file) => [file ?? 'the defaults']))('passes with %s', (label) => {
    const file = label === 'the defaults' ? undefined : label;
    const result = helm(['lint', '--strict', CHART_DIR, ...(file === undefined ? [] : ['-f', path.join(CHART_DIR, 'ci', file)])]);
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('1 chart(s) linted, 0 chart(s) failed');
  });
});

describe('rendered objects', () => {
  it.each(VALUE_SETS.map((file) => [file ?? 'the defaults']))('validate against the Kubernetes schemas (%s)', (label) => {
    const objects = rendered.get(label === 'the defaults' ? undefined : label)!;
    expect(objects.length).toBeGreaterThan(0);
    for (const object of objects) {
      const Model = MODELS[`${object.apiVersion}/${object.kind}`];
      if (Model === undefined) throw new Error(`no schema to check ${object.apiVersion} ${object.kind} with: add it to MODELS`);
      expect(() => new Model(object as never).validate()).not.toThrow();
    }
  });

  it('the models do refuse a malformed object (the check above can fail)', () => {
    const pod = examplePod(rendered.get('api-only-values.yaml')!);
    const broken = { apiVersion: 'apps/v1', kind: 'Deployment', metadata: { name: 'x' }, spec: { selector: {}, template: { ...pod, spec: { ...pod.spec, terminationGracePeriodSeconds: 'soon' } } } };
    expect(() => new apps.Deployment(broken as never).validate()).toThrow(/terminationGracePeriodSeconds/);
  });

  it('together the ci/ values files switch on every optional part of the chart', () => {
    const kinds = new Set<string>();
    for (const file of ciValuesFiles()) for (const o of rendered.get(file)!) kinds.add(o.kind);
    for (const kind of ['Secret', 'Service', 'Deployment', 'Pod', 'PodDisruptionBudget', 'NetworkPolicy', 'ServiceMonitor', 'PrometheusRule', 'ConfigMap']) {
      expect(kinds).toContain(kind);
    }
    const withPods = ciValuesFiles().filter((file) => rendered.get(file)!.some((o) => o.kind === 'Deployment'));
    const all = withPods.flatMap((file) => argsOf(rendered.get(file)!));
    for (const flag of ['--proxy-listen', '--tls-cert-file', '--tls-client-ca-file', '--tls-self-signed', '--session-cookie', '--multicast', '--resp-listen', '--http-listen=off', '--peer-tls-ca-file']) {
      expect(all.some((arg) => arg.startsWith(flag))).toBe(true);
    }
    const placements = withPods.map((file) => batonContainer(examplePod(rendered.get(file)!)).restartPolicy ?? 'plain');
    expect(new Set(placements)).toEqual(new Set(['Always', 'plain']));
  });
});

describe('the baton container', () => {
  it('is a native sidecar by default, and a plain container after the application when nativeSidecar is false', () => {
    const native = examplePod(rendered.get('api-only-values.yaml')!);
    expect(native.spec.initContainers!.map((c) => [c.name, c.restartPolicy])).toEqual([['baton', 'Always']]);
    expect(native.spec.containers.map((c) => c.name)).toEqual(['shop']);
    const plain = examplePod(rendered.get('fallback-sidecar-values.yaml')!);
    expect(plain.spec.initContainers).toBeUndefined();
    expect(plain.spec.containers.map((c) => [c.name, c.restartPolicy])).toEqual([['shop', undefined], ['baton', undefined]]);
  });

  it('takes its node id and advertise address from the downward API, and finds peers through the headless Service', () => {
    const objects = rendered.get('api-only-values.yaml')!;
    const container = batonContainer(examplePod(objects));
    expect(container.args).toEqual(expect.arrayContaining(['sidecar', '--node-id=$(POD_NAME)', '--advertise-address=$(POD_IP):7401', '--peers-dns=shop-baton-peers.shop.svc.cluster.local:7401']));
    expect(container.env).toEqual(expect.arrayContaining([
      { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
      { name: 'POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
    ]));
    const peers = objects.find((o) => o.kind === 'Service' && o.metadata.name === 'shop-baton-peers') as unknown as { spec: Record<string, unknown> };
    expect(peers.spec).toMatchObject({ clusterIP: 'None', publishNotReadyAddresses: true, selector: { 'baton/cluster': 'shop-baton' } });
    expect(examplePod(objects).metadata.labels['baton/cluster']).toBe('shop-baton');
  });

  it('bounds V8\'s heap from the memory budget unless told otherwise', () => {
    const nodeOptions = (objects: K8sObject[]) => (batonContainer(examplePod(objects)).env ?? []).filter((e) => e.name === 'NODE_OPTIONS').map((e) => e.value);
    // 4 x max-memory-mb, at least 512: api-only sets 128.
    expect(nodeOptions(rendered.get('api-only-values.yaml')!)).toEqual(['--max-old-space-size=512']);
    expect(nodeOptions(render({ valuesFile: 'api-only-values.yaml', set: ['config.max-memory-mb=300'] }))).toEqual(['--max-old-space-size=1200']);
    expect(nodeOptions(render({ valuesFile: 'api-only-values.yaml', set: ['heapLimitMb=3000'] }))).toEqual(['--max-old-space-size=3000']);
    // No budget, or -1: Node's own default.
    expect(nodeOptions(render({ valuesFile: 'api-only-values.yaml', set: ['config.max-memory-mb=0'] }))).toEqual([]);
    expect(nodeOptions(render({ valuesFile: 'api-only-values.yaml', set: ['heapLimitMb=-1'] }))).toEqual([]);
    // An operator's own NODE_OPTIONS (extraEnv) is the only one.
    expect(nodeOptions(render({ valuesFile: 'api-only-values.yaml', set: ['extraEnv[0].name=NODE_OPTIONS', 'extraEnv[0].value=--max-old-space-size=700'] }))).toEqual(['--max-old-space-size=700']);
  });

  it('keeps the session API on 127.0.0.1 and serves probes and metrics on the pod address', () => {
    const container = batonContainer(examplePod(rendered.get('api-only-values.yaml')!));
    expect(container.args).toEqual(expect.arrayContaining(['--api-listen=127.0.0.1:7400', '--http-listen=127.0.0.1:7402', '--metrics-listen=0.0.0.0:9464']));
    expect(container).toMatchObject({
      startupProbe: { httpGet: { path: '/readyz', port: 'baton-metrics' } },
      readinessProbe: { httpGet: { path: '/readyz', port: 'baton-metrics' } },
      livenessProbe: { httpGet: { path: '/healthz', port: 'baton-metrics' } },
      securityContext: { runAsNonRoot: true, readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] }, seccompProfile: { type: 'RuntimeDefault' } },
    });
  });

  it('gets a grace period of preStop + drain + 10 s, from drainTimeoutSeconds', () => {
    expect(examplePod(rendered.get('api-only-values.yaml')!).spec.terminationGracePeriodSeconds).toBe(30);
    expect(examplePod(rendered.get('proxy-values.yaml')!).spec.terminationGracePeriodSeconds).toBe(35);
    const longer = examplePod(render({ valuesFile: 'api-only-values.yaml', set: ['drainTimeoutSeconds=90'] }));
    expect(longer.spec.terminationGracePeriodSeconds).toBe(100);
    expect(batonContainer(longer).args).toContain('--drain-timeout-seconds=90');
    expect(batonContainer(longer).lifecycle).toBeUndefined();
    expect(batonContainer(examplePod(rendered.get('proxy-values.yaml')!)).lifecycle).toEqual({ preStop: { exec: { command: ['sleep', '5'] } } });
  });

  it('in proxy mode, the Service targets baton and the shop listens on localhost only', () => {
    const objects = rendered.get('proxy-values.yaml')!;
    const service = objects.find((o) => o.kind === 'Service' && o.metadata.name === 'shop-baton-shop') as unknown as { spec: { ports: unknown[] } };
    expect(service.spec.ports).toEqual([{ name: 'https', port: 80, targetPort: 'baton-proxy', protocol: 'TCP' }]);
    const pod = examplePod(objects);
    expect(pod.spec.containers[0]!.args).toEqual(expect.arrayContaining(['--listen=127.0.0.1:8080', '--behind-proxy']));
    expect(batonContainer(pod).args).toEqual(expect.arrayContaining(['--proxy-listen=0.0.0.0:8443', '--proxy-upstream=http://127.0.0.1:8080', '--tls-cert-file=/etc/baton/tls/tls.crt', '--tls-client-ca-file=/etc/baton/tls/ca.crt']));
    const api = examplePod(rendered.get('api-only-values.yaml')!);
    expect(api.spec.containers[0]!.args).toContain('--listen=0.0.0.0:8080');
    // Serving clients directly, the shop must not believe x-baton-* headers.
    expect(api.spec.containers[0]!.args).not.toContain('--behind-proxy');
  });
});

describe('the cluster key', () => {
  it('is generated as 32 random bytes, different at every render (an install), and mounted as --cluster-key-file', () => {
    const keyOf = (objects: K8sObject[]) => {
      const secret = objects.find((o) => o.kind === 'Secret') as unknown as { metadata: { name: string }; data: Record<string, string> };
      expect(secret.metadata.name).toBe('shop-baton-cluster-key');
      const file = Buffer.from(secret.data['cluster-key']!, 'base64').toString();
      expect(file).toMatch(/^[A-Za-z0-9+/]{43}=\n$/);
      expect(Buffer.from(file.trim(), 'base64')).toHaveLength(32);
      return file;
    };
    expect(keyOf(rendered.get(undefined)!)).not.toBe(keyOf(render()));
    const pod = examplePod(rendered.get('api-only-values.yaml')!);
    expect(pod.spec.volumes).toContainEqual({ name: 'baton-cluster-key', secret: { secretName: 'shop-baton-cluster-key' } });
    expect(batonContainer(pod).args).toContain('--cluster-key-file=/etc/baton/cluster-key/cluster-key');
    expect(JSON.stringify(pod)).not.toContain('--insecure');
  });

  it('is kept across upgrades: the template reads the existing Secret back (lookup) before generating one', () => {
    const template = readFileSync(path.join(CHART_DIR, 'templates', 'secret.yaml'), 'utf8');
    expect(template).toMatch(/lookup "v1" "Secret" \.Release\.Namespace \$name/);
    expect(template).toMatch(/if and \$existing \(index \(\$existing\.data \| default dict\) \$key\)/);
  });

  it('comes from an existing Secret when one is named, and the chart renders none', () => {
    const objects = rendered.get('existing-secret-values.yaml')!;
    expect(objects.filter((o) => o.kind === 'Secret')).toEqual([]);
    const pod = examplePod(render({ valuesFile: 'existing-secret-values.yaml', set: ['example.enabled=true'] }));
    expect(pod.spec.volumes).toContainEqual({ name: 'baton-cluster-key', secret: { secretName: 'my-baton-key' } });
    expect(batonContainer(pod).args).toContain('--cluster-key-file=/etc/baton/cluster-key/keys');
  });
});

describe('values.schema.json', () => {
  it.each([
    [['config.node-id=a'], "at '/config': additional properties 'node-id' not allowed"],
    [['config.insecure=true'], "additional properties 'insecure' not allowed"],
    [['ports.peer=0'], "at '/ports/peer': minimum: got 0, want 1"],
    [['mode=proxi'], "at '/mode': value must be one of 'api', 'proxy'"],
    [['replication.multicast.group=10.0.0.1'], "at '/replication/multicast/group'"],
    [['config.preset=fast'], "at '/config/preset': value must be one of 'lan', 'local', 'wan'"],
    [['monitoring.serviceMonitor.enabled=sometimes'], "at '/monitoring/serviceMonitor/enabled'"],
    [['drainTimeoutSeconds=-1'], "at '/drainTimeoutSeconds': minimum: got -1, want 0"],
  ])('refuses %j with a message naming the value', (set, message) => {
    const result = helm(templateArgs({ set }));
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain(message);
  });

  it('lets config set exactly the sidecar options the chart does not set itself', () => {
    const schema = JSON.parse(readFileSync(path.join(CHART_DIR, 'values.schema.json'), 'utf8')) as { properties: { config: { properties: Record<string, unknown> } } };
    const configurable = Object.keys(schema.properties.config.properties).sort();
    const flags = SIDECAR_OPTIONS.map((o) => o.flag);
    // Every option of `baton sidecar` is reachable: through config or a value of its own.
    expect(flags.filter((flag) => !configurable.includes(flag) && !MANAGED_FLAGS.includes(flag))).toEqual([]);
    // config names only real options, none the chart sets.
    expect(configurable.filter((flag) => !flags.includes(flag) || MANAGED_FLAGS.includes(flag))).toEqual([]);
  });
});

describe('monitoring', () => {
  it('renders the ServiceMonitor and PrometheusRule when the cluster serves the CRDs (auto), and not otherwise', () => {
    const kinds = (objects: K8sObject[]) => objects.map((o) => o.kind);
    expect(kinds(rendered.get(undefined)!)).not.toContain('ServiceMonitor');
    const withCrds = render({ extra: ['--api-versions', 'monitoring.coreos.com/v1/ServiceMonitor', '--api-versions', 'monitoring.coreos.com/v1/PrometheusRule'] });
    expect(kinds(withCrds)).toEqual(expect.arrayContaining(['ServiceMonitor', 'PrometheusRule']));
    const off = render({ set: ['monitoring.serviceMonitor.enabled=false'], extra: ['--api-versions', 'monitoring.coreos.com/v1/ServiceMonitor'] });
    expect(kinds(off)).not.toContain('ServiceMonitor');
  });

  it('carries files/alerts.yaml unchanged in the PrometheusRule', () => {
    const rule = rendered.get('monitoring-values.yaml')!.find((o) => o.kind === 'PrometheusRule') as unknown as { spec: unknown };
    expect(rule.spec).toEqual(parseYaml(readFileSync(path.join(CHART_DIR, 'files', 'alerts.yaml'), 'utf8')));
  });
});

describe('a chart of your own with baton as a dependency', () => {
  it('injects baton into its Deployment with the names the subchart gives its Service and Secret', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'baton-parent-'));
    try {
      cpSync(path.join(__dirname, 'helm', 'parent-chart'), dir, { recursive: true });
      cpSync(CHART_DIR, path.join(dir, 'charts', 'baton'), { recursive: true });
      const result = helm(['template', 'myapp', dir, '--namespace', 'web']);
      expect(result.stderr).toBe('');
      const objects = parseAllDocuments(result.stdout).map((d) => d.toJS() as K8sObject).filter((o) => o !== null);
      const pod = examplePod(objects);
      expect(pod.metadata.labels).toEqual({ app: 'myapp', 'baton/cluster': 'myapp-baton' });
      expect(pod.spec.containers.map((c) => c.name)).toEqual(['myapp']);
      expect(batonContainer(pod).args).toContain('--peers-dns=myapp-baton-peers.web.svc.cluster.local:7401');
      expect(pod.spec.volumes).toContainEqual({ name: 'baton-cluster-key', secret: { secretName: 'myapp-baton-cluster-key' } });
      const names = objects.map((o) => `${o.kind}/${o.metadata.name}`);
      expect(names).toEqual(expect.arrayContaining(['Service/myapp-baton-peers', 'Secret/myapp-baton-cluster-key', 'PodDisruptionBudget/myapp-baton', 'Deployment/myapp']));
      for (const object of objects) new MODELS[`${object.apiVersion}/${object.kind}`]!(object as never).validate();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('the chart and the package', () => {
  it('default the image tag to appVersion, which is the package version', () => {
    const chart = parseYaml(readFileSync(path.join(CHART_DIR, 'Chart.yaml'), 'utf8')) as { apiVersion: string; appVersion: string };
    const values = parseYaml(readFileSync(path.join(CHART_DIR, 'values.yaml'), 'utf8')) as { image: { tag: string } };
    const pkg = JSON.parse(readFileSync(path.join(CHART_DIR, '..', '..', 'package.json'), 'utf8')) as { version: string };
    expect(chart.apiVersion).toBe('v2');
    expect([chart.appVersion, values.image.tag]).toEqual([pkg.version, pkg.version]);
  });
});
