// Offline checks of deploy/k8s and deploy/docker, each with the real tool where one exists:
// yamllint on the sources, dockerfilelint on every Dockerfile, `kubectl kustomize` on every
// overlay, kubernetes-models' API schemas on every rendered object plus our own unknown-field
// walk over the same schemas (a small hand-written schema for the ServiceMonitor CRD), and a
// consistency check against the real binaries: every container flag appears in the binary's
// usage, every port, probe, selector and ConfigMap key refers to something that exists. Then
// each check runs on deliberately broken copies of the tree and must fail.
// Usage: node test_k8s_manifests.mjs REPO_ROOT BIN_DIR WORK_DIR   (exit 77: kubectl missing)
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const [repo, binDir, work] = process.argv.slice(2);
const nodeDir = path.join(repo, 'tools/node');
const require = createRequire(path.join(nodeDir, 'package.json'));
const yaml = require('js-yaml');

if (spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' }).status !== 0) {
  console.log('SKIP: kubectl is not installed (it comes preinstalled in our CI image; Debian 12 ' +
              'has no usable package), so the overlays cannot be rendered');
  process.exit(77);
}
const OVERLAYS = ['cpu-demo', 'gpu-ep'];

// ---- schemas: kubernetes-models' compiled validators, and the property tree behind them ----
const modelsDir = path.join(nodeDir, 'node_modules/kubernetes-models');
const apimachineryDir = path.join(nodeDir, 'node_modules/@kubernetes-models/apimachinery');
function modelFile(apiVersion, kind) {
  const [group, version] = apiVersion.includes('/') ? apiVersion.split('/') : ['', apiVersion];
  return path.join(modelsDir, group || '', version, `${kind}.js`);
}
// The allowed keys of the object a schema file describes, each with the schema file of its value
// (null: no schema of its own, e.g. a string or a map), or null when the object is a free map.
const propsCache = new Map();
function schemaProps(file) {
  if (propsCache.has(file)) return propsCache.get(file);
  const text = fs.readFileSync(file, 'utf8');
  const imports = new Map();
  for (const m of text.matchAll(/import\{validate as (validate\d+)\}from"([^"]+)"/g)) {
    let p = m[2];
    p = p.startsWith('.') ? path.resolve(path.dirname(file), p)
                          : path.join(apimachineryDir, p.replace('@kubernetes-models/apimachinery/', ''));
    imports.set(m[1], p.endsWith('.mjs') ? p : `${p}.mjs`);
  }
  const fnBody = (name) => {
    const start = text.indexOf(`function ${name}(`);
    const end = text.indexOf(`return ${name}.errors=`, start);
    return start < 0 ? '' : text.slice(start, end);
  };
  const top = fnBody(text.match(/export const validate=function (validate\d+)/)[1]);
  let result = null;
  if (!/for\(const key\d+ in data\)/.test(top)) {
    result = new Map();
    for (const m of top.matchAll(/(validate\d+)\(data\.(\w+),\{/g)) {
      // Follow local wrappers (null checks, array loops) down to an imported schema.
      let fn = m[1];
      for (let depth = 0; depth < 4 && fn && !imports.has(fn); ++depth) {
        const inner = fnBody(fn).match(/(?<!function )(validate\d+)\(data(?:\[i\d+\])?,\{/);
        fn = inner && inner[1];
      }
      const child = fn && imports.get(fn);
      result.set(m[2], child && fs.existsSync(child) ? child : null);
    }
    for (const m of top.matchAll(/void 0===data\.(\w+)/g)) if (!result.has(m[1])) result.set(m[1], null);
  }
  propsCache.set(file, result);
  return result;
}
function unknownFields(value, file, where, out) {
  if (value === null || typeof value !== 'object') return;
  if (Array.isArray(value)) { value.forEach((v, i) => unknownFields(v, file, `${where}[${i}]`, out)); return; }
  const props = schemaProps(file);
  if (props === null) return;
  for (const [k, v] of Object.entries(value)) {
    if (!props.has(k)) out.push(`${where}: unknown field '${k}'`);
    else if (props.get(k)) unknownFields(v, props.get(k), `${where}.${k}`, out);
  }
}
// The ServiceMonitor CRD (monitoring.coreos.com/v1): the fields we use, each with its type.
const SERVICE_MONITOR = {
  apiVersion: 'string', kind: 'string', metadata: 'meta',
  spec: { selector: { matchLabels: 'map' }, namespaceSelector: { any: 'boolean', matchNames: 'array' },
          endpoints: [{ port: 'string', path: 'string', interval: 'string', scheme: 'string',
                        scrapeTimeout: 'string', honorLabels: 'boolean' }],
          jobLabel: 'string' },
};
function checkByHand(value, schema, where, out) {
  if (schema === 'meta') {
    const metaFile = path.join(apimachineryDir, '_schemas/IoK8sApimachineryPkgApisMetaV1ObjectMeta.mjs');
    return unknownFields(value, metaFile, where, out);
  }
  if (schema === 'map') {
    if (typeof value !== 'object' || Array.isArray(value)) out.push(`${where}: must be a map`);
    return undefined;
  }
  if (schema === 'array') { if (!Array.isArray(value)) out.push(`${where}: must be an array`); return undefined; }
  if (typeof schema === 'string') {
    if (typeof value !== schema) out.push(`${where}: must be a ${schema}`);
    return undefined;
  }
  if (Array.isArray(schema)) {
    if (!Array.isArray(value)) { out.push(`${where}: must be an array`); return undefined; }
    value.forEach((v, i) => checkByHand(v, schema[0], `${where}[${i}]`, out));
    return undefined;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    out.push(`${where}: must be an object`); return undefined;
  }
  for (const [k, v] of Object.entries(value)) {
    if (!(k in schema)) out.push(`${where}: unknown field '${k}'`);
    else checkByHand(v, schema[k], `${where}.${k}`, out);
  }
  return undefined;
}
function schemaErrors(obj) {
  const id = `${obj.kind}/${obj.metadata?.name}`;
  const out = [];
  if (obj.apiVersion === 'monitoring.coreos.com/v1' && obj.kind === 'ServiceMonitor') {
    checkByHand(obj, SERVICE_MONITOR, id, out);
    return out;
  }
  const file = modelFile(obj.apiVersion, obj.kind);
  if (!fs.existsSync(file)) return [`${id}: no schema for ${obj.apiVersion} ${obj.kind}`];
  const Model = require(file)[obj.kind];
  try {
    new Model(obj).validate();
  } catch (e) {
    out.push(`${id}: schema: ${e.message.split('\n').slice(0, 3).join(' ')}`);
  }
  // The module also exports the model under its schema's name (IoK8sApiAppsV1Deployment).
  const schemaName = Object.keys(require(file)).find((k) => k.startsWith('IoK8s'));
  const schemaFile = schemaName && `${schemaName}.mjs`;
  if (!schemaFile || !fs.existsSync(path.join(modelsDir, '_schemas', schemaFile))) {
    return [...out, `${id}: no JSON schema file to walk`];
  }
  unknownFields(obj, path.join(modelsDir, '_schemas', schemaFile), id, out);
  return out;
}
// ---- consistency with the binaries ----
const helpCache = new Map();
function binaryFlags(binary) {
  if (!helpCache.has(binary)) {
    const r = spawnSync(path.join(binDir, binary), ['--help'], { encoding: 'utf8' });
    const flags = new Set([...(`${r.stdout}${r.stderr}`).matchAll(/--([a-z][a-z0-9-]*)/g)].map((m) => m[1]));
    flags.delete('help');
    if (flags.size === 0) throw new Error(`${binary} --help lists no flags`);
    helpCache.set(binary, flags);
  }
  return helpCache.get(binary);
}
function binaryOf(image) {
  const name = image.split('/').pop().split(':')[0].replace(/-cuda$/, '');
  if (!image.startsWith('moeserve/')) return null;
  return name === 'cli' ? 'moeserve' : `moeserve-${name}`;
}
function argValue(args, flag) {
  for (let i = 0; i < args.length; ++i) {
    if (args[i] === `--${flag}`) return args[i + 1];
    if (args[i].startsWith(`--${flag}=`)) return args[i].slice(flag.length + 3);
  }
  return undefined;
}
const matches = (sel, labels) => sel && Object.keys(sel).length > 0 &&
  Object.entries(sel).every(([k, v]) => labels?.[k] === v);

function consistencyErrors(objs) {
  const out = [];
  const workloads = objs.filter((o) => ['Deployment', 'StatefulSet'].includes(o.kind));
  const services = objs.filter((o) => o.kind === 'Service');
  const configMaps = new Map(objs.filter((o) => o.kind === 'ConfigMap').map((o) => [o.metadata.name, o]));
  const podsMatching = (sel) => workloads.filter((w) => matches(sel, w.spec.template.metadata.labels));
  const containerPorts = (w) => w.spec.template.spec.containers.flatMap((c) => c.ports ?? []);
  const resolvePort = (w, port) => containerPorts(w).find((p) => p.name === port || p.containerPort === port);

  for (const w of workloads) {
    const id = `${w.kind}/${w.metadata.name}`;
    if (!matches(w.spec.selector.matchLabels, w.spec.template.metadata.labels)) {
      out.push(`${id}: selector does not match its pod template`);
    }
    const spec = w.spec.template.spec;
    for (const v of spec.volumes ?? []) {
      if (!v.configMap) continue;
      const cm = configMaps.get(v.configMap.name);
      if (!cm) { out.push(`${id}: volume ${v.name}: no ConfigMap ${v.configMap.name}`); continue; }
      for (const item of v.configMap.items ?? []) {
        if (!(item.key in (cm.data ?? {}))) out.push(`${id}: volume ${v.name}: ConfigMap ${cm.metadata.name} has no key ${item.key}`);
      }
    }
    for (const c of [...(spec.initContainers ?? []), ...spec.containers]) {
      const cid = `${id} container ${c.name}`;
      const env = new Map();
      for (const e of c.env ?? []) {
        env.set(e.name, e);
        const ref = e.valueFrom?.configMapKeyRef;
        if (ref) {
          const cm = configMaps.get(ref.name);
          if (!cm) out.push(`${cid}: env ${e.name}: no ConfigMap ${ref.name}`);
          else if (!(ref.key in (cm.data ?? {}))) out.push(`${cid}: env ${e.name}: ConfigMap ${ref.name} has no key ${ref.key}`);
        }
        const rf = e.valueFrom?.resourceFieldRef;
        if (rf && !spec.containers.concat(spec.initContainers ?? []).some((x) => x.name === (rf.containerName ?? c.name))) {
          out.push(`${cid}: env ${e.name}: no container ${rf.containerName}`);
        }
      }
      const args = c.args ?? [];
      for (const a of args) {
        for (const m of a.matchAll(/\$\((\w+)\)/g)) if (!env.has(m[1])) out.push(`${cid}: $(${m[1]}) is not in env`);
      }
      const binary = binaryOf(c.image);
      if (!binary) continue;
      const known = binaryFlags(binary);
      for (const a of args) {
        if (!a.startsWith('--')) continue;
        const flag = a.slice(2).split('=')[0];
        if (!known.has(flag)) out.push(`${cid}: flag --${flag} is not in ${binary} --help`);
      }
      if (spec.initContainers?.includes(c)) continue;
      // Ports: what the flags listen on and what the container declares must be the same set.
      const flagPorts = ['port', 'grpc-port', 'metrics-port'].map((f) => argValue(args, f))
        .filter((v) => v !== undefined).map(Number);
      for (const p of c.ports ?? []) {
        if (!flagPorts.includes(p.containerPort)) out.push(`${cid}: containerPort ${p.containerPort} is set by no flag`);
      }
      for (const p of flagPorts) {
        if (!(c.ports ?? []).some((q) => q.containerPort === p)) out.push(`${cid}: flag port ${p} is not a containerPort`);
      }
      for (const kind of ['readinessProbe', 'livenessProbe', 'startupProbe']) {
        const probe = c[kind];
        if (!probe) continue;
        const port = probe.grpc?.port ?? probe.httpGet?.port ?? probe.tcpSocket?.port;
        if (port !== undefined && !(c.ports ?? []).some((q) => q.name === port || q.containerPort === port)) {
          out.push(`${cid}: ${kind} port ${port} is no containerPort`);
        }
        if (probe.grpc && !(c.ports ?? []).some((q) => q.containerPort === probe.grpc.port && q.name === 'grpc')) {
          out.push(`${cid}: ${kind} gRPC probe is not on the gRPC port`);
        }
      }
      // host:port peers must be Services (or StatefulSet pods behind a headless one) with that port.
      for (const flag of ['router', 'prefill', 'decode', 'kvcache', 'redis', 'expert-shards']) {
        const v = argValue(args, flag);
        if (v === undefined) continue;
        for (const entry of v.split(',')) {
          // dns:NAME:PORT is a discovery source: NAME must be a headless Service, whose DNS answer
          // lists every ready pod (a ClusterIP Service would resolve to one virtual address).
          const dns = entry.startsWith('dns:');
          const addr = dns ? entry.slice(4) : entry;
          const [host, port] = addr.split(':');
          const labels = host.split('.');
          const svcName = labels.length > 1 ? labels[1] : labels[0];
          const svc = services.find((s) => s.metadata.name === svcName);
          if (!svc) { out.push(`${cid}: --${flag} ${entry}: no Service ${svcName}`); continue; }
          if (!svc.spec.ports.some((p) => p.port === Number(port))) out.push(`${cid}: --${flag} ${entry}: Service ${svcName} has no port ${port}`);
          if (dns && svc.spec.clusterIP !== 'None') out.push(`${cid}: --${flag} ${entry}: Service ${svcName} is not headless (clusterIP: None)`);
          if (labels.length > 1) {
            const sts = workloads.find((x) => x.kind === 'StatefulSet' && x.spec.serviceName === svcName);
            const ordinal = Number(labels[0].slice(labels[0].lastIndexOf('-') + 1));
            if (!sts || labels[0] !== `${sts.metadata.name}-${ordinal}` || ordinal >= sts.spec.replicas) {
              out.push(`${cid}: --${flag} ${entry}: no such StatefulSet pod`);
            }
          }
        }
      }
      if (w.kind === 'StatefulSet' && argValue(args, 'num-shards') !== undefined &&
          Number(argValue(args, 'num-shards')) !== w.spec.replicas) {
        out.push(`${cid}: --num-shards ${argValue(args, 'num-shards')} but ${w.spec.replicas} replicas`);
      }
      const shards = argValue(args, 'expert-shards');
      if (shards !== undefined) {
        const sts = workloads.find((x) => x.kind === 'StatefulSet' && x.metadata.name === 'expert-shard');
        if (sts && shards.split(',').length !== sts.spec.replicas) out.push(`${cid}: --expert-shards lists ${shards.split(',').length} shards, the StatefulSet runs ${sts.spec.replicas}`);
      }
    }
  }
  for (const s of services) {
    const pods = podsMatching(s.spec.selector);
    if (pods.length === 0) { out.push(`Service/${s.metadata.name}: selector matches no pod template`); continue; }
    for (const p of s.spec.ports) {
      for (const w of pods) if (!resolvePort(w, p.targetPort ?? p.port)) out.push(`Service/${s.metadata.name}: targetPort ${p.targetPort} is no containerPort of ${w.metadata.name}`);
    }
  }
  for (const o of objs) {
    const id = `${o.kind}/${o.metadata.name}`;
    if (o.kind === 'PodDisruptionBudget' && podsMatching(o.spec.selector.matchLabels).length === 0) out.push(`${id}: selector matches no pod template`);
    if (o.kind === 'HorizontalPodAutoscaler' && !workloads.some((w) => w.kind === o.spec.scaleTargetRef.kind && w.metadata.name === o.spec.scaleTargetRef.name)) out.push(`${id}: no ${o.spec.scaleTargetRef.kind} ${o.spec.scaleTargetRef.name}`);
    if (o.kind === 'NetworkPolicy') {
      const sel = o.spec.podSelector.matchLabels;
      const pods = sel ? podsMatching(sel) : workloads;
      if (pods.length === 0) out.push(`${id}: podSelector matches no pod template`);
      for (const rule of o.spec.ingress ?? []) {
        for (const from of rule.from ?? []) {
          if (from.podSelector?.matchLabels && !from.namespaceSelector && podsMatching(from.podSelector.matchLabels).length === 0) out.push(`${id}: from podSelector matches no pod template`);
        }
        for (const p of rule.ports ?? []) {
          if (!pods.some((w) => resolvePort(w, p.port))) out.push(`${id}: port ${p.port} is no containerPort of the pods it selects`);
        }
      }
    }
    if (o.kind === 'ServiceMonitor') {
      const selected = services.filter((s) => matches(o.spec.selector.matchLabels, s.metadata.labels));
      if (selected.length === 0) out.push(`${id}: selects no Service`);
      for (const e of o.spec.endpoints) for (const s of selected) if (!s.spec.ports.some((p) => p.name === e.port)) out.push(`${id}: Service ${s.metadata.name} has no port ${e.port}`);
      for (const w of workloads) {
        if (w.spec.template.spec.containers.some((c) => (c.ports ?? []).some((p) => p.name === 'metrics')) &&
            !selected.some((s) => matches(s.spec.selector, w.spec.template.metadata.labels))) {
          out.push(`${id}: the metrics port of ${w.metadata.name} is scraped by no Service it selects`);
        }
      }
    }
  }
  return out;
}

// ---- the whole check on one copy of the repository's deploy/ tree ----
function run(cmd, args, opts = {}) {
  return spawnSync(cmd, args, { encoding: 'utf8', ...opts });
}
function checkTree(root) {
  const errors = [];
  const k8s = path.join(root, 'deploy/k8s');
  const yl = run('yamllint', ['-c', path.join(k8s, '.yamllint.yaml'), k8s]);
  if (yl.status !== 0) errors.push(`yamllint: ${yl.stdout.trim()}`);
  const dockerDir = path.join(root, 'deploy/docker');
  const dockerfiles = fs.readdirSync(dockerDir).filter((f) => f.startsWith('Dockerfile')).map((f) => path.join(dockerDir, f));
  if (dockerfiles.length === 0) errors.push('no Dockerfiles');
  const dl = run(path.join(nodeDir, 'node_modules/.bin/dockerfilelint'), ['-o', 'json', ...dockerfiles]);
  if (dl.status !== 0) {
    let issues = dl.stdout.trim();
    try {
      issues = JSON.parse(dl.stdout).files.flatMap((f) => f.issues.map(
        (i) => `${path.basename(f.file)}:${i.line}: ${i.title} (${i.category})`)).join('; ');
    } catch { /* not JSON: report the raw output */ }
    errors.push(`dockerfilelint: ${issues || dl.stderr.trim()}`);
  }
  for (const overlay of OVERLAYS) {
    const r = run('kubectl', ['kustomize', path.join(k8s, 'overlays', overlay)]);
    if (r.status !== 0) { errors.push(`${overlay}: kubectl kustomize: ${r.stderr.trim()}`); continue; }
    const objs = yaml.loadAll(r.stdout).filter(Boolean);
    if (objs.length === 0) errors.push(`${overlay}: renders nothing`);
    for (const o of objs) errors.push(...schemaErrors(o).map((e) => `${overlay}: ${e}`));
    errors.push(...consistencyErrors(objs).map((e) => `${overlay}: ${e}`));
  }
  return errors;
}
function copyTree(name) {
  const dst = path.join(work, name);
  fs.rmSync(dst, { recursive: true, force: true });
  fs.mkdirSync(path.join(dst, 'deploy'), { recursive: true });
  for (const d of ['k8s', 'docker']) fs.cpSync(path.join(repo, 'deploy', d), path.join(dst, 'deploy', d), { recursive: true });
  return dst;
}
function edit(root, rel, from, to) {
  const f = path.join(root, rel);
  const text = fs.readFileSync(f, 'utf8');
  if (!text.includes(from)) throw new Error(`mutation: '${from}' is not in ${rel}`);
  fs.writeFileSync(f, text.replace(from, to));
}

fs.mkdirSync(work, { recursive: true });
let failed = false;
const good = checkTree(repo);
if (good.length) { failed = true; console.log(`FAIL: the real manifests:\n  ${good.join('\n  ')}`); }
else console.log(`ok: ${OVERLAYS.join(', ')} render, validate and agree with the binaries`);

const base = 'deploy/k8s/base';
const mutations = [
  ['unknown field', `${base}/router.yaml`, '  replicas: 1\n', '  replicas: 1\n  replica: 1\n', /unknown field 'replica'/],
  ['unknown nested field', `${base}/kvcache.yaml`, '            periodSeconds: 5\n', '            periodSeconds: 5\n            perodSeconds: 5\n', /readinessProbe: unknown field 'perodSeconds'/],
  ['wrong type', `${base}/router.yaml`, 'maxReplicas: 4', 'maxReplicas: "four"', /schema: .*maxReplicas/],
  ['ServiceMonitor unknown field', `${base}/servicemonitor.yaml`, '      interval: 15s', '      intervall: 15s', /ServiceMonitor\/moeserve.*unknown field 'intervall'/],
  ['misspelled flag', `${base}/router.yaml`, '"--metrics-port", "9464"', '"--metrics-prot", "9464"', /flag --metrics-prot is not in moeserve-router --help/],
  ['wrong probe port', `${base}/kvcache.yaml`, '            grpc:\n              port: 50054\n            periodSeconds: 5', '            grpc:\n              port: 50055\n            periodSeconds: 5', /readinessProbe port 50055 is no containerPort/],
  ['containerPort set by no flag', `${base}/router.yaml`, 'containerPort: 9464', 'containerPort: 9465', /containerPort 9465 is set by no flag/],
  ['wrong Service targetPort', `${base}/gateway.yaml`, 'targetPort: http', 'targetPort: htp', /targetPort htp is no containerPort/],
  ['wrong peer port', `${base}/gateway.yaml`, '"router:50051"', '"router:50052"', /--router router:50052: Service router has no port 50052/],
  ['discovery through a ClusterIP Service', `${base}/decode-worker.yaml`, '  clusterIP: None\n', '', /--decode dns:decode-worker:50052: Service decode-worker is not headless/],
  ['discovery of a missing Service', `${base}/router.yaml`, '"dns:prefill-worker:50052"', '"dns:prefill-workers:50052"', /--prefill dns:prefill-workers:50052: no Service prefill-workers/],
  ['selector matches nothing', `${base}/decode-worker.yaml`, 'kind: PodDisruptionBudget\nmetadata:\n  name: decode-worker\nspec:\n  maxUnavailable: 1\n  selector:\n    matchLabels:\n      app.kubernetes.io/name: moeserve\n      app.kubernetes.io/component: decode-worker', 'kind: PodDisruptionBudget\nmetadata:\n  name: decode-worker\nspec:\n  maxUnavailable: 1\n  selector:\n    matchLabels:\n      app.kubernetes.io/name: moeserve\n      app.kubernetes.io/component: decoder', /PodDisruptionBudget\/decode-worker: selector matches no pod template/],
  ['NetworkPolicy port', `${base}/networkpolicies.yaml`, '        - port: 6379', '        - port: 6380', /redis-from-kvcache: port 6380/],
  ['missing ConfigMap key', `${base}/config.yaml`, '  BLOCK_TOKENS: "16"\n', '', /ConfigMap moeserve-cluster has no key BLOCK_TOKENS/],
  ['shard count', 'deploy/k8s/overlays/gpu-ep/kustomization.yaml', 'value: 4', 'value: 3', /--num-shards 4 but 3 replicas/],
  ['yamllint', `${base}/redis.yaml`, 'replicas: 1', 'replicas: 1   ', /yamllint:[\s\S]*trailing-spaces/],
  ['dockerfilelint', 'deploy/docker/Dockerfile.router', 'USER 10001', 'USER 10001\nEXPOSE 50051:50051', /dockerfilelint:[\s\S]*Expose Only Container Port/],
];
for (const [name, rel, from, to, expect] of mutations) {
  const root = copyTree(`broken-${name.replace(/\W+/g, '-')}`);
  edit(root, rel, from, to);
  const errors = checkTree(root);
  if (!errors.some((e) => expect.test(e))) {
    failed = true;
    console.log(`FAIL: broken copy '${name}' was not caught as ${expect}; errors:\n  ${errors.join('\n  ') || '(none)'}`);
  } else {
    console.log(`ok: broken copy '${name}' caught: ${errors.find((e) => expect.test(e))}`);
  }
}
process.exit(failed ? 1 : 0);
