import assert from 'node:assert/strict';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import { makeCertificates, type Pem } from '../helpers/certificates.js';
import { eventually, useGateway } from '../helpers/gateway.js';
import { readyz } from '../helpers/outage.js';
import { type RabbitConnection, startRabbit, type RabbitServer } from '../helpers/servers.js';
import { useRabbit } from '../helpers/rabbit.js';
import { sharedRabbit } from '../helpers/shared-rabbit.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';

/**
 * The broker's connections on the server, by the name the broker gives them (`eventgate <broker>[ publish]`),
 * in any vhost or none yet (one still opening has none): as `rabbitmqctl list_connections` lists them.
 */
async function connectionsOf(rabbit: RabbitServer, broker: string): Promise<RabbitConnection[]> {
  return (await rabbit.admin.listConnections()).filter((c) => c.name === `eventgate ${broker}` || c.name?.startsWith(`eventgate ${broker} `));
}

/**
 * A stop (here a reload that removes the broker) while the publish connection is being opened
 * again after the server closed it: the connect under way is ended and waited for, not left to
 * open on the server after the stop returned. The proxy holds the new connection (accepted, not
 * passed on), the open ones going on, so the reopen is under way for as long as the test wants.
 */
describe('kind: amqp, a stop while the publish connection is being opened again', () => {
  const rabbit = useRabbit(() => sharedRabbit(), { proxy: true });
  const gw = useGateway();
  // connectTimeoutMs far beyond the test: amqplib's own timeout does not end the held connect.
  const config = (withBroker: boolean) => `
version: 1
admin: { port: 0 }
listeners:
  api: { kind: http, port: 0 }
brokers:
  mem: { kind: memory }
${withBroker ? `  held: { kind: amqp, url: "${rabbit.proxiedUrl}", connectTimeoutMs: 120000 }` : ''}
routes:
  - name: post
    from: { listener: api, path: /post }
    to: { broker: ${withBroker ? 'held' : 'mem'}, topic: held.out }
`;

  it('ends the connect under way: none is held open after the stop, none opens on the server after it, nothing is logged as a failure', async () => {
    await gw.start(config(true));
    await eventually(async () => assert.equal((await readyz(gw)).status, 200), 30000, 100);
    let pid: string | undefined;
    await eventually(
      async () => {
        const publishing = (await connectionsOf(rabbit, 'held')).filter((c) => c.name === 'eventgate held publish');
        assert.equal(publishing.length, 1, JSON.stringify(publishing));
        pid = publishing[0]!.pid;
      },
      15000,
      200,
    );
    const from = gw.logs.length;
    rabbit.proxy.holdNew();
    await rabbit.admin.closeConnection(pid!, 'eventgate test: the publish connection');
    await gw.waitForLog((l) => l.broker === 'held' && l.msg === 'amqp publish connection lost; opening it again', 15000, from);
    // The new publish connection, accepted by the proxy and held there: the reopen is under way.
    await eventually(() => assert.equal(rabbit.proxy.heldOpen(), 1), 15000, 20);
    const reloaded = await gw.reconfigure(config(false));
    // Logged once the brokers the reload removed have stopped (no request was in flight).
    assert.equal(reloaded.msg, 'config reloaded');
    // The broker ended its connect before its stop returned; the proxy sees the close a loopback hop later.
    // Before: held open until connectTimeoutMs, then opened on the server (and closed there once open).
    await eventually(() => assert.equal(rabbit.proxy.heldOpen(), 0, 'the publish connection being opened, still open after the stop'), 10000, 20);
    rabbit.proxy.release();
    // What the server has of the broker now: nothing (a connection its client closed while held never reaches it).
    assert.deepEqual(await connectionsOf(rabbit, 'held'), []);
    assert.deepEqual(
      gw.logs.slice(from).filter((l) => l.broker === 'held' && (l.level === 'warn' || l.level === 'error') && l.msg !== 'amqp publish connection lost; opening it again'),
      [],
      'the ended connect is no failure to warn of',
    );
  });

  it('a reconnect under way is ended the same way', async () => {
    // Nothing held from a case before that failed.
    rabbit.proxy.release();
    await gw.start(config(true));
    await eventually(async () => assert.equal((await readyz(gw)).status, 200), 30000, 100);
    const from = gw.logs.length;
    // Both connections cut; the reconnect's connection held.
    rabbit.proxy.cutAndHold();
    await gw.waitForLog((l) => l.broker === 'held' && l.msg === 'amqp connection lost; reconnecting', 15000, from);
    await eventually(() => assert.equal(rabbit.proxy.heldOpen(), 1), 30000, 20);
    const at = gw.logs.length;
    assert.equal((await gw.reconfigure(config(false))).msg, 'config reloaded');
    // Before: held open until connectTimeoutMs, then the connect went on, declaring the topology, after the stop.
    await eventually(() => assert.equal(rabbit.proxy.heldOpen(), 0, 'the connection being opened, still open after the stop'), 10000, 20);
    rabbit.proxy.release();
    assert.deepEqual(await connectionsOf(rabbit, 'held'), []);
    assert.deepEqual(
      gw.logs.slice(at).filter((l) => l.broker === 'held' && (l.level === 'warn' || l.level === 'error')),
      [],
      'the ended connect is no failure to warn of',
    );
  });
});

