import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { post } from '../helpers/clients.js';
import { afterGateways, eventually, useGateway } from '../helpers/gateway.js';
import { readyz } from '../helpers/outage.js';
import { pikaConsume, pikaDeclareQueue, pikaPublish } from '../helpers/peers.js';
import { RawNats } from '../helpers/peers.js';
import { useRabbit } from '../helpers/rabbit.js';
import { sharedRabbit } from '../helpers/shared-rabbit.js';
import { startNats, startNatsWithoutJetStream, type MessageServer } from '../helpers/servers.js';

/**
 * A queue (amqp, `declare: false`) or a stream (nats JetStream, `declare: false`) that must exist
 * and does not: it took the whole broker out of readiness, its publishes and every route on it
 * included (`broker B: topology not ready` / `streams not ready`), though the other queues,
 * streams and subjects were there. Now only the routes that read it wait (not ready, saying
 * which queue or stream, logged once), and start by themselves once it exists, consuming what it
 * holds by then.
 */
describe('kind: amqp, a queue a route reads that does not exist (declare: false)', () => {
  const ghost = `eg-ghost-${process.pid}`;
  const seen = `eg-ghost-seen-${process.pid}`;
  // The queue: where the routes relay what they consume, read by an independent client.
  const rabbit = useRabbit(() => sharedRabbit(), { queues: [[seen, 'amq.topic', 'seen.#']] });
  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  rb:
    kind: amqp
    url: ${rabbit.url}
    queues:
      ${ghost}: { declare: false }
      real: { bindings: ["real.*"] }
listeners:
  api: { kind: http, port: 0 }
routes:
  - { name: publish, from: { listener: api, path: /real }, to: { broker: rb, topic: real.a } }
  - { name: real, from: { broker: rb, topic: real }, to: { broker: rb, topic: seen.real } }
  - { name: ghostly, from: { broker: rb, topic: ${ghost} }, to: { broker: rb, topic: seen.ghost } }
`,
  );

  it('stops only the route that reads it; the route starts once the queue exists and consumes what it holds', async () => {
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'real', 30000);
    const warned = await gw.waitForLog((l) => l.route === 'ghostly' && /not found; waiting for it/.test(String(l.msg)), 15000);
    assert.equal(warned.level, 'warn');
    assert.match(String(warned.detail), new RegExp(`NOT_FOUND - no queue '${ghost}'`));
    const probe = await readyz(gw);
    assert.equal(probe.status, 503);
    assert.deepEqual(probe.body.reasons, [`route ghostly: queue '${ghost}' not found on broker 'rb'`]);

    // The broker, its publishes and its other route work meanwhile.
    const reply = await post(gw.url('api', '/real'), { n: 0 });
    assert.equal(reply.status, 200, reply.text);
    const [relayed] = await pikaConsume(rabbit, seen, 1);
    assert.equal(relayed!.routingKey, 'seen.real');
    assert.equal(relayed!.body, '{"n":0}');

    // Created by someone else, holding messages already.
    await pikaDeclareQueue(rabbit, ghost);
    await pikaPublish(rabbit, '', ghost, [{ body: '{"g":1}' }, { body: '{"g":2}' }, { body: '{"g":3}' }]);
    await gw.waitForLog((l) => l.route === 'ghostly' && l.msg === `amqp queue '${ghost}' found`, 15000);
    await eventually(async () => assert.equal((await readyz(gw)).status, 200), 15000, 100);
    const got = await pikaConsume(rabbit, seen, 3);
    assert.deepEqual(
      got.map((m) => [m.routingKey, m.body]),
      [
        ['seen.ghost', '{"g":1}'],
        ['seen.ghost', '{"g":2}'],
        ['seen.ghost', '{"g":3}'],
      ],
    );
    // One line for the state, not one per try.
    assert.equal(gw.logs.filter((l) => l.route === 'ghostly' && /not found; waiting for it/.test(String(l.msg))).length, 1);
  });
});

/** A JetStream API request (`$JS.API.<api>`) over the raw connection; fails on an error answer. */
async function jsApi(peer: RawNats, api: string, body: string): Promise<void> {
  const answer = await peer.request(`$JS.API.${api}`, body);
  assert.doesNotMatch(answer.payload, /"error"/, answer.payload);
}

function createStream(peer: RawNats, name: string, subjects: string[]): Promise<void> {
  return jsApi(peer, `STREAM.CREATE.${name}`, JSON.stringify({ name, subjects, storage: 'memory' }));
}

describe('kind: nats, a stream a route reads that does not exist (declare: false)', () => {
  let nats: MessageServer;
  let peer: RawNats;
  before(async () => {
    nats = await startNats();
    peer = await RawNats.connect(nats);
  });
  afterGateways(async () => {
    peer?.close();
    await nats?.stop();
  });
  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  nt:
    kind: nats
    servers: ${nats.url}
    ackTimeoutMs: 2000
    streams:
      GHOST: { subjects: ["ghost.>"], declare: false }
      REAL: { subjects: ["real.>"], storage: memory }
listeners:
  api: { kind: http, port: 0 }
routes:
  - { name: to-real, from: { listener: api, path: /real }, to: { broker: nt, topic: real.a } }
  - { name: to-core, from: { listener: api, path: /core }, to: { broker: nt, topic: seen.core } }
  - { name: to-ghost, from: { listener: api, path: /ghost }, to: { broker: nt, topic: ghost.a } }
  - { name: real, from: { broker: nt, topic: "real.>" }, to: { broker: nt, topic: seen.real } }
  - { name: ghostly, from: { broker: nt, topic: "ghost.>" }, to: { broker: nt, topic: seen.ghost } }
`,
  );

  it('stops only the route that reads it and the publishes to it; the route starts once the stream exists and consumes what it holds', async () => {
    const sid = await peer.subscribe('seen.>');
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'real', 30000);
    const warned = await gw.waitForLog((l) => l.route === 'ghostly' && /not found; waiting for it/.test(String(l.msg)), 15000);
    assert.equal(warned.level, 'warn');
    const probe = await readyz(gw);
    assert.equal(probe.status, 503);
    assert.deepEqual(probe.body.reasons, ["route ghostly: stream 'GHOST' not found on broker 'nt'"]);

    // The broker, a core subject, the other stream and its route work meanwhile.
    assert.equal((await post(gw.url('api', '/core'), { n: 'core' })).status, 200);
    assert.equal((await post(gw.url('api', '/real'), { n: 'real' })).status, 200);
    // A publish to the missing stream says which.
    const refused = await post(gw.url('api', '/ghost'), { n: 'ghost' });
    assert.equal(refused.status, 503, refused.text);
    assert.match(refused.body.detail, /stream 'GHOST' not found on broker 'nt'/);
    const early = await peer.take(sid, 2);
    assert.deepEqual(early.map((m) => [m.subject, m.payload]).sort(), [
      ['seen.core', '{"n":"core"}'],
      ['seen.real', '{"n":"real"}'],
    ]);

    // Created by someone else, holding messages already.
    await createStream(peer, 'GHOST', ['ghost.>']);
    for (const g of [1, 2, 3]) await peer.jsPublish(`ghost.${g}`, `{"g":${g}}`);
    await eventually(async () => assert.equal((await readyz(gw)).status, 200), 15000, 100);
    const later = await peer.take(sid, 5);
    assert.deepEqual(
      later.slice(2).map((m) => [m.subject, m.payload]),
      [
        ['seen.ghost', '{"g":1}'],
        ['seen.ghost', '{"g":2}'],
        ['seen.ghost', '{"g":3}'],
      ],
    );
    // The broker learned of it too: publishes to it are stored.
    await eventually(async () => assert.equal((await post(gw.url('api', '/ghost'), { n: 'ghost' })).status, 200), 15000, 200);
    assert.equal(gw.logs.filter((l) => l.route === 'ghostly' && /not found; waiting for it/.test(String(l.msg))).length, 1);
  });
});

