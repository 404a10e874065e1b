import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { cpSync, existsSync, readFileSync, symlinkSync } from 'node:fs';
import { delimiter, join, posix } from 'node:path';
import { describe, it } from 'node:test';
import { parse, parseAllDocuments } from 'yaml';
import { runCliInProcess } from '../helpers/cli.js';
import { repoRoot, tempFiles, useGateway } from '../helpers/gateway.js';
import { fetch } from '../helpers/http.js';

type Instruction = { instruction: string; args: string };

/** Dockerfile instructions, continuation lines joined, one list per stage (`FROM` first). */
function stages(): Instruction[][] {
  const text = readFileSync(join(repoRoot, 'deploy/Dockerfile'), 'utf8').replace(/\\\n\s*/g, ' ');
  const lines = text.split('\n').filter((l) => l.trim() !== '' && !l.trimStart().startsWith('#'));
  const result: Instruction[][] = [];
  for (const l of lines) {
    const m = /^\s*(\S+)\s+(.*)$/.exec(l)!;
    const instruction = { instruction: m[1]!.toUpperCase(), args: m[2]!.trim() };
    if (instruction.instruction === 'FROM') result.push([]);
    result.at(-1)?.push(instruction);
  }
  return result;
}

/** Dockerfile instructions of the final stage. */
const finalStage = (): Instruction[] => stages().at(-1)!;

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
    const r = await runCliInProcess(['validate', '-c', 'gateway.yaml'], { cwd: dir, env: env });
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

  it("the build stage's COPYs hold everything the build runs: its npm ci compiles the CLI (the prepare script)", async () => {
    // No Docker daemon here: copy what the build stage copies, nothing more, and run the prepare
    // script `npm ci` runs there (node_modules linked from the checkout instead of installed), as
    // npm runs it: `npm_command` ci, where it compiles src alone (tsconfig.src.json).
    const build = stages()[0]!;
    assert.match(build.find((s) => s.instruction === 'RUN')!.args, /\bnpm ci\b/);
    const context = tempFiles({});
    for (const copy of build.filter((s) => s.instruction === 'COPY' && !s.args.startsWith('--'))) {
      const parts = copy.args.split(/\s+/);
      const dest = parts.pop()!;
      for (const source of parts) cpSync(join(repoRoot, source), join(context, dest === './' ? source : dest), { recursive: true });
    }
    symlinkSync(join(repoRoot, 'node_modules'), join(context, 'node_modules'));
    const prepare = (JSON.parse(readFileSync(join(context, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts.prepare!;
    const child = spawn('sh', ['-c', prepare], {
      cwd: context,
      env: { ...process.env, npm_command: 'ci', PATH: `${join(context, 'node_modules', '.bin')}${delimiter}${process.env.PATH}` },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const [code] = (await once(child, 'close')) as [number | null];
    assert.equal(code, 0, `the prepare script fails on the files the build stage copies:\n${stderr.slice(-2000)}`);
    assert.ok(existsSync(join(context, 'dist', 'src', 'cli', 'main.js')), 'the CLI is compiled');
    // The stage packs what npm ci built (a pack with scripts would build it all again): the package
    // holds the compiled CLI.
    const run = build.find((s) => s.instruction === 'RUN')!.args;
    assert.match(run, /\bnpm pack --ignore-scripts\b/);
    const packed = spawnSync('npm', ['pack', '--ignore-scripts', '--dry-run', '--json'], { cwd: context, encoding: 'utf8' });
    assert.equal(packed.status, 0, packed.stderr);
    const files = new Set((JSON.parse(packed.stdout) as [{ files: { path: string }[] }])[0].files.map((f) => f.path));
    for (const f of ['bin/eventgate.js', 'dist/src/cli/main.js', 'gateway.schema.json']) assert.ok(files.has(f), `the package holds ${f}`);
    const dir = tempFiles({ 'gateway.yaml': configMap.data['gateway.yaml'] });
    const child2 = spawn(process.execPath, [join(context, 'bin', 'eventgate.js'), 'validate', '-c', 'gateway.yaml'], { cwd: dir, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child2.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
    child2.stderr.setEncoding('utf8').on('data', (c: string) => (out += c));
    const [code2] = (await once(child2, 'close')) as [number | null];
    assert.equal(out, 'ok\n');
    assert.equal(code2, 0);
  });

  it('docs/gitops.md explains deploy/', () => {
    assert.match(readFileSync(join(repoRoot, 'docs/gitops.md'), 'utf8'), /deploy\/kubernetes/);
  });
});
