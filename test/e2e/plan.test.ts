import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { makeCertificates } from '../helpers/certificates.js';
import { runCliInProcess } from '../helpers/cli.js';
import { WsClient } from '../helpers/clients.js';
import { cliPath, repoRoot, runCli, tempFiles, useGateway } from '../helpers/gateway.js';
import { fetch } from '../helpers/http.js';
import { FETCH_BLOCKED_PORTS, firstFreePort } from '../helpers/ports.js';

const yaml = (...lines: string[]) => `${lines.join('\n')}\n`;

const base = (filter: string, wsHost = '127.0.0.1', extraRoute: string[] = []) =>
  yaml(
    'version: 1',
    'admin: { port: 0, token: plan-test-token-0123456789 }',
    'brokers: { local: { kind: memory } }',
    'listeners:',
    '  api: { kind: http, port: 0 }',
    `  push: { kind: websocket, port: 0, host: ${wsHost} }`,
    'routes:',
    '  - name: in',
    '    from: { listener: api, path: /in }',
    `    through: [ { filter: '${filter}' } ]`,
    '    to: { broker: local, topic: t }',
    '  - name: out',
    '    from: { broker: local, topic: t }',
    '    to: { listener: push, path: /ws }',
    ...extraRoute,
  );

/** An amqp broker (nothing listens on its port: plan needs no server) with a route on a declared queue and one on a routing-key pattern. */
const amqpRoutes = (queueFilter: string, patternRoute: string) =>
  yaml(
    'version: 1',
    'admin: { port: 0, token: plan-test-token-0123456789 }',
    'brokers:',
    '  local: { kind: memory }',
    '  rabbit: { kind: amqp, url: "amqp://127.0.0.1:1/", queues: { billing: { bindings: [orders.*] } } }',
    'routes:',
    '  - name: q',
    '    from: { broker: rabbit, topic: billing }',
    `    through: [ { filter: '${queueFilter}' } ]`,
    '    to: { broker: local, topic: t }',
    `  - name: ${patternRoute}`,
    "    from: { broker: rabbit, topic: 'orders.*' }",
    '    to: { broker: local, topic: t }',
  );

/** A config that reads a schema file and listener certificates (one pair beside it, one by an absolute path), with its files: for copies in two directories. */
const sameConfigElsewhere = (): Record<string, string> => {
  const { a } = makeCertificates();
  return {
    'gateway.yaml': yaml(
      'version: 1',
      'admin: { port: 0, token: plan-test-token-0123456789 }',
      'brokers: { local: { kind: memory } }',
      'listeners:',
      '  api: { kind: http, port: 0, tls: { cert: tls/cert.pem, key: tls/key.pem } }',
      // One certificate by an absolute path: the same file for both copies.
      `  push: { kind: websocket, port: 0, tls: { cert: ${a.certFile}, key: ${a.keyFile} } }`,
      'routes:',
      '  - name: in',
      '    from: { listener: api, path: /in }',
      '    through: [ { validate: { schema: schemas/in.json } } ]',
      '    to: { broker: local, topic: t }',
      '  - name: out',
      '    from: { broker: local, topic: t }',
      '    to: { listener: push, path: /ws }',
    ),
    'schemas/in.json': JSON.stringify({ type: 'object', required: ['id'] }),
    'tls/cert.pem': a.cert,
    'tls/key.pem': a.key,
  };
};

/** The files in a directory one level deeper than tempFiles' (a path relative to it differs from one relative to a copy's). */
const deeperCopy = (files: Record<string, string>): string => join(tempFiles(Object.fromEntries(Object.entries(files).map(([name, text]) => [`deeper/${name}`, text]))), 'deeper');

const noStackTrace = (r: { stdout: string; stderr: string }) => assert.doesNotMatch(r.stdout + r.stderr, /\n\s+at .+:\d+:\d+\)?\n/, 'never a stack trace');