/**
 * A TLS publish connection whose pair is lost, over a path that stopped passing anything (a
 * partition; the proxy cuts the broker's other connection alone, so it is lost first): ended at
 * once, as a plain one is reset, not closed with a close handshake that waited for a CloseOk until
 * its heartbeat (2 s here) gave it up, warning `Heartbeat timeout` for a connection already given up.
 */
describe('kind: amqp over TLS, the publish connection when its pair is lost over a dead path', () => {
  let certs: { a: Pem };
  let rabbit: RabbitServer;
  let proxy: TcpProxy;
  before(async () => {
    certs = makeCertificates();
    rabbit = await startRabbit({ tls: { cert: certs.a } });
    proxy = await TcpProxy.start(Number(new URL(rabbit.tlsUrl!).port));
  });
  after(async () => {
    await proxy?.stop();
    await rabbit?.stop();
  });
  const gw = useGateway();

  it('is ended at once, amqplib told: no late `Heartbeat timeout` warning for it', async () => {
    await gw.start(
      `
version: 1
admin: { port: 0 }
listeners:
  api: { kind: http, port: 0 }
brokers:
  tls: { kind: amqp, url: "amqps://guest:guest@127.0.0.1:${proxy.port}?heartbeat=2", tls: { ca: server.pem } }
routes:
  - name: post
    from: { listener: api, path: /post }
    to: { broker: tls, topic: tls.out }
`,
      { files: { 'server.pem': certs.a.cert } },
    );
    await eventually(async () => assert.equal((await readyz(gw)).status, 200), 30000, 100);
    // The broker opens its connection, then the publish connection beside it.
    const [main, publishing] = [proxy.clientOf(0), proxy.clientOf(1)];
    assert.ok(main && publishing && proxy.clientOf(2) === undefined, 'the broker holds two connections');
    const from = gw.logs.length;
    proxy.partition();
    main.destroy();
    const lost = await gw.waitForLog((l) => l.broker === 'tls' && l.msg === 'amqp connection lost; reconnecting', 15000, from);
    assert.equal(lost.reason, 'unreachable: connection closed');
    // Closed by the broker: at once now; before, when its heartbeat gave it up (two intervals, about 4 s).
    if (!publishing.destroyed) await once(publishing, 'close');
    // A round trip to the gateway: its log lines written before the close are read by now.
    await gw.status();
    assert.deepEqual(
      gw.logs.slice(from).filter((l) => l.broker === 'tls' && l.msg === 'amqp connection error' && l.connection === 'publish'),
      [],
      'the publish connection ended with its pair is no error to warn of',
    );
    proxy.heal();
  });
});