/**
 * A stream the nats broker declares (`declare: true`) that the server does not take yet (here its
 * subjects overlap another stream's; JetStream still starting is the same): routes sending to the
 * broker wait for its first connection until the stream is declared, as for a broker still
 * connecting. Before, the broker counted its connection alone, and such a route tried its five
 * times and dead-lettered what a restart beside a JetStream still starting handed it.
 */
describe('kind: nats, a stream the broker declares that the server refuses at first', () => {
  let nats: MessageServer;
  // A server without JetStream: its stream's detail said `JetStream did not answer: 503`.
  let plain: MessageServer;
  let peer: RawNats;
  before(async () => {
    [nats, plain] = await Promise.all([startNats(), startNatsWithoutJetStream()]);
    peer = await RawNats.connect(nats);
    await createStream(peer, 'BLOCKER', ['jobs.>']);
  });
  afterGateways(async () => {
    peer?.close();
    await Promise.all([nats?.stop(), plain?.stop()]);
  });
  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  nt:
    kind: nats
    servers: ${nats.url}
    ackTimeoutMs: 2000
    streams:
      JOBS: { subjects: ["jobs.>"], storage: memory }
  nojs: { kind: nats, servers: ${plain.url}, ackTimeoutMs: 2000, streams: { NOJS: { subjects: ["nojs.>"] } } }
  local: { kind: memory }
listeners:
  api: { kind: http, port: 0 }
routes:
  - { name: take, from: { listener: api, path: /in }, to: { broker: local, topic: in } }
  - { name: bridge, from: { broker: local, topic: in }, to: { broker: nt, topic: jobs.a }, deadletter: { broker: nt, topic: dead.bridge } }
  - { name: nojs, from: { listener: api, path: /nojs }, to: { broker: nojs, topic: nojs.a } }
`,
  );

  it('holds the routes that send to it, then delivers once it is declared, dead-lettering nothing', async () => {
    const jobs = await peer.subscribe('jobs.>');
    const dead = await peer.subscribe('dead.>');
    assert.equal((await post(gw.url('api', '/in'), { n: 1 })).status, 200);
    await eventually(
      async () => {
        const probe = await readyz(gw);
        assert.ok((probe.body.reasons ?? []).includes("route bridge: waiting for the first connection of broker 'nt' before consuming"), `${probe.status} ${JSON.stringify(probe.body)}`);
      },
      15000,
      100,
    );
    await jsApi(peer, 'STREAM.DELETE.BLOCKER', '');
    const [job] = await peer.take(jobs, 1, 30000);
    assert.equal(job!.payload, '{"n":1}');
    await eventually(async () => assert.equal((await readyz(gw)).status, 200), 15000, 100);
    assert.equal(peer.received(dead).length, 0);
    const refused = await post(gw.url('api', '/nojs'), { n: 2 });
    assert.equal(refused.status, 503, refused.text);
    assert.match(refused.body.detail, /stream 'NOJS' not ready on broker 'nojs': JetStream is not enabled on the server \(nothing answers its API/);
  });
});