describe('eventgate plan --from OLD', () => {
  it('exits 0 and says so when nothing would change', async () => {
    const dir = tempFiles({ 'old.yaml': base('a > 1'), 'new.yaml': base('a > 1') });
    const r = await runCli(['plan', '-c', 'new.yaml', '--from', 'old.yaml'], { cwd: dir });
    noStackTrace(r);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^no changes: a reload would keep all 5 components as they are$/m);
  });

  it("redacts the values of ${VAR}s that NEW's and OLD's problems and warnings quote, as validate does (plan --admin runs with the deployment's values)", async () => {
    const env = { TARGET: 'k3y7x-broker-secret', ROUTED: 'orders.{region}.k3y7x-from-env' };
    const first = '    to: { broker: local, topic: t }';
    const warned = base('a > 1', '127.0.0.1', ['  - name: extra', '    from: { listener: api, path: /x }', '    to: { broker: local, topic: "${ROUTED}" }']);
    const invalid = base('a > 1').replace(first, '    to: { broker: "${TARGET}", topic: t }');
    // Route 'out' then reads a topic no route writes, and the problem's hint rewrote the topic from ${ROUTED} as an expression.
    const never = base('a > 1').replace(first, '    to: { broker: local, topic: "${ROUTED}" }');
    const dir = tempFiles({ 'old.yaml': base('a > 1'), 'warned.yaml': warned, 'invalid.yaml': invalid, 'never.yaml': never });
    for (const format of ['text', 'json']) {
      const w = await runCli(['plan', '-c', 'warned.yaml', '--from', 'old.yaml', '--format', format], { cwd: dir, env });
      assert.equal(w.code, 2, w.stderr);
      assert.match(w.stderr, /warning: topic '\[redacted\]' is taken as a name/);
      const e = await runCli(['plan', '-c', 'invalid.yaml', '--from', 'old.yaml', '--format', format], { cwd: dir, env });
      assert.equal(e.code, 1, e.stderr);
      assert.match(e.stdout, /broker '\[redacted\]' is not defined/);
      // OLD's problems too, when it is the one that is invalid.
      const o = await runCli(['plan', '-c', 'old.yaml', '--from', 'invalid.yaml', '--format', format], { cwd: dir, env });
      assert.equal(o.code, 1, o.stderr);
      assert.match(o.stderr + o.stdout, /broker '\[redacted\]' is not defined/);
      const n = await runCli(['plan', '-c', 'never.yaml', '--from', 'old.yaml', '--format', format], { cwd: dir, env });
      assert.equal(n.code, 1, n.stderr);
      assert.match(n.stdout, /'\[redacted\]' is a name, as written, not an expression: a topic computed per message is written topic: \{ expression: \.\.\. \}/);
      const v = await runCli(['validate', '-c', 'never.yaml', '--format', format], { cwd: dir, env });
      assert.equal(v.code, 1, v.stderr);
      for (const r of [w, e, o, n, v]) {
        noStackTrace(r);
        assert.doesNotMatch(r.stdout + r.stderr, /k3y7x/);
      }
    }
  });

  it('exits 0 for the same config in another directory: the schema and certificate files it reads count by content, not by where the directory is', async () => {
    // A CI job plans against a checkout of the base branch elsewhere: every route validating
    // against a schema file, and every listener or broker with a certificate, was "changed" (exit 2),
    // their keys holding the files' absolute paths.
    const files = sameConfigElsewhere();
    const old = tempFiles(files);
    const dir = deeperCopy(files);
    const r = await runCliInProcess(['plan', '-c', 'gateway.yaml', '--from', join(old, 'gateway.yaml')], { cwd: dir });
    noStackTrace(r);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /^no changes: a reload would keep all 5 components as they are$/m);

    // A change of a file's content is still a change of what reads it.
    writeFileSync(join(dir, 'schemas/in.json'), JSON.stringify({ type: 'object', required: ['id', 'at'] }));
    const changed = await runCliInProcess(['plan', '-c', 'gateway.yaml', '--from', join(old, 'gateway.yaml'), '--format', 'json'], { cwd: dir });
    assert.equal(changed.code, 2, changed.stdout + changed.stderr);
    const report = JSON.parse(changed.stdout);
    assert.deepEqual(report.routes, { add: [], change: ['in'], remove: [], keep: ['out'] });
  });

  it('exits 2 and lists what is added, changed, removed and kept, with the clients and groups affected', async () => {
    const added = ['  - name: audit', '    from: { broker: local, topic: t }', '    to: { broker: local, topic: audit }'];
    const dir = tempFiles({ 'old.yaml': base('a > 1'), 'new.yaml': base('a > 2', '0.0.0.0', added) });
    const r = await runCli(['plan', '-c', 'new.yaml', '--from', 'old.yaml'], { cwd: dir });
    noStackTrace(r);
    assert.equal(r.code, 2, r.stderr);
    assert.deepEqual(r.stdout.split('\n').slice(0, 6), [
      'plan: new.yaml against old.yaml',
      '  ~ listener push (new socket)',
      '  + route audit',
      '  ~ route in',
      '  ~ route out',
      '  = 2 kept (local, api)',
    ]);
    assert.match(r.stdout, /^clients disconnected: listener push: the listener needs a new socket/m);
    assert.match(r.stdout, /^consumer group joins: eventgate-audit \(route audit, local\/t\)$/m);
    // Route out is rebuilt (its listener gets a new socket) but reads local/t as before: it takes the running subscription over.
    assert.doesNotMatch(r.stdout, /eventgate-out/);

    const json = await runCli(['plan', '-c', 'new.yaml', '--from', 'old.yaml', '--format', 'json'], { cwd: dir });
    assert.equal(json.code, 2);
    const report = JSON.parse(json.stdout);
    assert.equal(report.valid, true);
    assert.equal(report.changes, true);
    assert.deepEqual(report.routes, { add: ['audit'], change: ['in', 'out'], remove: [], keep: [] });
    assert.deepEqual(report.listeners.rebind, ['push']);
    assert.deepEqual(report.groups, [{ route: 'audit', broker: 'local', topic: 't', group: 'eventgate-audit', change: 'join' }]);
    assert.deepEqual(report.errors, []);
  });

  it('names no clients disconnected for a forward path whose parameter is only renamed (a reload moves its clients), and names a path that goes', async () => {
    const rooms = (path: string) => base('a > 1').replace('path: /ws }', `path: ${path} }`);
    const dir = tempFiles({ 'old.yaml': rooms('/ws/:room'), 'renamed.yaml': rooms('/ws/:r'), 'moved.yaml': rooms('/rooms/:r') });
    const renamed = await runCliInProcess(['plan', '-c', 'renamed.yaml', '--from', 'old.yaml', '--format', 'json'], { cwd: dir });
    assert.equal(renamed.code, 2, renamed.stdout + renamed.stderr);
    assert.deepEqual(JSON.parse(renamed.stdout).disconnected, []);
    const moved = await runCliInProcess(['plan', '-c', 'moved.yaml', '--from', 'old.yaml', '--format', 'json'], { cwd: dir });
    assert.deepEqual(JSON.parse(moved.stdout).disconnected, [{ listener: 'push', path: '/ws/:room', reason: 'no route serves this path any more' }]);
  });

  it('lists every change by name, not in the order of the config, so two plans of the same change read the same (CI diffs them)', async () => {
    const forward = (name: string, path: string) => [`  - name: ${name}`, '    from: { broker: local, topic: t }', `    to: { listener: push, path: ${path} }`];
    const routes = (names: string[]) => names.flatMap((n) => [`  - name: ${n}`, `    from: { listener: api, path: /${n} }`, '    to: { broker: local, topic: t }']);
    const config = (...lines: string[]) =>
      yaml('version: 1', 'brokers: { local: { kind: memory } }', 'listeners:', '  api: { kind: http, port: 0 }', '  push: { kind: websocket, port: 0 }', 'routes:', ...lines);
    const dir = tempFiles({
      'old.yaml': config(...routes(['zeta', 'mu', 'alpha']), ...forward('to-z', '/ws/z'), ...forward('to-a', '/ws/a')),
      // The same change, its routes written in two orders: two added, one removed, two forward paths gone.
      'new.yaml': config(...routes(['zz', 'mu', 'alpha', 'bb'])),
      'reordered.yaml': config(...routes(['bb', 'alpha', 'zz', 'mu'])),
    });
    const plans = await Promise.all(['new.yaml', 'reordered.yaml'].map((c) => runCliInProcess(['plan', '-c', c, '--from', 'old.yaml'], { cwd: dir })));
    for (const p of plans) assert.equal(p.code, 2, p.stdout + p.stderr);
    const body = (text: string) => text.split('\n').slice(1).join('\n');
    assert.equal(body(plans[1]!.stdout), body(plans[0]!.stdout));
    assert.deepEqual(plans[0]!.stdout.split('\n').slice(1, -1), [
      '  + route bb',
      '  + route zz',
      '  - route to-a',
      '  - route to-z',
      '  - route zeta',
      '  = 5 kept (local, api, push, alpha, mu)',
      'clients disconnected: listener push/ws/a: no route serves this path any more',
      'clients disconnected: listener push/ws/z: no route serves this path any more',
      'consumer group leaves: eventgate-to-a-<instance> (route to-a, local/t)',
      'consumer group leaves: eventgate-to-z-<instance> (route to-z, local/t)',
    ]);
    const json = await Promise.all(['new.yaml', 'reordered.yaml'].map((c) => runCliInProcess(['plan', '-c', c, '--from', 'old.yaml', '--format', 'json'], { cwd: dir })));
    // All but the file's name and version (its hash: the two files differ) is the same.
    const same = (stdout: string) => ({ ...JSON.parse(stdout), config: '', version: null });
    assert.deepEqual(same(json[1]!.stdout), same(json[0]!.stdout));
  });

  it("names a rebuilt route's group as rejoining only when what it asks of its broker changes", async () => {
    const asked = (from: string) => base('a > 1').replace('    from: { broker: local, topic: t }\n    to: { listener: push', `    from: ${from}\n    to: { listener: push`);
    const dir = tempFiles({
      'old.yaml': asked('{ broker: local, topic: t }'),
      'start.yaml': asked('{ broker: local, topic: t, startFrom: earliest }'),
      'steps.yaml': asked('{ broker: local, topic: t }\n    through: [ { filter: "true" } ]'),
    });
    const start = await runCliInProcess(['plan', '-c', 'start.yaml', '--from', 'old.yaml'], { cwd: dir });
    assert.equal(start.code, 2, start.stdout + start.stderr);
    assert.match(start.stdout, /^consumer group rejoins: eventgate-out-<instance> \(route out, local\/t\)$/m);
    // Before: "rejoins" for a route that takes the running subscription over (only a step changed).
    const steps = await runCliInProcess(['plan', '-c', 'steps.yaml', '--from', 'old.yaml'], { cwd: dir });
    assert.equal(steps.code, 2, steps.stdout + steps.stderr);
    assert.match(steps.stdout, /^ {2}~ route out$/m);
    assert.doesNotMatch(steps.stdout, /consumer group/);
  });

  it('exits 2 for a reload that only changes the admin token or drain timeout, or the log level (applied in place)', async () => {
    const old = base('a > 1');
    const cases: [string, string, RegExp][] = [
      ['token', old.replace('plan-test-token-0123456789', 'another-plan-token-0123456789'), /^ {2}~ admin server: reconfigured in place \(same socket\)$/m],
      ['drain', old.replace('admin: { port: 0,', 'admin: { port: 0, drainTimeoutMs: 2000,'), /^ {2}~ admin server: reconfigured in place \(same socket\)$/m],
      ['log', `${old}log: { level: debug }\n`, /^ {2}~ log settings \(applied in place\)$/m],
    ];
    for (const [what, changed, line] of cases) {
      const dir = tempFiles({ 'old.yaml': old, 'new.yaml': changed });
      // Before, each was "no changes", exit 0: a CI job would skip the deploy of a new admin token.
      const r = await runCliInProcess(['plan', '-c', 'new.yaml', '--from', 'old.yaml'], { cwd: dir });
      assert.equal(r.code, 2, `${what}: ${r.stdout}${r.stderr}`);
      assert.match(r.stdout, line, what);
      const json = JSON.parse((await runCliInProcess(['plan', '-c', 'new.yaml', '--from', 'old.yaml', '--format', 'json'], { cwd: dir })).stdout);
      assert.equal(json.changes, true, what);
      assert.deepEqual([json.admin, json.log], what === 'log' ? ['keep', 'change'] : ['reconfigure', 'keep'], what);
    }
  });

  it('names the per-instance group a removed websocket forward route leaves, as the one it joined', async () => {
    const withoutOut = base('a > 1').replace(/ {2}- name: out\n.*\n.*\n/, '');
    const dir = tempFiles({ 'old.yaml': base('a > 1'), 'new.yaml': withoutOut, 'first.yaml': withoutOut });
    const r = await runCliInProcess(['plan', '-c', 'new.yaml', '--from', 'old.yaml'], { cwd: dir });
    assert.equal(r.code, 2, r.stdout + r.stderr);
    // Before: "leaves: eventgate-out", a group the route never joined.
    assert.match(r.stdout, /^consumer group leaves: eventgate-out-<instance> \(route out, local\/t\)$/m);
    const back = await runCliInProcess(['plan', '-c', 'old.yaml', '--from', 'first.yaml'], { cwd: dir });
    assert.match(back.stdout, /^consumer group joins: eventgate-out-<instance> \(route out, local\/t\)$/m);
  });

  it('names no group for an amqp route reading a declared queue, and says what a left routing-key queue keeps', async () => {
    const dir = tempFiles({ 'old.yaml': amqpRoutes('true', 'rk'), 'new.yaml': amqpRoutes('a > 1', 'rk2') });
    const r = await runCliInProcess(['plan', '-c', 'new.yaml', '--from', 'old.yaml'], { cwd: dir });
    noStackTrace(r);
    assert.equal(r.code, 2, r.stdout + r.stderr);
    // Before: "consumer group rejoins: eventgate-q", a group the route reading queue 'billing' never uses.
    assert.doesNotMatch(r.stdout, /eventgate-q\b/);
    assert.match(r.stdout, /^consumer group leaves: eventgate-rk \(route rk, rabbit\/orders\.\*\): its queue stays bound and collects every matching message until it is deleted/m);
    assert.match(r.stdout, /^consumer group joins: eventgate-rk2 \(route rk2, rabbit\/orders\.\*\)$/m);
    const json = JSON.parse((await runCliInProcess(['plan', '-c', 'new.yaml', '--from', 'old.yaml', '--format', 'json'], { cwd: dir })).stdout);
    assert.deepEqual(json.routes.change, ['q']);
    assert.deepEqual(
      json.groups.map((g: { group: string; change: string; left?: string }) => [g.group, g.change, g.left !== undefined]),
      [
        ['eventgate-rk2', 'join', false],
        ['eventgate-rk', 'leave', true],
      ],
    );
    // Renamed with its group written out: the same queue, read by the new route. It was "leaves" (the
    // queue "stays bound and collects") beside "joins" for one group.
    const keptGroup = (route: string) => amqpRoutes('true', route).replace("topic: 'orders.*' }", "topic: 'orders.*', group: eventgate-rk }");
    const renamed = tempFiles({ 'old.yaml': keptGroup('rk'), 'new.yaml': keptGroup('rk2') });
    const kept = await runCliInProcess(['plan', '-c', 'new.yaml', '--from', 'old.yaml'], { cwd: renamed });
    assert.equal(kept.code, 2, kept.stdout + kept.stderr);
    assert.deepEqual(
      kept.stdout.split('\n').filter((l) => l.startsWith('consumer group')),
      ['consumer group rejoins: eventgate-rk (route rk2, rabbit/orders.*)'],
    );

    // A headers binding's arguments changed: another binding to RabbitMQ, made before the old one is
    // unbound (2450; before, only "broker rabbit (replaced)"). Arguments written in another order are the same binding.
    const headersBinding = (args: string) => amqpRoutes('true', 'rk').replace('bindings: [orders.*]', `bindings: [orders.*, { exchange: amq.headers, arguments: { ${args} } }]`);
    const rebound = tempFiles({
      'old.yaml': headersBinding('x-match: all, region: eu'),
      'new.yaml': headersBinding('x-match: all, region: us'),
      'same.yaml': headersBinding('region: eu, x-match: all'),
    });
    const bindings = await runCliInProcess(['plan', '-c', 'new.yaml', '--from', 'old.yaml'], { cwd: rebound });
    assert.equal(bindings.code, 2, bindings.stdout + bindings.stderr);
    assert.deepEqual(
      bindings.stdout.split('\n').filter((l) => l.startsWith('binding ')),
      [
        `binding made: broker rabbit: queue 'billing' on exchange 'amq.headers', arguments {region: "us", x-match: "all"}`,
        `binding dropped: broker rabbit: queue 'billing' on exchange 'amq.headers', arguments {region: "eu", x-match: "all"} (unbound once the new bindings are in place)`,
      ],
    );
    const bindingsJson = JSON.parse((await runCliInProcess(['plan', '-c', 'new.yaml', '--from', 'old.yaml', '--format', 'json'], { cwd: rebound })).stdout);
    assert.deepEqual(
      bindingsJson.bindings.map((b: { broker: string; change: string }) => [b.broker, b.change]),
      [
        ['rabbit', 'bind'],
        ['rabbit', 'unbind'],
      ],
    );
    const reordered = await runCliInProcess(['plan', '-c', 'same.yaml', '--from', 'old.yaml'], { cwd: rebound });
    assert.doesNotMatch(reordered.stdout, /^binding /m);
  });

  it('names no group for a forward route renamed without a group: the renamed route takes its subscription over', async () => {
    const forward = (route: string, topic = 't') =>
      yaml(
        'version: 1',
        'brokers:',
        '  bus: { kind: nats, servers: "nats://127.0.0.1:1" }',
        'listeners:',
        '  push: { kind: websocket, port: 0 }',
        'routes:',
        `  - name: ${route}`,
        `    from: { broker: bus, topic: ${topic} }`,
        '    to: { listener: push, path: /ws }',
      );
    const dir = tempFiles({ 'old.yaml': forward('out'), 'new.yaml': forward('feed'), 'moved.yaml': forward('feed', 'u') });
    const groups = async (config: string) => {
      const r = await runCliInProcess(['plan', '-c', config, '--from', 'old.yaml'], { cwd: dir });
      assert.equal(r.code, 2, r.stdout + r.stderr);
      return r.stdout.split('\n').filter((l) => l.startsWith('consumer group'));
    };
    // Before: "joins: eventgate-feed-<instance>" and "leaves: eventgate-out-<instance>".
    assert.deepEqual(await groups('new.yaml'), []);
    // Another topic is another subscription: a new group joins, the old one leaves.
    assert.deepEqual(await groups('moved.yaml'), ['consumer group joins: eventgate-feed-<instance> (route feed, bus/u)', 'consumer group leaves: eventgate-out-<instance> (route out, bus/t)']);
  });

  it("says where a renamed route's new group starts on Kafka and a JetStream stream, where it does not go on from the old group", async () => {
    const copy = (route: string, extra = '') =>
      yaml(
        'version: 1',
        'brokers:',
        '  k: { kind: kafka, brokers: ["127.0.0.1:1"] }',
        '  bus: { kind: nats, servers: "nats://127.0.0.1:1", streams: { ORDERS: { subjects: ["orders.>"] } } }',
        'routes:',
        `  - name: ${route}`,
        `    from: { broker: k, topic: orders${extra} }`,
        '    to: { broker: k, topic: orders-copy }',
        `  - name: ${route}-js`,
        '    from: { broker: bus, topic: orders.created }',
        '    to: { broker: k, topic: orders-copy }',
        `  - name: ${route}-core`,
        '    from: { broker: bus, topic: audit.x }',
        '    to: { broker: k, topic: orders-copy }',
      );
    const dir = tempFiles({ 'old.yaml': copy('copy'), 'new.yaml': copy('mirror'), 'latest.yaml': copy('mirror', ', startFrom: latest'), 'group.yaml': copy('copy', ', group: g2') });
    const joins = async (config: string) => {
      const r = await runCliInProcess(['plan', '-c', config, '--from', 'old.yaml'], { cwd: dir });
      assert.equal(r.code, 2, r.stdout + r.stderr);
      return r.stdout.split('\n').filter((l) => l.startsWith('consumer group joins'));
    };
    // Before: "joins: eventgate-mirror (route mirror, k/orders)" and nothing more, though the new group
    // reads the whole topic again (startFrom defaults to earliest for a route with a broker target).
    assert.deepEqual(await joins('new.yaml'), [
      'consumer group joins: eventgate-mirror (route mirror, k/orders): a new group: it starts at the oldest record kept, so what eventgate-copy handled is delivered again; to go on from where eventgate-copy is, give the route group: eventgate-copy',
      // Core NATS keeps nothing: a new group gets what is published from then on, as the old one did.
      'consumer group joins: eventgate-mirror-core (route mirror-core, bus/audit.x)',
      'consumer group joins: eventgate-mirror-js (route mirror-js, bus/orders.created): a new group: it starts at the oldest record kept, so what eventgate-copy-js handled is delivered again; to go on from where eventgate-copy-js is, give the route group: eventgate-copy-js',
    ]);
    assert.match(
      (await joins('latest.yaml'))[0]!,
      /^consumer group joins: eventgate-mirror \(route mirror, k\/orders\): a new group: it starts after the newest record, so what is published before it joins is not delivered to it; to go on from where eventgate-copy is, give the route group: eventgate-copy$/,
    );
    const json = JSON.parse((await runCliInProcess(['plan', '-c', 'new.yaml', '--from', 'old.yaml', '--format', 'json'], { cwd: dir })).stdout);
    assert.match(json.groups.find((g: { group: string }) => g.group === 'eventgate-mirror').starts, /^a new group: it starts at the oldest record kept/);
    // The same route given another group by a reload (spec-checklist 2462). Before: "rejoins: g2 (route copy, k/orders)" and nothing more.
    assert.deepEqual(await joins('group.yaml'), [
      'consumer group joins: g2 (route copy, k/orders): a new group: it starts at the oldest record kept, so what eventgate-copy handled is delivered again; to go on from where eventgate-copy is, give the route group: eventgate-copy',
    ]);
    // Two routes of one topic each given another group: each names its own old group. Before: both
    // named the first route's (spec-checklist 2661).
    const two = (a: string, b: string) =>
      yaml(
        'version: 1',
        'brokers:',
        '  k: { kind: kafka, brokers: ["127.0.0.1:1"] }',
        'routes:',
        `  - { name: a, from: { broker: k, topic: orders, group: ${a} }, to: { broker: k, topic: orders-a } }`,
        `  - { name: b, from: { broker: k, topic: orders, group: ${b} }, to: { broker: k, topic: orders-b } }`,
      );
    const both = tempFiles({ 'old.yaml': two('ga', 'gb'), 'new.yaml': two('ga2', 'gb2') });
    const r = await runCliInProcess(['plan', '-c', 'new.yaml', '--from', 'old.yaml'], { cwd: both });
    assert.deepEqual(
      r.stdout.split('\n').filter((l) => l.startsWith('consumer group joins')),
      [
        'consumer group joins: ga2 (route a, k/orders): a new group: it starts at the oldest record kept, so what ga handled is delivered again; to go on from where ga is, give the route group: ga',
        'consumer group joins: gb2 (route b, k/orders): a new group: it starts at the oldest record kept, so what gb handled is delivered again; to go on from where gb is, give the route group: gb',
      ],
      r.stdout + r.stderr,
    );
    // A forward route's group is one per instance, which no `group:` can name (review-s41). Before:
    // "..., give the route group: eventgate-feed-<instance>" for both.
    const feed = (route: string, from: string, to: string) =>
      yaml(
        'version: 1',
        'brokers:',
        '  k: { kind: kafka, brokers: ["127.0.0.1:1"] }',
        'listeners:',
        '  push: { kind: websocket, port: 0 }',
        'routes:',
        `  - name: ${route}`,
        `    from: { broker: k, topic: orders${from} }`,
        `    to: ${to}`,
      );
    const ws = '{ listener: push, path: /ws }';
    writeFileSync(join(dir, 'feed.yaml'), feed('feed', '', ws));
    // Renamed to read from the start: its new per-instance group is what each of its starts makes.
    writeFileSync(join(dir, 'feed-earliest.yaml'), feed('feed2', ', startFrom: earliest', ws));
    // Renamed with a broker target: a group of its own, which starts at the oldest record.
    writeFileSync(join(dir, 'feed-copy.yaml'), feed('feed2', '', `[${ws}, { broker: k, topic: orders-copy }]`));
    const fromFeed = async (config: string) => {
      const r = await runCliInProcess(['plan', '-c', config, '--from', 'feed.yaml'], { cwd: dir });
      assert.equal(r.code, 2, r.stdout + r.stderr);
      return r.stdout.split('\n').filter((l) => l.startsWith('consumer group joins'));
    };
    assert.deepEqual(await fromFeed('feed-earliest.yaml'), ['consumer group joins: eventgate-feed2-<instance> (route feed2, k/orders)']);
    assert.deepEqual(await fromFeed('feed-copy.yaml'), [
      'consumer group joins: eventgate-feed2 (route feed2, k/orders): a new group: it starts at the oldest record kept, so what eventgate-feed-<instance> handled is delivered again',
    ]);
  });

  it("prints NEW's warnings on stderr, as validate does, in text and json", async () => {
    // Before: a plan of a config with a feedback loop said nothing of it (validate warns).
    const loop = ['  - name: again', '    from: { broker: local, topic: t }', '    to: { broker: local, topic: t }'];
    const dir = tempFiles({ 'old.yaml': base('a > 1'), 'new.yaml': base('a > 1', '127.0.0.1', loop) });
    for (const format of ['text', 'json']) {
      const r = await runCliInProcess(['plan', '-c', 'new.yaml', '--from', 'old.yaml', '--format', format], { cwd: dir });
      noStackTrace(r);
      assert.equal(r.code, 2, r.stdout + r.stderr);
      assert.match(r.stderr, /^new\.yaml:17:9: warning: route 'again' writes topic 't' of broker 'local', the topic it reads, and has no filter.* \[EG_CONFIG_FEEDBACK_LOOP\]$/m);
      if (format === 'json') {
        // Beside `errors`, as validate's JSON has them (a bot saw none before).
        const report = JSON.parse(r.stdout);
        assert.equal(report.changes, true);
        assert.deepEqual(
          report.warnings.map((w: { file: string; line: number; column: number; code: string; severity: string }) => `${w.file}:${w.line}:${w.column} ${w.code} ${w.severity}`),
          ['new.yaml:17:9 EG_CONFIG_FEEDBACK_LOOP warning'],
        );
        assert.deepEqual(report.errors, []);
      }
    }
    // An invalid NEW's warnings beside its errors; a plan not made (OLD unreadable) keeps NEW's.
    writeFileSync(join(dir, 'bad.yaml'), base('a > 1', '127.0.0.1', [...loop, '  - { name: bad, from: { listener: api, path: /bad }, to: { broker: nowhere, topic: t } }']));
    const invalid = JSON.parse((await runCliInProcess(['plan', '-c', 'bad.yaml', '--from', 'old.yaml', '--format', 'json'], { cwd: dir })).stdout);
    assert.deepEqual(
      [...invalid.errors, ...invalid.warnings].map((d: { code: string; severity: string }) => `${d.severity} ${d.code}`),
      ['error EG_CONFIG_REF', 'warning EG_CONFIG_FEEDBACK_LOOP'],
    );
    const notMade = JSON.parse((await runCliInProcess(['plan', '-c', 'new.yaml', '--from', 'missing.yaml', '--format', 'json'], { cwd: dir })).stdout);
    assert.equal(notMade.valid, false);
    assert.deepEqual(
      notMade.warnings.map((w: { code: string }) => w.code),
      ['EG_CONFIG_FEEDBACK_LOOP'],
    );
  });

  it('exits 1 with every validation error when NEW is invalid', async () => {
    const dir = tempFiles({ 'old.yaml': base('a > 1'), 'new.yaml': base('a >').replace('kind: memory', 'kind: memroy') });
    const r = await runCli(['plan', '-c', 'new.yaml', '--from', 'old.yaml', '--format', 'json'], { cwd: dir });
    noStackTrace(r);
    assert.equal(r.code, 1);
    const report = JSON.parse(r.stdout);
    assert.equal(report.valid, false);
    assert.deepEqual(
      report.errors.map((e: { line: number; code: string }) => [e.line, e.code]),
      [
        [3, 'EG_CONFIG_SCHEMA'],
        [10, 'EG_CONFIG_EXPRESSION'],
      ],
    );
    const text = await runCli(['plan', '-c', 'new.yaml', '--from', 'old.yaml'], { cwd: dir });
    assert.equal(text.code, 1);
    assert.match(text.stdout, /new\.yaml is invalid; a reload would be rejected and the running config kept:\n {2}new\.yaml:3:27: unknown broker kind "memroy"/);
  });

  it("reports NEW's problems when NEW is invalid, also when OLD cannot be read or the admin API cannot be reached", async () => {
    // They are what the author of the change has to fix; the plan used to say only "cannot reach the admin API".
    const dir = tempFiles({ 'new.yaml': base('a >') });
    for (const against of [
      ['--admin', 'http://127.0.0.1:1'],
      ['--from', 'nope.yaml'],
    ]) {
      const r = await runCliInProcess(['plan', '-c', 'new.yaml', ...against, '--format', 'json'], { cwd: dir });
      noStackTrace(r);
      assert.equal(r.code, 1);
      const report = JSON.parse(r.stdout);
      assert.equal(report.valid, false);
      assert.deepEqual(
        report.errors.map((e: { file: string; line: number; code: string }) => [e.file, e.line, e.code]),
        [['new.yaml', 10, 'EG_CONFIG_EXPRESSION']],
        against.join(' '),
      );
    }
  });

  // Exit 2 says "the reload changes something", which CI jobs accept (`|| [ $? -eq 2 ]`, docs/gitops.md):
  // a plan that could not be made exits 1, or a typo in a flag would pass the job with no plan at all.
  it('exits 1, never 2, when the plan cannot be made: a usage error, an unknown option, an unreadable OLD', async () => {
    const dir = tempFiles({ 'new.yaml': base('a > 1') });
    const both = await runCliInProcess(['plan', '-c', 'new.yaml', '--from', 'x.yaml', '--admin', 'http://127.0.0.1:1'], { cwd: dir });
    assert.equal(both.code, 1);
    assert.match(both.stderr, /give --from OLD or --admin URL, not both/);
    const missing = await runCliInProcess(['plan', '-c', 'new.yaml', '--from', 'nope.yaml'], { cwd: dir });
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /nope\.yaml:1:1: cannot read config file/);
    // It said `the old config nope.yaml is invalid`: nothing in it is, it is not there.
    assert.match(missing.stderr, /the old config nope\.yaml cannot be read, so there is nothing to compare with/);
    assert.doesNotMatch(missing.stdout + missing.stderr, /invalid/);
    // A NEW that cannot be read is said alone, as validate says it: nothing in it is invalid.
    const unreadable = await runCliInProcess(['plan', '-c', 'nope.yaml'], { cwd: dir });
    assert.equal(unreadable.code, 1);
    assert.equal(unreadable.stdout, 'nope.yaml:1:1: cannot read config file: no such file (ENOENT)\n');
    const typo = await runCli(['plan', '-c', 'new.yaml', '--form', 'old.yaml'], { cwd: dir });
    assert.equal(typo.code, 1);
    assert.match(typo.stderr, /^eventgate: unknown option '--form' \(did you mean '--from'\?\); 'plan' takes --config, --from, --admin, --token, --format, --vars-file\n/);
    const format = await runCliInProcess(['plan', '-c', 'new.yaml', '--format', 'yaml'], { cwd: dir });
    assert.equal(format.code, 1);
    assert.equal(format.stdout, '');
  });

  // A CI job pipes `--format json` into jq or a bot: a plan not made must still be a document, with exit 1.
  it('prints a JSON report on stdout with --format json also when no plan can be made, in the shape of an invalid NEW', async () => {
    const dir = tempFiles({ 'new.yaml': base('a > 1') });
    const json = ['--format', 'json'];
    const report = async (args: string[]) => {
      const r = await runCliInProcess(['plan', '-c', 'new.yaml', ...args, ...json], { cwd: dir });
      noStackTrace(r);
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.notEqual(r.stderr, '', 'still explained on stderr');
      const doc = JSON.parse(r.stdout);
      assert.equal(doc.valid, false);
      assert.equal(doc.changes, false);
      assert.equal(doc.config, 'new.yaml');
      return doc;
    };
    const missing = await report(['--from', 'nope.yaml']);
    assert.deepEqual(missing.against, { type: 'file', file: 'nope.yaml' });
    assert.deepEqual(
      missing.errors.map((e: { file: string; line: number; column: number; code: string }) => [e.file, e.line, e.column, e.code]),
      [['nope.yaml', 1, 1, 'EG_CONFIG_FILE']],
    );
    const notMade = (message: RegExp) => (doc: { errors: { file: string; line: number; code: string; message: string }[] }) => {
      assert.equal(doc.errors.length, 1, JSON.stringify(doc.errors));
      assert.deepEqual([doc.errors[0]!.file, doc.errors[0]!.line, doc.errors[0]!.code], ['', 0, 'EG_PLAN_NOT_MADE']);
      assert.match(doc.errors[0]!.message, message);
    };
    notMade(/give --from OLD or --admin URL, not both/)(await report(['--from', 'x.yaml', '--admin', 'http://127.0.0.1:1']));
    notMade(/^unknown option '--form' \(did you mean '--from'\?\); 'plan' takes --config, --from/)(await report(['--form', 'old.yaml']));
    notMade(/cannot reach the admin API at http:\/\/127\.0\.0\.1:1\/admin\/plan/)(await report(['--admin', 'http://127.0.0.1:1']));
    // Without its scheme the URL was one of scheme "localhost:": "cannot reach ...: unknown scheme".
    notMade(/^--admin wants the admin API's URL, http:\/\/HOST:PORT of admin\.port \(https:\/\/ through a TLS proxy\), got 'localhost:1'$/)(await report(['--admin', 'localhost:1']));
    // Exit 1 here too (it was 2, which CI jobs accept as "changes"), the problem at its place in the vars file (it was EG_PLAN_NOT_MADE at line 0).
    const vars = await report(['--vars-file', 'missing.env']);
    assert.deepEqual(
      vars.errors.map((e: { file: string; line: number; column: number; code: string; message: string }) => [e.file, e.line, e.column, e.code, e.message]),
      [['missing.env', 1, 1, 'EG_CONFIG_FILE', "cannot read --vars-file 'missing.env': no such file (ENOENT)"]],
    );
  });
});

