import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { post } from '../helpers/clients.js';
import { afterGateways, eventually, useGateway } from '../helpers/gateway.js';
import { readyz } from '../helpers/outage.js';
import { RawNats } from '../helpers/peers.js';
import { startNats, type MessageServer } from '../helpers/servers.js';
import { listenerStatus, openStream, resumeFrom, untagged } from '../helpers/sse.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';

/**
 * A client that closes its stream while its resume is under way costs no more broker reads: the
 * routes after the one being read are not read for it, and a read that was being set up is ended
 * without a pull (nats.js makes an ordered consumer's server side on its first pull: none is made). The gateway
 * reaches nats-server through a proxy whose replies the case holds while the first route's read
 * is being set up (its request seen on `$JS.API.>` by a plain subscriber), so the client is gone
 * before that read can go on; every JetStream API request the gateway makes after is seen there.
 */
describe('SSE over JetStream: a client gone during its resume', () => {
  let nats: MessageServer;
  let proxy: TcpProxy;
  let peer: RawNats;
  let api: string;
  before(async () => {
    nats = await startNats();
    proxy = await TcpProxy.start(nats.port);
    peer = await RawNats.connect(nats);
    api = await peer.subscribe('$JS.API.>');
  });
  afterGateways(async () => {
    peer?.close();
    await proxy?.stop();
    return nats?.stop();
  });
  // Three routes feed /out, read in this order by a resume: a (stream GA), b (GB), c (GC).
  const gw = useGateway(
    () => `version: 1
admin: { port: 0 }
brokers:
  nats:
    kind: nats
    servers: nats://127.0.0.1:${proxy.port}
    streams:
${['a', 'b', 'c'].map((r) => `      G${r.toUpperCase()}: { subjects: ["g${r}.>"] }\n`).join('')}listeners:
  api: { kind: http, port: 0, host: 127.0.0.1 }
routes:
${['a', 'b', 'c']
  .map(
    (r) => `  - name: in-${r}
    from: { listener: api, path: /in/${r} }
    to: { broker: nats, topic: g${r}.x }
  - name: ${r}
    from: { broker: nats, topic: g${r}.x }
    to: { listener: api, path: /out }
`,
  )
  .join('')}`,
  );
  before(() => eventually(async () => assert.equal((await readyz(gw)).status, 200), 30_000));
  /** The routes' own (durable) consumers: what they ask of the server (info, pulls) goes on meanwhile. */
  const routeConsumers = new Map<string, string[]>();
  before(() =>
    eventually(async () => {
      for (const stream of ['GA', 'GB', 'GC']) routeConsumers.set(stream, (await peer.jsApi(`$JS.API.CONSUMER.NAMES.${stream}`, {})).consumers ?? []);
      assert.deepEqual(
        [...routeConsumers.values()].map((names) => names.length),
        [1, 1, 1],
        "each route's consumer is made",
      );
    }, 30_000),
  );
  /** The requests of `asked` about streams `streams` (a pattern), but for the routes' own consumers. */
  const about = (asked: string[], streams: string) => asked.filter((s) => new RegExp(`\\.${streams}(\\.|$)`).test(s) && !s.split('.').some((t) => [...routeConsumers.values()].flat().includes(t)));
  const publish = (route: string, body: unknown) =>
    eventually(async () => {
      const r = await post(gw.url('api', `/in/${route}`), body);
      assert.equal(r.status, 200, r.text);
    }, 20_000);
  let n = 0;
  /** Publishes one message to each of `routes`, and the id of the last event a live client got of them. */
  async function delivered(routes: string[]): Promise<string> {
    const probe = await openStream(gw.url('api', '/out'));
    try {
      for (const r of routes) await publish(r, { n: ++n, r });
      await eventually(() => assert.equal(probe.events().length, routes.length), 20_000);
      return probe.events().at(-1)!.id!;
    } finally {
      probe.close();
    }
  }

  /**
   * A client resumes from `lastId` and closes its stream while route a's read is being set up
   * (the reply to its first request held). The JetStream API requests the gateway made from then
   * until the resume was over.
   */
  async function goneDuringFirstRead(lastId: string): Promise<string[]> {
    await eventually(async () => assert.equal((await listenerStatus(gw)).eventStreams, 0, 'no stream open'), 20_000);
    const from = peer.received(api).length;
    proxy.holdReplies();
    try {
      const client = await resumeFrom(gw.url('api', '/out'), lastId);
      await eventually(
        () =>
          assert.ok(
            peer
              .received(api)
              .slice(from)
              .some((m) => m.subject === '$JS.API.STREAM.INFO.GA'),
            "route a's read is being set up",
          ),
        20_000,
      );
      client.close();
      await eventually(async () => assert.equal((await listenerStatus(gw)).eventStreams, 0, 'the gateway saw the stream closed'), 20_000);
    } finally {
      proxy.releaseReplies();
    }
    await eventually(async () => assert.equal((await listenerStatus(gw)).eventStreamReplays, 0, 'the resume is over'), 30_000);
    // What the server copied to the subscriber before this round trip's answer.
    await peer.ping();
    return peer
      .received(api)
      .slice(from)
      .map((m) => m.subject);
  }

  it("reads none of the next routes' streams", { timeout: 120_000 }, async () => {
    const lastId = await delivered(['a', 'b', 'c']);
    assert.match(untagged(lastId), /^a=0:1;b=0:1;c=0:1$/);
    // Route c has one message more: its read would make a consumer and pull.
    await delivered(['c']);
    const asked = await goneDuringFirstRead(lastId);
    assert.ok(asked.includes('$JS.API.STREAM.INFO.GA'), asked.join(' '));
    assert.deepEqual(about(asked, 'G[BC]'), [], 'no request about the streams of routes b and c');
  });

  it('ends the read it had set up: no pull, no consumer', { timeout: 120_000 }, async () => {
    const lastId = await delivered(['a', 'b', 'c']);
    // Route a has a message after the id: its read would make a consumer of its own (on its first pull) and pull.
    await delivered(['a']);
    const asked = await goneDuringFirstRead(lastId);
    assert.ok(asked.includes('$JS.API.STREAM.MSG.GET.GA'), `the read was set up (its last message asked for): ${asked.join(' ')}`);
    assert.deepEqual(
      about(asked, 'GA').filter((s) => s.startsWith('$JS.API.CONSUMER.')),
      [],
      'no consumer made for the read, no pull',
    );
    assert.deepEqual((await peer.jsApi('$JS.API.CONSUMER.NAMES.GA', {})).consumers, routeConsumers.get('GA'), "the route's own consumer only");
    assert.deepEqual(about(asked, 'G[BC]'), [], 'no request about the streams of routes b and c');
  });
});
