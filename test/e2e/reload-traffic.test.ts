import assert from 'node:assert/strict';
import { request } from 'node:http';
import { createServer, type Server } from 'node:net';
import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runCliInProcess } from '../helpers/cli.js';
import { describe, it } from 'node:test';
import { post, WsClient } from '../helpers/clients.js';
import { eventually, type LogLine } from '../helpers/gateway.js';
import { pipelineConfig, pipelineFixture } from '../helpers/pipeline.js';
import { fetch } from '../helpers/http.js';

describe('hot reload (spec §6): sockets and traffic', () => {
  const f = pipelineFixture();
  const connect = f.connect;
  const roundTrip = f.roundTrip;

  it('finishes a request that started before a reload on the old pipeline, without holding up the reload', async () => {
    const gw = await f.gw.start(pipelineConfig('{"v": 1, "n": n}'));
    const client = await connect();
    // A request whose body is still arriving: the route was chosen when its headers came in. The
    // reload starts only once the gateway has them: its `100 Continue` (node writes it as it hands
    // the request to the listener, which picks the route then). Started at once, on a busy machine
    // the reload could come before the test's headers were read (seen once: `v: 2`).
    const reply = new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request(gw.url('api', '/in'), { method: 'POST', headers: { 'content-type': 'application/json', expect: '100-continue' } }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode!, body }));
      });
      req.on('error', reject);
      req.on('continue', () => {
        req.write('{"n": ');
        void gw.reconfigure(pipelineConfig('{"v": 2, "n": n}')).then((line: LogLine) => {
          assert.equal(line.msg, 'config reloaded');
          req.end('7}');
        }, reject);
      });
      req.flushHeaders();
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
      const gw = await f.gw.start(pipelineConfig('{"v": 1}'));
      const client = await connect();
      const line = await gw.reconfigure(pipelineConfig('{"v": 2}', { apiPort: taken }));
      assert.equal(line.msg, 'reload rejected; the running config keeps serving');
      // Like every rejected reload: a diagnostic at the listener's place in the file.
      assert.match(String(line.diagnostic), /gateway\.yaml:\d+:\d+: could not start listener 'api': .*EADDRINUSE/);
      assert.deepEqual(await roundTrip(client, 1), { v: 1 });
      assert.match((await gw.status()).lastReloadError.message, /EADDRINUSE/);
    } finally {
      holder.close();
    }
  });

  it('moves a listener to its new port, leaving the other listeners and their clients alone', async () => {
    const gw = await f.gw.start(pipelineConfig('{"v": 1}'));
    const client = await connect();
    const oldPort = gw.port('api');
    const holder: Server = createServer();
    holder.listen(0, '127.0.0.1');
    await once(holder, 'listening');
    const free = (holder.address() as { port: number }).port;
    holder.close();
    await once(holder, 'close');
    await gw.reconfigure(pipelineConfig('{"v": 2}', { apiPort: free }));
    assert.equal(gw.port('api'), free);
    assert.deepEqual(await roundTrip(client, 1), { v: 2 });
    await assert.rejects(fetch(`http://127.0.0.1:${oldPort}/in`, { method: 'POST', body: '{}' }));
    assert.equal(client.closed, undefined);
  });

  it('closes with 1001 the websocket clients of a path a reload removes, and leaves the others connected', async () => {
    const two = (paths: string[]) => `
version: 1
listeners:
  api: { kind: http, port: 0, host: 127.0.0.1 }
  push: { kind: websocket, port: 0, host: 127.0.0.1 }
routes:
${paths.map((p) => `  - name: to-${p}\n    from: { listener: api, path: /in/${p} }\n    to: { listener: push, path: /${p} }`).join('\n')}
`;
    const gw = await f.gw.start(two(['a', 'b']));
    const a = await connect('/a');
    const b = await connect('/b');
    // plan names the websocket path only: an HTTP publish path holds no client (a keep-alive
    // connection is the listener's, and stays); it said `listener api/in/b` too.
    writeFileSync(join(gw.dir, 'next.yaml'), two(['a']));
    const plan = await runCliInProcess(['plan', '-c', join(gw.dir, 'next.yaml'), '--from', gw.configFile]);
    assert.deepEqual(
      plan.stdout.split('\n').filter((l) => l.startsWith('clients disconnected')),
      ['clients disconnected: listener push/b: no route serves this path any more'],
      plan.stdout,
    );
    await gw.reconfigure(two(['a']));
    assert.equal((await b.waitClose()).code, 1001);
    assert.equal((await post(gw.url('api', '/in/a'), { still: 'here' })).status, 200);
    assert.deepEqual(await a.next(), { still: 'here' });
    assert.equal(a.closed, undefined);
    await assert.rejects(WsClient.connect(gw.url('push', '/b', 'ws')), (err: { statusCode?: number }) => err.statusCode === 404);
  });

  it('tells the websocket clients of a listener a reload replaces or removes why they are closed, not that the gateway shuts down', async () => {
    const config = (pushHost: string | undefined) => `
version: 1
listeners:
  api: { kind: http, port: 0, host: 127.0.0.1 }
${pushHost ? `  push: { kind: websocket, port: 0, host: ${pushHost} }` : ''}
routes:
  - name: in
    from: { listener: api, path: /in }
    to: ${pushHost ? '{ listener: push, path: /out }' : '{ listener: api, path: /out }'}
`;
    const gw = await f.gw.start(config('127.0.0.1'));
    const replaced = await connect('/out');
    // Another host is another socket: the listener is replaced.
    await gw.reconfigure(config('0.0.0.0'));
    assert.deepEqual(await replaced.waitClose(), { code: 1001, reason: 'listener replaced by a reload' });
    const removed = await connect('/out');
    await gw.reconfigure(config(undefined));
    assert.deepEqual(await removed.waitClose(), { code: 1001, reason: 'listener removed by a reload' });
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
    const gw = await f.gw.start(loaded(0));
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
        const reply = await post(gw.url('api', '/in'), { seq: n });
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
    assert.deepEqual(
      [...counts].filter(([, c]) => c > 1),
      [],
      'no message delivered twice',
    );
    assert.deepEqual(
      [...received].sort((a, b) => a - b),
      [...accepted].sort((a, b) => a - b),
      'every accepted message delivered',
    );
    assert.equal(consumer.closed, undefined);
  });
});