describe('eventgate plan --admin URL against a running gateway', () => {
  const gw = useGateway();

  it('compares with the running config, counts the clients a change would disconnect, and agrees with the reload that follows', async () => {
    await gw.start(base('a > 1'));
    const client = await WsClient.connect(gw.url('push', '/ws', 'ws'));
    try {
      const token = ['--token', 'plan-test-token-0123456789'];
      const same = await runCli(['plan', '-c', gw.configFile, '--admin', gw.adminUrl, ...token]);
      noStackTrace(same);
      assert.equal(same.code, 0, same.stdout + same.stderr);

      const dir = tempFiles({ 'new.yaml': base('a > 2', '0.0.0.0') });
      const changed = await runCliInProcess(['plan', '-c', 'new.yaml', '--admin', gw.adminUrl, ...token, '--format', 'json'], { cwd: dir });
      assert.equal(changed.code, 2, changed.stdout + changed.stderr);
      const report = JSON.parse(changed.stdout);
      assert.deepEqual(report.routes.change.sort(), ['in', 'out']);
      // Route out reads local/t as it did, from the same broker: it takes the running subscription over.
      assert.deepEqual(report.groups, []);
      assert.deepEqual(report.disconnected, [{ listener: 'push', clients: 1, reason: 'the listener needs a new socket (port, host or TLS changed)' }]);

      const unauthorized = await runCliInProcess(['plan', '-c', 'new.yaml', '--admin', gw.adminUrl], { cwd: dir });
      assert.equal(unauthorized.code, 1);
      assert.match(unauthorized.stderr, /wants a token: set EVENTGATE_ADMIN_TOKEN \(or pass --token\) \(401\)/);
      // From the environment the token is not on the command line, where every local user's ps sees it.
      const fromEnv = await runCli(['plan', '-c', 'new.yaml', '--admin', gw.adminUrl], { cwd: dir, env: { EVENTGATE_ADMIN_TOKEN: 'plan-test-token-0123456789' } });
      assert.equal(fromEnv.code, 2, fromEnv.stdout + fromEnv.stderr);
      const wrongEnv = await runCliInProcess(['plan', '-c', 'new.yaml', '--admin', gw.adminUrl], { cwd: dir, env: { EVENTGATE_ADMIN_TOKEN: 'not-the-token' } });
      assert.match(wrongEnv.stderr, /refused the token given with EVENTGATE_ADMIN_TOKEN: it is not admin\.token \(401\)/);
      // A token no header can carry (a pasted line break, an emoji) was told "cannot reach the admin API: UND_ERR_INVALID_ARG".
      const lineBreak = await runCliInProcess(['plan', '-c', 'new.yaml', '--admin', gw.adminUrl], { cwd: dir, env: { EVENTGATE_ADMIN_TOKEN: 'plan-test-token-0123456789\n' } });
      assert.equal(lineBreak.code, 1);
      assert.match(
        lineBreak.stderr,
        /^eventgate: the token from EVENTGATE_ADMIN_TOKEN holds a control character \(U\+000A at position 27\), which an HTTP header cannot carry: it is not admin\.token\n$/,
      );
      const emoji = await runCliInProcess(['plan', '-c', 'new.yaml', '--admin', gw.adminUrl, '--token', 'tok\u{1f600}'], { cwd: dir });
      assert.equal(emoji.code, 1);
      assert.match(emoji.stderr, /the token from --token holds a character beyond Latin-1 \(U\+1F600 at position 4\)/);
      // A wrong token is named as such (it was answered 'pass --token', which it had been).
      const wrong = await runCliInProcess(['plan', '-c', 'new.yaml', '--admin', gw.adminUrl, '--token', 'not-the-token', '--format', 'json'], { cwd: dir });
      assert.equal(wrong.code, 1);
      assert.match(wrong.stderr, /refused the token given with --token: it is not admin\.token \(401\)/);
      assert.match(JSON.parse(wrong.stdout).errors[0].message, /refused the token given with --token/);
      // The admin API's own path given as its URL: 'answered 404' said nothing of why.
      const suffixed = await runCliInProcess(['plan', '-c', 'new.yaml', '--admin', `${gw.adminUrl}/admin`, ...token], { cwd: dir });
      assert.equal(suffixed.code, 1);
      assert.match(suffixed.stderr, new RegExp(`answered 404: --admin is the URL the admin API listens on, without '/admin' \\(${gw.adminUrl.replace(/\./g, '\\.')}\\)`));

      // Only hashes of the running config are known, yet a new token or log level is a change.
      const settings = tempFiles({
        'token.yaml': base('a > 1').replace('plan-test-token-0123456789', 'another-plan-token-0123456789'),
        'log.yaml': `${base('a > 1')}log: { level: debug }\n`,
      });
      const tokenPlan = await runCliInProcess(['plan', '-c', 'token.yaml', '--admin', gw.adminUrl, ...token, '--format', 'json'], { cwd: settings });
      assert.equal(tokenPlan.code, 2, tokenPlan.stdout + tokenPlan.stderr);
      assert.equal(JSON.parse(tokenPlan.stdout).admin, 'reconfigure');
      const logPlan = await runCliInProcess(['plan', '-c', 'log.yaml', '--admin', gw.adminUrl, ...token, '--format', 'json'], { cwd: settings });
      assert.equal(logPlan.code, 2, logPlan.stdout + logPlan.stderr);
      assert.equal(JSON.parse(logPlan.stdout).log, 'change');

      const removed = tempFiles({ 'new.yaml': base('a > 1').replace(/ {2}- name: out\n.*\n.*\n/, '') });
      const leave = await runCliInProcess(['plan', '-c', 'new.yaml', '--admin', gw.adminUrl, ...token, '--format', 'json'], { cwd: removed });
      assert.deepEqual(JSON.parse(leave.stdout).groups, [{ route: 'out', broker: 'local', topic: 't', group: 'eventgate-out-<instance>', change: 'leave' }]);
      // Its forward path goes with it, and so do its clients: the running routes come without their targets, the fingerprint names the paths.
      assert.deepEqual(JSON.parse(leave.stdout).disconnected, [{ listener: 'push', path: '/ws', reason: 'no route serves this path any more' }]);

      // A gateway older than this CLI listed its HTTP publish paths with the paths clients stay
      // on (its fingerprint as this one's, without heldPaths): an unchanged /in lost no client.
      const fingerprint = (await (await fetch(`${gw.adminUrl}/admin/plan`, { headers: { authorization: `Bearer ${token[1]}` } })).json()) as {
        heldPaths?: true;
        listeners: { name: string; paths: string[] }[];
      };
      assert.equal(fingerprint.heldPaths, true);
      delete fingerprint.heldPaths;
      fingerprint.listeners.find((l) => l.name === 'api')!.paths = ['/in'];
      const older = createHttpServer((_req, res) => res.setHeader('content-type', 'application/json').end(JSON.stringify(fingerprint)));
      await new Promise<void>((r) => older.listen(0, '127.0.0.1', r));
      try {
        const olderUrl = `http://127.0.0.1:${(older.address() as AddressInfo).port}`;
        const kept = await runCliInProcess(['plan', '-c', gw.configFile, '--admin', olderUrl, '--format', 'json']);
        assert.deepEqual(JSON.parse(kept.stdout).disconnected, [], kept.stdout);
      } finally {
        older.close();
      }

      // Apply the filter change only: afterwards the plan for that config is empty.
      await gw.reconfigure(base('a > 2'));
      const after = await runCliInProcess(['plan', '-c', gw.configFile, '--admin', gw.adminUrl, ...token]);
      assert.equal(after.code, 0, after.stdout + after.stderr);

      // Last, as it locks this address out: the two wrong tokens above and eight more make ten.
      for (let i = 0; i < 8; i++) assert.equal((await fetch(`${gw.adminUrl}/admin/plan`, { headers: { authorization: `Bearer guess-${i}` } })).status, 401);
      const locked = await runCliInProcess(['plan', '-c', gw.configFile, '--admin', gw.adminUrl, ...token]);
      assert.equal(locked.code, 1);
      assert.match(locked.stderr, /refuses this address for now, after too many wrong tokens from it: try again in \d+ s \(429\)/);
    } finally {
      await client.close?.();
    }
  });

  it('names no group for an amqp queue route, and what a left routing-key queue keeps, from the running fingerprint', async () => {
    await gw.start(amqpRoutes('true', 'rk'));
    const dir = tempFiles({ 'new.yaml': amqpRoutes('a > 1', 'rk2') });
    const r = await runCliInProcess(['plan', '-c', 'new.yaml', '--admin', gw.adminUrl, '--token', 'plan-test-token-0123456789', '--format', 'json'], { cwd: dir });
    noStackTrace(r);
    assert.equal(r.code, 2, r.stdout + r.stderr);
    const groups = JSON.parse(r.stdout).groups as { group: string; change: string; left?: string }[];
    assert.deepEqual(
      groups.map((g) => [g.group, g.change]),
      [
        ['eventgate-rk2', 'join'],
        ['eventgate-rk', 'leave'],
      ],
    );
    assert.match(groups[1]!.left ?? '', /^its queue stays bound/);
  });

  it('lists the bindings a changed broker makes and drops, and those a moved or removed broker leaves, from the running fingerprint as from a file, never with a secret', async () => {
    // Before: against --admin only "broker rabbit (replaced)", whose fingerprint held no options; a
    // broker moved to another server listed no binding line, from a file either.
    const token = ['--token', 'plan-test-token-0123456789'];
    const config = (region: string, url = 'amqp://127.0.0.1:1/') =>
      amqpRoutes('true', 'rk').replace('bindings: [orders.*]', `bindings: [orders.*, { exchange: amq.headers, arguments: { x-match: all, region: ${region} } }]`).replace('amqp://127.0.0.1:1/', url);
    const env = { REGION: 'region-from-a-secret' };
    await gw.start(config('"${REGION}"'), { env });
    const served = await (await fetch(`${gw.adminUrl}/admin/plan`, { headers: { authorization: `Bearer ${token[1]}` } })).text();
    assert.doesNotMatch(served, /region-from-a-secret/);
    assert.match(served, /arguments \{region: \\"\[redacted\]\\", x-match: \\"all\\"\}/);
    const dir = tempFiles({
      'old.yaml': config('"${REGION}"'),
      'same.yaml': config('"${REGION}"'),
      'region.yaml': config('us'),
      'moved.yaml': config('"${REGION}"', 'amqp://user:pw@127.0.0.1:2/'),
      'removed.yaml': yaml('version: 1', 'admin: { port: 0, token: plan-test-token-0123456789 }', 'brokers: { local: { kind: memory } }'),
    });
    const bindingLines = async (file: string, against: string[]) => {
      const r = await runCliInProcess(['plan', '-c', file, ...against], { cwd: dir, env });
      noStackTrace(r);
      assert.doesNotMatch(r.stdout + r.stderr, /region-from-a-secret/);
      return { code: r.code, lines: r.stdout.split('\n').filter((l) => l.startsWith('binding ')) };
    };
    const headers = (region: string) => `queue 'billing' on exchange 'amq.headers', arguments {region: "${region}", x-match: "all"}`;
    const routingKey = "queue 'billing' on exchange 'amq.topic', routing key 'orders.*'";
    const left = (server: string) => `(stays on ${server}, which the broker no longer uses: nothing unbinds it there; remove it on the server once no instance needs it)`;
    for (const against of [
      ['--admin', gw.adminUrl, ...token],
      ['--from', 'old.yaml'],
    ]) {
      assert.deepEqual(await bindingLines('same.yaml', against), { code: 0, lines: [] }, against[0]);
      assert.deepEqual(
        await bindingLines('region.yaml', against),
        {
          code: 2,
          lines: [`binding made: broker rabbit: ${headers('us')}`, `binding dropped: broker rabbit: ${headers('[redacted]')} (unbound once the new bindings are in place)`],
        },
        against[0],
      );
      assert.deepEqual(
        await bindingLines('moved.yaml', against),
        {
          code: 2,
          lines: [
            `binding made: broker rabbit: ${routingKey} (on 127.0.0.1:2 vhost /, the server the broker moves to)`,
            `binding made: broker rabbit: ${headers('[redacted]')} (on 127.0.0.1:2 vhost /, the server the broker moves to)`,
            `binding left: broker rabbit: ${routingKey} ${left('127.0.0.1:1 vhost /')}`,
            `binding left: broker rabbit: ${headers('[redacted]')} ${left('127.0.0.1:1 vhost /')}`,
          ],
        },
        against[0],
      );
      assert.deepEqual(
        await bindingLines('removed.yaml', against),
        { code: 2, lines: [`binding left: broker rabbit: ${routingKey} ${left('127.0.0.1:1 vhost /')}`, `binding left: broker rabbit: ${headers('[redacted]')} ${left('127.0.0.1:1 vhost /')}`] },
        against[0],
      );
    }
    const json = JSON.parse((await runCliInProcess(['plan', '-c', 'moved.yaml', '--admin', gw.adminUrl, ...token, '--format', 'json'], { cwd: dir, env })).stdout);
    assert.deepEqual(
      json.bindings.map((b: { broker: string; change: string; server?: string }) => [b.broker, b.change, b.server]),
      [
        ['rabbit', 'bind', '127.0.0.1:2 vhost /'],
        ['rabbit', 'bind', '127.0.0.1:2 vhost /'],
        ['rabbit', 'leave', '127.0.0.1:1 vhost /'],
        ['rabbit', 'leave', '127.0.0.1:1 vhost /'],
      ],
    );
  });

  it('serves the names of the running config without its secrets, as /admin/status does, and plans against them as against a file', async () => {
    // Before, GET /admin/plan served a path and a topic from ${VAR} as they were, where /admin/status redacts them.
    const token = ['--token', 'plan-test-token-0123456789'];
    const env = { TENANT: 'tenant-from-a-secret', TOPIC: 'topic-from-a-secret' };
    const secretNames = base('a > 1').replace('path: /in }', 'path: "/in/${TENANT}" }').replaceAll('topic: t }', 'topic: "${TOPIC}" }').replace('path: /ws }', 'path: "/ws/${TENANT}" }');
    await gw.start(secretNames, { env });
    const served = await (await fetch(`${gw.adminUrl}/admin/plan`, { headers: { authorization: `Bearer ${token[1]}` } })).text();
    assert.doesNotMatch(served, /from-a-secret/);
    // A value written with a ${VAR} in it is a secret as a whole.
    assert.match(served, /"paths":\["\[redacted\]"\]/);
    const dir = tempFiles({
      'old.yaml': secretNames,
      'same.yaml': secretNames,
      'removed.yaml': secretNames.replace(/ {2}- name: out\n.*\n.*\n/, ''),
      'regrouped.yaml': secretNames.replace('from: { broker: local, topic: "${TOPIC}" }', 'from: { broker: local, topic: "${TOPIC}", group: other }'),
    });
    for (const against of [
      ['--admin', gw.adminUrl, ...token],
      ['--from', 'old.yaml'],
    ]) {
      const same = await runCliInProcess(['plan', '-c', 'same.yaml', ...against, '--format', 'json'], { cwd: dir, env });
      assert.equal(same.code, 0, same.stdout + same.stderr);
      assert.deepEqual([JSON.parse(same.stdout).disconnected, JSON.parse(same.stdout).groups], [[], []], against[0]);
      // Another group on the same topic: a join and a leave, the topic compared as the gateway serves it.
      const regrouped = await runCliInProcess(['plan', '-c', 'regrouped.yaml', ...against, '--format', 'json'], { cwd: dir, env });
      assert.deepEqual(
        JSON.parse(regrouped.stdout).groups.map((g: { group: string; change: string; topic: string }) => `${g.change} ${g.group} ${g.topic}`),
        ['join other [redacted]', 'leave eventgate-out-<instance> [redacted]'],
        against[0],
      );
      const removed = await runCliInProcess(['plan', '-c', 'removed.yaml', ...against, '--format', 'json'], { cwd: dir, env });
      assert.equal(removed.code, 2, removed.stdout + removed.stderr);
      assert.doesNotMatch(removed.stdout, /from-a-secret/);
      const report = JSON.parse(removed.stdout);
      assert.deepEqual(report.disconnected, [{ listener: 'push', path: '[redacted]', reason: 'no route serves this path any more' }], against[0]);
      assert.deepEqual(report.groups, [{ route: 'out', broker: 'local', topic: '[redacted]', group: 'eventgate-out-<instance>', change: 'leave' }], against[0]);
    }
  });

  // Point 286: only hashes of the running config are known, and every changed broker counted as
  // replaced, its routes rebuilt and their groups rejoining, where the reload reconfigures it in place.
  it('says a broker whose changed keys are all applied in place is reconfigured, its routes kept, from the running fingerprint', async () => {
    await gw.start(amqpRoutes('true', 'rk'));
    const plan = async (yaml: string) => {
      const r = await runCliInProcess(['plan', '-c', 'new.yaml', '--admin', gw.adminUrl, '--token', 'plan-test-token-0123456789', '--format', 'json'], { cwd: tempFiles({ 'new.yaml': yaml }) });
      noStackTrace(r);
      assert.equal(r.code, 2, r.stdout + r.stderr);
      const report = JSON.parse(r.stdout);
      return { brokers: report.brokers, routes: report.routes.change, groups: report.groups.map((g: { group: string; change: string }) => `${g.group} ${g.change}`) };
    };
    const inPlace = await plan(
      amqpRoutes('true', 'rk').replace('url: "amqp://127.0.0.1:1/",', 'url: "amqp://127.0.0.1:1/", ackTimeoutMs: 2500, mandatory: false,').replace('{ kind: memory }', '{ kind: memory, retain: 50 }'),
    );
    assert.deepEqual(inPlace.brokers.reconfigure.sort(), ['local', 'rabbit']);
    assert.deepEqual([inPlace.routes, inPlace.groups], [[], []]);
    const replaced = await plan(amqpRoutes('true', 'rk').replace('url: "amqp://127.0.0.1:1/",', 'url: "amqp://127.0.0.1:1/", ackTimeoutMs: 2500, prefetch: 5,'));
    assert.deepEqual([replaced.brokers.change, replaced.brokers.reconfigure], [['rabbit'], []]);
    assert.deepEqual(replaced.routes.sort(), ['q', 'rk']);
    assert.deepEqual(replaced.groups, ['eventgate-rk rejoin']);
  });

  it('finds nothing to change for the running config copied to another directory (its files compared by content)', async () => {
    const files = sameConfigElsewhere();
    await gw.start(files['gateway.yaml']!, { files: Object.fromEntries(Object.entries(files).filter(([name]) => name !== 'gateway.yaml')) });
    const dir = deeperCopy(files);
    const r = await runCliInProcess(['plan', '-c', 'gateway.yaml', '--admin', gw.adminUrl, '--token', 'plan-test-token-0123456789'], { cwd: dir });
    noStackTrace(r);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /^no changes: a reload would keep all 5 components as they are$/m);
  });

  it('gives as the new version the one the gateway reports, for the running config and vars file copied to another directory', async () => {
    // The version is what /admin/status and eventgate_config_info show: a bot that planned a change
    // checks after the merge that the gateway runs it. It used to hash the files' absolute paths
    // (another checkout, another version) and to leave out the --vars-file files that `run` counts.
    const files = sameConfigElsewhere();
    files['gateway.yaml'] = `${files['gateway.yaml']}log: { level: "\${LEVEL}" }\n`;
    files['vars.env'] = 'LEVEL=info\n';
    await gw.start(files['gateway.yaml']!, { files: Object.fromEntries(Object.entries(files).filter(([name]) => name !== 'gateway.yaml')), args: ['--vars-file', 'vars.env'] });
    const token = 'plan-test-token-0123456789';
    const status = (await (await fetch(`${gw.adminUrl}/admin/status`, { headers: { authorization: `Bearer ${token}` } })).json()) as { version: string };
    const dir = deeperCopy(files);
    const r = await runCliInProcess(['plan', '-c', 'gateway.yaml', '--admin', gw.adminUrl, '--token', token, '--vars-file', 'vars.env', '--format', 'json'], { cwd: dir });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.deepEqual(JSON.parse(r.stdout).version, { from: status.version, to: status.version });
    const fromFile = await runCliInProcess(['plan', '-c', 'gateway.yaml', '--from', join(gw.dir, 'gateway.yaml'), '--vars-file', 'vars.env', '--format', 'json'], { cwd: dir });
    assert.equal(JSON.parse(fromFile.stdout).version.to, status.version, fromFile.stderr);
  });

  it('reaches an admin API on a port the Fetch standard blocks for browsers (10080, 6665-6669, 6000, ...), which the gateway serves', async () => {
    // Before: `cannot reach the admin API at http://127.0.0.1:10080/admin/plan: bad port` (node's
    // fetch refuses those ports), against a gateway that answered curl there. The port is the
    // first of the list that is free here: only such a port shows it.
    const port = await firstFreePort(FETCH_BLOCKED_PORTS);
    await gw.start(base('a > 1').replace('admin: { port: 0,', `admin: { port: ${port},`));
    const r = await runCliInProcess(['plan', '-c', gw.configFile, '--admin', `http://127.0.0.1:${port}`, '--token', 'plan-test-token-0123456789']);
    noStackTrace(r);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /^no changes: a reload would keep all \d+ components as they are$/m);
  });

  it('gives up on an admin API that sends its answer a byte at a time, after 10 s in all (spec-checklist 5142)', async () => {
    // Before: only an idle timeout, which a byte every half second never reached: plan waited for good.
    const trickle = createHttpServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      const timer = setInterval(() => res.write(' '), 500);
      res.on('close', () => clearInterval(timer));
    });
    trickle.listen(0, '127.0.0.1');
    await once(trickle, 'listening');
    try {
      const port = (trickle.address() as AddressInfo).port;
      const dir = tempFiles({ 'new.yaml': base('a > 1') });
      const r = await runCliInProcess(['plan', '-c', 'new.yaml', '--admin', `http://127.0.0.1:${port}`], { cwd: dir });
      noStackTrace(r);
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.match(r.stderr, new RegExp(`cannot reach the admin API at http://127\\.0\\.0\\.1:${port}/admin/plan: no whole answer within 10 s`));
    } finally {
      trickle.closeAllConnections();
      trickle.close();
    }
  });

  it('says so when the admin API cannot be reached', async () => {
    // A port that was just free: nothing listens there.
    const probe = createServer().listen(0, '127.0.0.1');
    await once(probe, 'listening');
    const port = (probe.address() as { port: number }).port;
    await new Promise((r) => probe.close(r));
    const dir = tempFiles({ 'new.yaml': base('a > 1') });
    const r = await runCliInProcess(['plan', '-c', 'new.yaml', '--admin', `http://127.0.0.1:${port}`], { cwd: dir });
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`cannot reach the admin API at http://127\\.0\\.0\\.1:${port}/admin/plan: ECONNREFUSED`));
  });
});

