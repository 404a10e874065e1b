import assert from 'node:assert/strict';
import { renameSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { Transform } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { post } from '../helpers/clients.js';
import { eventually, useGateway } from '../helpers/gateway.js';
import { fetch } from '../helpers/http.js';
import { RawNats } from '../helpers/peers.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { startMosquittoWithUsers, startNatsWithUsers, type ServerWithUsers } from '../helpers/servers.js';

const REJECTED = 'reload rejected; the running config keeps serving';

/**
 * A reload that replaces a connected mqtt or nats broker with one the server refuses for good (its
 * login, its client id, a JetStream stream as declared) is rejected at once, the running broker serving on: it used to wait 5 s
 * as for a server away, swap the refused broker in, and answer every publish of it 503 from then
 * on. A refusal that may pass (a connection limit) still goes on after the wait.
 */
describe('hot reload: a replacing mqtt or nats broker the server refuses', () => {
  let mqtt: ServerWithUsers;
  let nats: ServerWithUsers;
  before(async () => {
    // Three connections at most: two gateways' and one more (a reload's new broker), or the test's own.
    [mqtt, nats] = await Promise.all([startMosquittoWithUsers({ gateway: 'secret' }, { clientIdPrefix: 'eg-' }), startNatsWithUsers({ gateway: 'secret' }, [], { maxConnections: 3 })]);
  });
  after(async () => {
    await Promise.all([mqtt?.stop(), nats?.stop()]);
  });

  type Options = Record<string, string | number>;
  const flow = (o: Options) =>
    `{ ${Object.entries(o)
      .map(([k, v]) => `${k}: ${v}`)
      .join(', ')} }`;
  /** The brokers' options, with `o`'s in place of theirs. */
  const config = (o: { mqtt?: Options; nats?: Options; listeners?: string } = {}) => `
version: 1
admin: { port: 0, drainTimeoutMs: 500 }
brokers:
  mq: ${flow({ kind: 'mqtt', url: mqtt.url, clientId: `eg-refusals-${process.pid}`, username: 'gateway', password: 'secret', qos: 1, ...o.mqtt })}
  nt: ${flow({ kind: 'nats', servers: nats.url, user: 'gateway', password: 'secret', streams: '{ REFUSALS: { subjects: ["refusals.>"] } }', ...o.nats })}
listeners:
  api: { kind: http, port: 0, host: 127.0.0.1 }
${o.listeners ?? ''}
routes:
  - { name: to-mqtt, from: { listener: api, path: /mqtt }, to: { broker: mq, topic: refusals/in } }
  - { name: to-nats, from: { listener: api, path: /nats }, to: { broker: nt, topic: refusals.in } }
`;
  const gw = useGateway(() => config());
  /** A second gateway, started by the test that needs it. */
  const other = useGateway();

  /** Reloads `yaml`, which the server refuses for `broker` (at its line, with `words`); the running broker keeps serving. */
  const refused = async (yaml: string, broker: string, line: number, words: RegExp) => {
    const version = (await gw.status()).version;
    const from = gw.logs.length;
    const reload = await gw.reconfigure(yaml, undefined, { whole: true });
    // Before, the reload waited 5 s, went on without the new broker, and answered 503 from then on.
    assert.equal(reload.msg, REJECTED, JSON.stringify(reload));
    assert.match(
      String(reload.diagnostic),
      new RegExp(`/gateway\\.yaml:${line}:3: could not start broker '${broker}': refused with its new options \\(the running one keeps serving\\): ${words.source}`),
    );
    assert.ok(!gw.logs.slice(from).some((l) => l.msg.startsWith('new broker not connected yet')), 'waited for the refused broker');
    for (const path of ['/mqtt', '/nats']) {
      const reply = await post(gw.url('api', path), { path });
      assert.equal(reply.status, 200, reply.text);
    }
    const status = await gw.status();
    assert.equal(status.version, version);
    assert.equal(status.lastReloadError.diagnostics[0].code, 'EG_START_FAILED');
    assert.equal(status.lastReloadError.diagnostics[0].path, `brokers.${broker}`);
    assert.deepEqual(
      status.brokers.map((b: { name: string; ready: boolean }) => [b.name, b.ready]),
      [
        ['mq', true],
        ['nt', true],
      ],
    );
  };

  it('mqtt: a password or client id the server refuses (MQTT 3.1.1 and 5) rejects the reload at once with the CONNACK, and the running broker serves on', async () => {
    await eventually(async () => assert.equal((await post(gw.url('api', '/mqtt'), { warmup: true })).status, 200), 15000);
    // mosquitto answers 3.1.1's "not authorised" (5) for a wrong password and for a client id outside its clientid_prefixes.
    await refused(config({ mqtt: { password: 'not-the-password' } }), 'mq', 5, /login refused: Connection refused: Not authorized/);
    await refused(config({ mqtt: { clientId: 'other-refusals' } }), 'mq', 5, /login refused: Connection refused: Not authorized/);
    // MQTT 5: 0x87 not authorized.
    await refused(config({ mqtt: { password: 'not-the-password', protocolVersion: 5 } }), 'mq', 5, /login refused: Connection refused: Not authorized/);
    // What the server takes is applied as before.
    assert.equal((await gw.reconfigure(config({ mqtt: { protocolVersion: 5 } }), undefined, { whole: true })).msg, 'config reloaded');
    assert.equal((await post(gw.url('api', '/mqtt'), { n: 1 })).status, 200);
    assert.equal((await gw.reconfigure(config(), undefined, { whole: true })).msg, 'config reloaded');
  });

  it('mqtt: a newer reload asked for while a refused broker makes its first try does not swap it in', async () => {
    await eventually(async () => assert.equal((await post(gw.url('api', '/mqtt'), { warmup: true })).status, 200), 15000);
    // The new broker's server answers late (its bytes held 300 ms each way in), so its first try is still out when the newer reload is asked for.
    const slow = await TcpProxy.start(mqtt.port, { toServer: () => new Transform({ transform: (chunk, _enc, done) => void setTimeout(() => done(null, chunk), 300) }) });
    try {
      const from = gw.logs.length;
      gw.write('next.yaml', config({ mqtt: { url: `mqtt://127.0.0.1:${slow.port}`, password: 'not-the-password' } }));
      renameSync(join(gw.dir, 'next.yaml'), gw.configFile);
      await gw.waitForLog((l) => l.msg === 'waiting for the new broker connections before the swap', 15000, from);
      // Before, a newer reload waiting ended the wait at once: the refused broker was swapped in,
      // and every publish of it was 503 (`login refused`) from then on.
      const reply = await fetch(`${gw.adminUrl}/admin/reload`, { method: 'POST' });
      assert.equal(reply.status, 422, await reply.text());
      const rejected = gw.logs.slice(from).filter((l) => l.msg === REJECTED);
      assert.ok(rejected.length > 0 && rejected.every((l) => /refused with its new options \(the running one keeps serving\): login refused/.test(String(l.diagnostic))), JSON.stringify(rejected));
      assert.ok(!gw.logs.slice(from).some((l) => l.msg === 'config reloaded'), 'a reload applied');
      assert.equal((await post(gw.url('api', '/mqtt'), { n: 1 })).status, 200);
      // The file as the running config has it again.
      const back = gw.logs.length;
      gw.write('next.yaml', config());
      renameSync(join(gw.dir, 'next.yaml'), gw.configFile);
      await gw.waitForLog((l) => l.msg === 'config unchanged', 15000, back);
    } finally {
      await slow.stop();
    }
  });

  it('nats: a login or a stream the server refuses rejects the reload at once with its words; its connection limit does not (the reload goes on, and the broker connects once the old one has left)', async () => {
    await eventually(async () => assert.equal((await post(gw.url('api', '/nats'), { warmup: true })).status, 200), 15000);
    await refused(config({ nats: { password: 'not-the-password' } }), 'nt', 6, /login refused: 'Authorization Violation'/);
    // A stream the server has as file storage, declared in memory: JetStream refuses the update (10052).
    await refused(
      config({ nats: { streams: '{ REFUSALS: { subjects: ["refusals.>"], storage: memory } }' } }),
      'nt',
      6,
      /the server refused stream 'REFUSALS' as declared: stream configuration update can not change storage type/,
    );
    // The test's own connections take the server's last two places: the new broker's is one too many.
    const peers = [await RawNats.connect(nats, { user: 'gateway', pass: 'secret' }), await RawNats.connect(nats, { user: 'gateway', pass: 'secret' })];
    try {
      const from = gw.logs.length;
      const reload = await gw.reconfigure(config({ nats: { connectTimeoutMs: 4000 } }), undefined, { whole: true });
      assert.equal(reload.msg, 'config reloaded', JSON.stringify(reload));
      const waited = gw.logs.slice(from).find((l) => l.msg === 'new broker not connected yet; the reload goes on and it keeps trying');
      // nats.js says `maximum connections exceeded`, or the EPIPE of its CONNECT when the server's close came first.
      assert.equal(waited?.broker, 'nt', JSON.stringify(waited));
      // The old broker's connection is gone with it: the new one connects on its next try.
      await eventually(async () => assert.equal((await post(gw.url('api', '/nats'), { n: 1 })).status, 200), 20000);
    } finally {
      for (const peer of peers) peer.close();
    }
  });

  it('nats: a stream a rejected reload changed on the server is put back as the running config declares it, and its publishes go on', async () => {
    await eventually(async () => assert.equal((await post(gw.url('api', '/nats'), { warmup: true })).status, 200), 15000);
    // The reload narrows the stream (the server takes that), then fails at a listener whose port another socket holds.
    const holder = createServer();
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
    const peer = await RawNats.connect(nats, { user: 'gateway', pass: 'secret' });
    try {
      const taken = (holder.address() as AddressInfo).port;
      const from = gw.logs.length;
      const reload = await gw.reconfigure(
        config({ nats: { streams: '{ REFUSALS: { subjects: ["refusals.other"] } }' }, listeners: `  taken: { kind: http, port: ${taken}, host: 127.0.0.1 }` }),
        undefined,
        { whole: true },
      );
      assert.equal(reload.msg, REJECTED, JSON.stringify(reload));
      assert.match(String(reload.diagnostic), /could not start listener 'taken': cannot bind/);
      // Before, the stream stayed narrowed: `no JetStream stream stores subject 'refusals.in'` (503) until the broker reconnected.
      const reply = await post(gw.url('api', '/nats'), { n: 1 });
      assert.equal(reply.status, 200, reply.text);
      const { config: stream } = (await peer.jsApi('$JS.API.STREAM.INFO.REFUSALS', {})) as { config: { subjects: string[] } };
      assert.deepEqual(stream.subjects, ['refusals.>']);
      // Put back before the rejection is told: the built broker's stop waits for it.
      const put = gw.logs.slice(from).find((l) => l.msg.startsWith('nats stream put back'));
      assert.equal(put?.stream, 'REFUSALS', JSON.stringify(gw.logs.slice(from)));
    } finally {
      peer.close();
      holder.close();
    }
  });

  it('nats: a reload of a broker whose stream the server refuses already, refused the same way, is applied', async () => {
    const ownId = { clientId: `eg-other-${process.pid}` };
    const refusedStream = { streams: '{ REFUSALS: { subjects: ["refusals.>"], storage: memory } }' };
    await other.start(config({ mqtt: ownId, nats: refusedStream }));
    await eventually(async () => assert.match((await post(other.url('api', '/nats'), { n: 0 })).text, /stream configuration update can not change storage type/), 15000);
    // Nothing is made worse: before the running broker was weighed, this was rejected as a refusal.
    const reload = await other.reconfigure(config({ mqtt: ownId, nats: { ...refusedStream, pingIntervalMs: 30000 } }), undefined, { whole: true });
    assert.equal(reload.msg, 'config reloaded', JSON.stringify(reload));
  });
});
