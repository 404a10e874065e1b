import assert from 'node:assert/strict';
import { mkdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { createServer, type Server } from 'node:net';
import { once } from 'node:events';
import { join } from 'node:path';
import { afterEach, describe, it } from 'node:test';
import { post, WsClient } from '../helpers/clients.js';
import { eventually, startGateway, type LogLine, type RunningGateway } from '../helpers/gateway.js';

/** HTTP /in → transform → websocket /out. The transform is the part tests change. */
function config(transform: string, options: { schema?: string; apiPort?: number } = {}): string {
  return `
version: 1
admin: { port: 0 }
listeners:
  api: { kind: http, port: ${options.apiPort ?? 0}, host: 127.0.0.1 }
  push: { kind: websocket, port: 0, host: 127.0.0.1 }
routes:
  - name: in
    from: { listener: api, path: /in }
    through:${options.schema ? `\n      - validate: { schema: ${options.schema} }` : ''}
      - transform: '${transform}'
    to: { listener: push, path: /out }
`;
}

const reloaded = (l: LogLine) => l.msg === 'config reloaded';

describe('hot reload (spec §6)', () => {
  let gw: RunningGateway | undefined;
  const clients: WsClient[] = [];
  const connect = async (path = '/out') => {
    const c = await WsClient.connect(gw!.url('push', path, 'ws'));
    clients.push(c);
    return c;
  };
  /** Posts {n} to /in and returns what the websocket client receives. */
  const roundTrip = async (client: WsClient, n: number) => {
    const reply = await post(gw!.url('api', '/in'), { n });
    assert.equal(reply.status, 200, reply.text);
    return client.next();
  };

  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    await gw?.stop();
    gw = undefined;
  });

  it('applies a changed transform, and a websocket client stays connected and keeps receiving', async () => {
    gw = await startGateway(config('{"v": 1, "n": n}'));
    const client = await connect();
    assert.deepEqual(await roundTrip(client, 1), { v: 1, n: 1 });
    const line = await gw.reconfigure(config('{"v": 2, "n": n}'));
    assert.equal(line.msg, 'config reloaded');
    assert.deepEqual(await roundTrip(client, 2), { v: 2, n: 2 });
    assert.equal(client.closed, undefined, 'the client was not disconnected');
    const status = await gw.status();
    assert.equal(status.listeners.find((l: { name: string }) => l.name === 'push').clients, 1);
  });

  it('keeps the old config when the new file is broken, logs file:line:col and reports it in /admin/status; a fix recovers', async () => {
    gw = await startGateway(config('{"v": 1}'));
    const client = await connect();
    const versionBefore = (await gw.status()).version;
    const broken = config('{"v": 2').replace('routes:', 'routes:\n  - name: [oops');
    const line = await gw.reconfigure(broken);
    assert.equal(line.msg, 'reload rejected; the running config keeps serving');
    assert.match(String(line.diagnostic), new RegExp(`^${gw.configFile.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\d+:\\d+: YAML syntax error`));
    // Still the old pipeline, and the client is still there.
    assert.deepEqual(await roundTrip(client, 1), { v: 1 });
    const status = await gw.status();
    assert.equal(status.version, versionBefore);
    assert.equal(status.lastReloadError.diagnostics[0].code, 'EG_CONFIG_SYNTAX');
    assert.equal(status.lastReloadError.diagnostics[0].file, gw.configFile);
    assert.equal(typeof status.lastReloadError.diagnostics[0].line, 'number');
    assert.equal(typeof status.lastReloadError.diagnostics[0].column, 'number');

    const fixed = await gw.reconfigure(config('{"v": 3}'));
    assert.equal(fixed.msg, 'config reloaded');
    assert.deepEqual(await roundTrip(client, 2), { v: 3 });
    const after = await gw.status();
    assert.equal(after.lastReloadError, null);
    assert.notEqual(after.version, versionBefore);
  });

  it('keeps the old config when the new one is valid YAML but wrong, pointing at the mistake', async () => {
    gw = await startGateway(config('{"v": 1}'));
    const client = await connect();
    const line = await gw.reconfigure(config('{"v": 2'));
    assert.equal(line.msg, 'reload rejected; the running config keeps serving');
    // Line 11 is `      - transform: '{"v": 2'`; the expression ends unclosed at its last character.
    assert.match(String(line.diagnostic), /gateway\.yaml:11:27: JSONata expression does not compile: Expected "}" before end of expression/);
    assert.deepEqual(await roundTrip(client, 1), { v: 1 });
    assert.match((await gw.status()).lastReloadError.diagnostics[0].message, /JSONata/);
  });

  it('settles on the last of rapid successive edits', async () => {
    gw = await startGateway(config('{"v": 0}'));
    const client = await connect();
    for (let v = 1; v <= 12; v++) gw.write('gateway.yaml', config(`{"v": ${v}}`));
    await eventually(async () => assert.deepEqual(await roundTrip(client, 0), { v: 12 }), 5000);
    // And it stays there: no late reload of an intermediate version.
    await gw.waitForLog(reloaded);
    assert.deepEqual(await roundTrip(client, 0), { v: 12 });
    assert.equal((await gw.status()).lastReloadError, null);
  });

  it('follows a file renamed over the config (as editors and git checkout write it), again and again', async () => {
    gw = await startGateway(config('{"v": 1}'));
    const client = await connect();
    for (const v of [2, 3]) {
      const from = gw.logs.length;
      writeFileSync(join(gw.dir, '.gateway.yaml.tmp'), config(`{"v": ${v}}`));
      renameSync(join(gw.dir, '.gateway.yaml.tmp'), gw.configFile);
      await gw.waitForLog(reloaded, 10000, from);
      assert.deepEqual(await roundTrip(client, v), { v });
    }
  });

  it('follows a Kubernetes ConfigMap update (the ..data symlink swap), again and again', async () => {
    let generation = 1;
    const publish = (dir: string, yaml: string | undefined) => {
      // What the kubelet does: write a new timestamped directory, point ..data at it atomically, drop the old one.
      const name = `..2026_11_23_${generation}`;
      mkdirSync(join(dir, name));
      if (yaml !== undefined) writeFileSync(join(dir, name, 'gateway.yaml'), yaml);
      symlinkSync(name, join(dir, '..data_tmp'));
      renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
      if (generation > 1) rmSync(join(dir, `..2026_11_23_${generation - 1}`), { recursive: true });
      generation++;
    };
    gw = await startGateway(config('{"v": 1}'), {
      setup: (dir) => {
        publish(dir, undefined);
        symlinkSync('..data/gateway.yaml', join(dir, 'gateway.yaml'));
      },
    });
    const client = await connect();
    assert.deepEqual(await roundTrip(client, 1), { v: 1 });
    for (const v of [2, 3]) {
      const from = gw.logs.length;
      publish(gw.dir, config(`{"v": ${v}}`));
      await gw.waitForLog(reloaded, 10000, from);
      assert.deepEqual(await roundTrip(client, v), { v });
    }
  });

  it('reloads when a referenced schema file changes', async () => {
    const schema = (max: number) => JSON.stringify({ type: 'object', properties: { n: { type: 'integer', maximum: max } } });
    gw = await startGateway(config('$', { schema: 'schemas/n.json' }), { files: { 'schemas/n.json': schema(10) } });
    const client = await connect();
    assert.equal((await post(gw.url('api', '/in'), { n: 50 })).status, 400);
    const line = await gw.reconfigure(schema(100), 'schemas/n.json');
    assert.equal(line.msg, 'config reloaded');
    assert.deepEqual(await roundTrip(client, 50), { n: 50 });
    assert.equal(client.closed, undefined);
  });

  it('reports a broken schema file with its own file:line:col and keeps serving', async () => {
    gw = await startGateway(config('$', { schema: 'schemas/n.json' }), { files: { 'schemas/n.json': '{"type": "object"}' } });
    const client = await connect();
    const line = await gw.reconfigure('{"type": "object",\n "properties": {"n": {"type": "number", "minimum": "0"}}}', 'schemas/n.json');
    assert.equal(line.msg, 'reload rejected; the running config keeps serving');
    assert.match(String(line.diagnostic), /schemas\/n\.json:2:52: invalid JSON Schema at properties\.n\.minimum/);
    assert.deepEqual(await roundTrip(client, 1), { n: 1 });
  });

  it('reloads on SIGHUP and on POST /admin/reload', async () => {
    gw = await startGateway(config('{"v": 1}'));
    let from = gw.logs.length;
    gw.process.kill('SIGHUP');
    const hup = await gw.waitForLog((l) => l.reason === 'SIGHUP' && (l.msg === 'config unchanged' || l.msg === 'config reloaded'), 10000, from);
    assert.equal(hup.msg, 'config unchanged');
    from = gw.logs.length;
    const res = await fetch(`${gw.adminUrl}/admin/reload`, { method: 'POST' });
    assert.equal(res.status, 200);
    assert.equal(((await res.json()) as { result: string }).result, 'unchanged');
    await gw.waitForLog((l) => l.reason === 'admin API' && l.msg === 'config unchanged', 10000, from);
  });

  it('finishes a request that started before a reload on the old pipeline, without holding up the reload', async () => {
    gw = await startGateway(config('{"v": 1, "n": n}'));
    const client = await connect();
    // A request whose body is still arriving: the route was chosen when its headers came in.
    const reply = new Promise<{ status: number; body: string }>((resolve, reject) => {
      const g = gw!;
      const req = request(g.url('api', '/in'), { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode!, body }));
      });
      req.on('error', reject);
      req.write('{"n": ');
      void g.reconfigure(config('{"v": 2, "n": n}')).then((line: LogLine) => {
        assert.equal(line.msg, 'config reloaded');
        req.end('7}');
      }, reject);
    });
    const { status } = await reply;
    assert.equal(status, 200);
    assert.deepEqual(await client.next(), { v: 1, n: 7 });
    assert.deepEqual(await roundTrip(client, 8), { v: 2, n: 8 });
  });

  it('keeps serving the old config when the new one cannot bind its port, and says why', async () => {
    const holder: Server = createServer();
    holder.listen(0, '127.0.0.1');
    await once(holder, 'listening');
    const taken = (holder.address() as { port: number }).port;
    try {
      gw = await startGateway(config('{"v": 1}'));
      const client = await connect();
      const line = await gw.reconfigure(config('{"v": 2}', { apiPort: taken }));
      assert.equal(line.msg, 'reload rejected; the running config keeps serving');
      assert.match(String(line.error), /EADDRINUSE/);
      assert.deepEqual(await roundTrip(client, 1), { v: 1 });
      assert.match((await gw.status()).lastReloadError.message, /EADDRINUSE/);
    } finally {
      holder.close();
    }
  });

  it('moves a listener to its new port, leaving the other listeners and their clients alone', async () => {
    gw = await startGateway(config('{"v": 1}'));
    const client = await connect();
    const oldPort = gw.port('api');
    const holder: Server = createServer();
    holder.listen(0, '127.0.0.1');
    await once(holder, 'listening');
    const free = (holder.address() as { port: number }).port;
    holder.close();
    await once(holder, 'close');
    await gw.reconfigure(config('{"v": 2}', { apiPort: free }));
    assert.equal(gw.port('api'), free);
    assert.deepEqual(await roundTrip(client, 1), { v: 2 });
    await assert.rejects(fetch(`http://127.0.0.1:${oldPort}/in`, { method: 'POST', body: '{}' }));
    assert.equal(client.closed, undefined);
  });

  it('loses no message and delivers none twice while the config is rewritten many times under load', async () => {
    // HTTP → memory topic → consume route → websocket: both the publishing route and the consuming route are rebuilt.
    const loaded = (k: number) => `
version: 1
admin: { port: 0 }
brokers:
  local: { kind: memory, retain: 100000 }
listeners:
  api: { kind: http, port: 0, host: 127.0.0.1 }
  push: { kind: websocket, port: 0, host: 127.0.0.1 }
routes:
  - name: in
    from: { listener: api, path: /in }
    through:
      - transform: '$merge([$, {"in": ${k - (k % 2)}}])'
    to: { broker: local, topic: events }
  - name: out
    from: { broker: local, topic: events }
    through:
      - transform: '$merge([$, {"out": ${k - ((k + 1) % 2)}}])'
    to: { listener: push, path: /out }
`;
    gw = await startGateway(loaded(0));
    const consumer = await connect();
    const received: number[] = [];
    consumer.ws.on('message', (data) => received.push((JSON.parse(String(data)) as { seq: number }).seq));

    let running = true;
    const accepted: number[] = [];
    const failures: string[] = [];
    let seq = 0;
    const publisher = async () => {
      while (running) {
        const n = seq++;
        const reply = await post(gw!.url('api', '/in'), { seq: n });
        if (reply.status === 200) accepted.push(n);
        else failures.push(`${n}: ${reply.status} ${reply.text}`);
      }
    };
    const publishers = Array.from({ length: 4 }, publisher);
    for (let k = 1; k <= 10; k++) {
      const line: LogLine = await gw.reconfigure(loaded(k));
      assert.equal(line.msg, 'config reloaded', JSON.stringify(line));
    }
    running = false;
    await Promise.all(publishers);
    assert.deepEqual(failures, []);
    assert.ok(accepted.length > 50, `traffic flowed during the reloads (${accepted.length} messages)`);
    await eventually(() => assert.ok(received.length >= accepted.length), 15000);
    const counts = new Map<number, number>();
    for (const r of received) counts.set(r, (counts.get(r) ?? 0) + 1);
    assert.deepEqual([...counts].filter(([, c]) => c > 1), [], 'no message delivered twice');
    assert.deepEqual([...received].sort((a, b) => a - b), [...accepted].sort((a, b) => a - b), 'every accepted message delivered');
    assert.equal(consumer.closed, undefined);
  });
});
