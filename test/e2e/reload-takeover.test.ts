import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { post } from '../helpers/clients.js';
import { eventually, useGateway } from '../helpers/gateway.js';
import { amqpMethodGate, pikaConsume } from '../helpers/peers.js';
import { freePort } from '../helpers/ports.js';
import type { RabbitServer } from '../helpers/servers.js';
import { sharedRabbit } from '../helpers/shared-rabbit.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';

/**
 * A reload that takes a listener's port over (its socket is replaced on the same port: here its
 * host goes from 127.0.0.1 to every address) and replaces an amqp broker in the same step. The
 * new broker binds its queues at the commit (network round trips; up to connectTimeoutMs on a
 * server that stops answering), after the takeover and before the swap. Before, the new socket
 * served no route meanwhile: every request on the port was answered 404.
 */
describe('hot reload: a listener takeover beside a broker commit', () => {
  let rabbit: RabbitServer;
  let port: number;
  const proxies: TcpProxy[] = [];
  before(async () => {
    rabbit = await sharedRabbit();
    port = await freePort('127.0.0.1');
  });
  after(async () => {
    for (const p of proxies) await p.stop();
    await rabbit?.stop();
  });
  const gw = useGateway();

  const config = (host: string, url: string) => `version: 1
admin: { port: 0 }
brokers:
  rabbit:
    kind: amqp
    url: ${url}
    connectTimeoutMs: 30000
    exchange: { name: amq.topic, type: topic }
    queues:
      takeover: { bindings: [orders.placed] }
listeners:
  api: { kind: http, port: ${port}, host: ${host} }
routes:
  - name: place
    from: { listener: api, path: /orders }
    to: { broker: rabbit, topic: orders.placed }
`;

  /** POSTs numbered orders one after another on the port until stopped, keeping every answer. */
  function stream() {
    const answers: { i: number; status: number | string }[] = [];
    let going = true;
    const done = (async () => {
      for (let i = 0; going; i++) {
        // Not kept alive: the takeover closes the old socket's idle connections (a pooled one's
        // close not read yet is the client's race, "socket hang up", not the gateway's answer).
        const status = await post(`http://127.0.0.1:${port}/orders`, { i }, { connection: 'close' }).then(
          (r) => r.status,
          (err: Error & { cause?: { code?: string } }) => err.cause?.code ?? err.message,
        );
        answers.push({ i, status });
      }
    })();
    return {
      answers,
      async stop() {
        going = false;
        await done;
      },
    };
  }

  it('serves the taken-over port with the running routes until the commit is done, then with the new ones: no 404, nothing lost or doubled', async () => {
    await gw.start(config('127.0.0.1', rabbit.url));
    await eventually(async () => assert.equal((await post(`http://127.0.0.1:${port}/orders`, { i: -1 })).status, 200), 15000);
    // The new broker reaches the server through a proxy that holds its queue.bind (the commit's
    // first round trip) until the test has seen the port answer meanwhile.
    const gate = amqpMethodGate(50, 20);
    const proxy = await TcpProxy.start(rabbit.port, { toServer: () => gate.stream() });
    const orders = stream();
    try {
      const reloaded = gw.reconfigure(config('0.0.0.0', rabbit.url.replace(`:${rabbit.port}/`, `:${proxy.port}/`)));
      await gate.reached;
      // The takeover is done (it comes before the commit): what the port answers now, the new socket does.
      const from = orders.answers.length;
      await eventually(() => assert.ok(orders.answers.length >= from + 5), 15000, 10);
      const meanwhile = orders.answers.slice(from + 1, from + 5);
      gate.release();
      const line = await reloaded;
      assert.equal(line.msg, 'config reloaded', JSON.stringify(line));
      // Before, each was 404 (no route on the new socket until the swap).
      assert.deepEqual(
        meanwhile.map((a) => a.status),
        [200, 200, 200, 200],
        JSON.stringify(meanwhile),
      );
      const reloadedAt = orders.answers.length;
      await eventually(() => assert.ok(orders.answers.length >= reloadedAt + 3), 15000, 10);
    } finally {
      gate.release();
      await orders.stop();
      proxies.push(proxy);
    }
    const statuses = new Set(orders.answers.map((a) => a.status));
    assert.ok(!statuses.has(404), JSON.stringify(orders.answers.filter((a) => a.status === 404)));
    // Around the takeover itself a client may find the port between two sockets (refused) or a
    // request answered 503 by the old one as it stops, its message not taken: nothing else.
    for (const s of statuses) assert.ok([200, 503, 'ECONNREFUSED', 'ECONNRESET', 'UND_ERR_SOCKET'].includes(s), `unexpected answer ${s}`);
    const served = orders.answers.filter((a) => a.status === 200).map((a) => a.i);
    // A sentinel, published after everything, arrives after all of them; each order once.
    assert.equal((await post(`http://127.0.0.1:${port}/orders`, { i: 'last' })).status, 200);
    const received = (await pikaConsume(rabbit, 'takeover', served.length + 2)).map((m) => (JSON.parse(m.body) as { i: number | string }).i);
    assert.deepEqual(
      received.filter((i) => i !== -1),
      [...served, 'last'],
    );
  });
});