describe('docs/gitops.md, "4. Plan", run as written', () => {
  // The README example references a schema file: planning against the base branch must read it
  // from that branch's files (a `git show` of gateway.yaml alone left it behind: "cannot read").
  it('plans the edit of step 1 against a checkout of origin/main and prints what the page shows', () => {
    const page = readFileSync(join(repoRoot, 'docs/gitops.md'), 'utf8');
    const block = /^## 4\. Plan$[\s\S]*?^```sh\n([\s\S]*?)^```/m.exec(page)?.[1] ?? assert.fail('no sh block under "4. Plan"');
    const lines = block.trimEnd().split('\n');
    const example = (f: string) => readFileSync(join(repoRoot, 'examples', f), 'utf8');
    const repo = tempFiles({ 'gateway.yaml': example('gateway.yaml'), 'schemas/light-measured.json': example('schemas/light-measured.json') });
    const git = (...args: string[]) => execFileSync('git', ['-c', 'user.name=t', '-c', 'user.email=t@example.com', ...args], { cwd: repo, stdio: 'pipe' });
    git('init', '-q');
    git('add', '.');
    git('commit', '-q', '-m', 'base');
    git('update-ref', 'refs/remotes/origin/main', 'HEAD');
    // Step 1's edit.
    const edited = example('gateway.yaml').replace('filter: lumens > 0 ', 'filter: lumens > 10');
    assert.notEqual(edited, example('gateway.yaml'));
    writeFileSync(join(repo, 'gateway.yaml'), edited);
    // The page's /tmp is a private directory here (tests run side by side), outside the checkout.
    const tmp = tempFiles({});
    const script = lines
      .filter((l) => !l.startsWith('#'))
      .join('\n')
      .replaceAll('/tmp/', `${tmp}/`)
      .replaceAll('npx eventgate', `${JSON.stringify(process.execPath)} ${JSON.stringify(cliPath)}`);
    const r = spawnSync('bash', ['-c', script], { cwd: repo, encoding: 'utf8' });
    assert.equal(r.status, 2, r.stderr);
    assert.deepEqual(
      r.stdout.replaceAll(`${tmp}/`, '/tmp/').trimEnd().split('\n'),
      lines.filter((l) => l.startsWith('# ')).map((l) => l.slice(2)),
    );
  });
});
