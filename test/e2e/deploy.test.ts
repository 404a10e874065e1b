import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { join, posix } from 'node:path';
import { describe, it } from 'node:test';
import { parse, parseAllDocuments } from 'yaml';
import { repoRoot, runCli, tempFiles, useGateway } from '../helpers/gateway.js';

/** Dockerfile instructions of the final stage, continuation lines joined. */
function finalStage(): { instruction: string; args: string }[] {
  const text = readFileSync(join(repoRoot, 'deploy/Dockerfile'), 'utf8').replace(/\\\n\s*/g, ' ');
  const lines = text.split('\n').filter((l) => l.trim() !== '' && !l.trimStart().startsWith('#'));
  const all = lines.map((l) => {
    const m = /^\s*(\S+)\s+(.*)$/.exec(l)!;
    return { instruction: m[1]!.toUpperCase(), args: m[2]!.trim() };
  });
  const from = all
    .map((x, i) => (x.instruction === 'FROM' ? i : -1))
    .filter((i) => i >= 0)
    .pop()!;
  return all.slice(from);
}

const k8s = parseAllDocuments(readFileSync(join(repoRoot, 'deploy/kubernetes/deployment.yaml'), 'utf8')).map((d) => d.toJS());
const deployment = k8s.find((d) => d.kind === 'Deployment');
const configMap = parse(readFileSync(join(repoRoot, 'deploy/kubernetes/configmap.yaml'), 'utf8'));
const container = deployment.spec.template.spec.containers[0];
const env: Record<string, string> = Object.fromEntries(container.env.filter((e: { value?: string }) => e.value !== undefined).map((e: { name: string; value: string }) => [e.name, e.value]));
/** The ConfigMap's config as the container sees it: `${VAR:-default}` with the Deployment's env. */
const configAsDeployed = parse(configMap.data['gateway.yaml'].replace(/\$\{([A-Z_]+)(?::-([^}]*))?\}/g, (_: string, name: string, dflt: string) => env[name] ?? dflt ?? ''));

describe('deploy/: the Dockerfile and Kubernetes manifests match the code', () => {
  const gw = useGateway();

  it('the image runs as a non-root user, with the config in a mounted directory', () => {
    const stage = finalStage();
    const user = stage.filter((s) => s.instruction === 'USER').pop();
    assert.ok(user && !['root', '0'].includes(user.args.split(':')[0]!), 'a USER that is not root');
    const volume = JSON.parse(stage.find((s) => s.instruction === 'VOLUME')!.args) as string[];
    const cmd = JSON.parse(stage.find((s) => s.instruction === 'CMD')!.args) as string[];
    const entry = JSON.parse(stage.find((s) => s.instruction === 'ENTRYPOINT')!.args) as string[];
    assert.deepEqual(entry, ['eventgate']);
    assert.equal(cmd[0], 'run');
    const config = cmd[cmd.indexOf('-c') + 1]!;
    assert.ok(volume.includes(posix.dirname(config)), `${config} is in a VOLUME (${volume.join(', ')})`);
  });

  it('the image exposes the ports of the default config and checks /healthz on the admin port', () => {
    const stage = finalStage();
    const exposed = stage
      .filter((s) => s.instruction === 'EXPOSE')
      .flatMap((s) => s.args.split(/\s+/))
      .map(Number)
      .sort();
    const defaults = readFileSync(join(repoRoot, 'deploy/kubernetes/configmap.yaml'), 'utf8');
    const ports = [...defaults.matchAll(/\$\{(?:HTTP|WS|ADMIN)_PORT:-(\d+)\}/g)].map((m) => Number(m[1])).sort();
    assert.deepEqual(exposed, ports);
    const health = stage.find((s) => s.instruction === 'HEALTHCHECK')!.args;
    assert.match(health, /\/healthz/);
    assert.match(stage.find((s) => s.instruction === 'ENV')!.args, new RegExp(`ADMIN_PORT=${configAsDeployed.admin.port}\\b`));
  });

  it('the Deployment mounts the ConfigMap where the command reads the config, runs non-root, and probes the admin port', () => {
    const spec = deployment.spec.template.spec;
    assert.equal(spec.securityContext.runAsNonRoot, true);
    const volume = spec.volumes.find((v: { name: string }) => v.name === container.volumeMounts[0].name);
    assert.equal(volume.configMap.name, configMap.metadata.name);
    const config = container.args[container.args.indexOf('-c') + 1];
    assert.equal(container.volumeMounts[0].mountPath, posix.dirname(config));
    assert.ok(posix.basename(config) in configMap.data, `the ConfigMap has ${posix.basename(config)}`);
    assert.equal(container.volumeMounts[0].subPath, undefined, 'no subPath: Kubernetes only updates whole-volume mounts, and hot reload needs that');
    const portOf = (name: string | number) => (typeof name === 'number' ? name : container.ports.find((p: { name: string }) => p.name === name).containerPort);
    for (const probe of ['livenessProbe', 'readinessProbe', 'startupProbe']) assert.equal(portOf(container[probe].httpGet.port), configAsDeployed.admin.port, `${probe} on the admin port`);
    assert.equal(container.livenessProbe.httpGet.path, '/healthz');
    assert.equal(container.readinessProbe.httpGet.path, '/readyz');
    assert.equal(configAsDeployed.admin.host, '0.0.0.0', 'probes come from outside the pod');
    const listenerPorts = Object.values(configAsDeployed.listeners as Record<string, { port: number }>)
      .map((l) => Number(l.port))
      .sort();
    const containerPorts = container.ports
      .map((p: { containerPort: number }) => p.containerPort)
      .filter((p: number) => p !== configAsDeployed.admin.port)
      .sort();
    assert.deepEqual(containerPorts, listenerPorts);
  });

  it('the ConfigMap config validates', async () => {
    const dir = tempFiles({ 'gateway.yaml': configMap.data['gateway.yaml'] });
    const r = await runCli(['validate', '-c', 'gateway.yaml'], { cwd: dir, env: env });
    assert.equal(r.stdout, 'ok\n', r.stderr);
    assert.equal(r.code, 0);
  });

  it('the probes and the image health check answer 200 on a gateway running the ConfigMap config', async () => {
    await gw.start(configMap.data['gateway.yaml'], { env: { HTTP_PORT: '0', WS_PORT: '0', ADMIN_PORT: '0' } });
    for (const probe of ['livenessProbe', 'readinessProbe']) {
      const res = await fetch(`${gw.adminUrl}${container[probe].httpGet.path}`);
      assert.equal(res.status, 200, probe);
    }
    const health = finalStage().find((s) => s.instruction === 'HEALTHCHECK')!.args;
    const cmd = JSON.parse(health.slice(health.indexOf('CMD') + 3).trim()) as string[];
    const port = new URL(gw.adminUrl).port;
    const child = spawn(process.execPath, cmd.slice(1), { env: { ...process.env, ADMIN_PORT: port }, stdio: 'ignore' });
    const [code] = await once(child, 'exit');
    assert.equal(cmd[0], 'node');
    assert.equal(code, 0, 'the HEALTHCHECK command succeeds');
  });

  it('docs/gitops.md explains deploy/', () => {
    assert.match(readFileSync(join(repoRoot, 'docs/gitops.md'), 'utf8'), /deploy\/kubernetes/);
  });
});
