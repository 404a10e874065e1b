import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { post, WsClient } from '../helpers/clients.js';
import { afterGateways, eventually, useGateway } from '../helpers/gateway.js';
import { readyz } from '../helpers/outage.js';
import { RawNats } from '../helpers/peers.js';
import { startNatsWithUsers, type ServerWithUsers } from '../helpers/servers.js';

/**
 * A core NATS publish to a subject the server's permissions refuse: nats-server answers
 * `-ERR 'Permissions Violation for Publish to "S"'` and drops the message, then answers the
 * flush's PING as usual. Before, that PONG made the publish a 200 for a message nobody got.
 */
describe('kind: nats, a publish the server refuses for its permissions', () => {
  let nats: ServerWithUsers;
  before(async () => {
    nats = await startNatsWithUsers({ gateway: 'secret' }, ['denied.>']);
  });
  afterGateways(() => nats?.stop());

  const gw = useGateway(
    () => `version: 1
admin: { port: 0 }
brokers:
  nats: { kind: nats, servers: ${nats.url}, user: gateway, password: secret, streams: { REFUSED: { subjects: ["denied.stream.>"] } } }
listeners:
  api: { kind: http, port: 0, host: 127.0.0.1 }
  ws: { kind: websocket, port: 0, host: 127.0.0.1 }
routes:
  - name: in
    from: { listener: api, path: /in/:where }
    to: { broker: nats, topic: { expression: '$path.where & ".x"' } }
  - name: frames
    from: { listener: ws, path: /frames }
    ack: true
    to: { broker: nats, topic: denied.frames }
`,
  );

  // The gateway is ready before its brokers are: a publish meanwhile is a 503 (the stream not declared yet).
  before(() => eventually(async () => assert.equal((await readyz(gw)).status, 200), 30_000));

  it('answers 503 naming the refusal, while publishes to other subjects in the same turn answer 200 and arrive', { timeout: 60_000 }, async () => {
    const peer = await RawNats.connect(nats, { user: 'gateway', pass: 'secret' });
    try {
      const sid = await peer.subscribe('allowed.x');
      const answers = await Promise.all(['denied', 'allowed', 'denied', 'allowed'].map((where, n) => post(gw.url('api', `/in/${where}`), { n })));
      assert.deepEqual(
        answers.map((a) => a.status),
        [503, 200, 503, 200],
        answers.map((a) => a.text).join('\n'),
      );
      const refused = JSON.parse(answers[0]!.text) as { detail: string };
      assert.match(refused.detail, /Permissions Violation for Publish to "denied\.x"/);
      const got = await peer.take(sid, 2);
      assert.deepEqual(got.map((m) => JSON.parse(m.payload).n).sort(), [1, 3]);
    } finally {
      peer.close();
    }
  });

  it('answers a JetStream publish the server refuses at once with the refusal, not at its deadline as unacknowledged', { timeout: 60_000 }, async () => {
    const answer = await post(gw.url('api', '/in/denied.stream'), { n: 1 });
    assert.equal(answer.status, 503, answer.text);
    assert.match((JSON.parse(answer.text) as { detail: string }).detail, /Permissions Violation for Publish to "denied\.stream\.x"/);
  });

  it('answers a WebSocket frame with a 503 error frame, the connection open', { timeout: 60_000 }, async () => {
    const client = await WsClient.connect(gw.url('ws', '/frames', 'ws'));
    try {
      client.send(JSON.stringify({ n: 1 }));
      const frame = (await client.next()) as { type: string; status: number; detail: string };
      assert.equal(frame.type, 'error');
      assert.equal(frame.status, 503);
      assert.match(frame.detail, /Permissions Violation for Publish to "denied\.frames"/);
      client.send(JSON.stringify({ n: 2 }));
      assert.equal(((await client.next()) as { status: number }).status, 503);
    } finally {
      client.close();
    }
  });
});

/**
 * The broker looks up each core subject it reads or publishes among the server's streams, to warn
 * of one a stream stores (spec-checklist 5071). A user the JetStream API is denied to gets a
 * permissions violation for the lookup: that is not logged as a `nats error`, and the broker makes
 * no more lookups.
 */
describe('kind: nats, core subjects for a user the JetStream API is denied to', () => {
  let nats: ServerWithUsers;
  before(async () => {
    nats = await startNatsWithUsers({ gateway: 'secret' }, ['$JS.API.>']);
  });
  afterGateways(() => nats?.stop());

  const gw = useGateway(
    () => `version: 1
admin: { port: 0 }
brokers:
  nats: { kind: nats, servers: ${nats.url}, user: gateway, password: secret }
listeners:
  api: { kind: http, port: 0, host: 127.0.0.1 }
routes:
  - name: in
    from: { listener: api, path: /in/:n }
    to: { broker: nats, topic: { expression: '"core." & $path.n' } }
`,
  );

  before(() => eventually(async () => assert.equal((await readyz(gw)).status, 200), 30_000));

  it('publishes and logs no error for the refused lookups', { timeout: 60_000 }, async () => {
    const peer = await RawNats.connect(nats, { user: 'gateway', pass: 'secret' });
    try {
      const sid = await peer.subscribe('core.*');
      for (let n = 0; n < 3; n++) assert.equal((await post(gw.url('api', `/in/${n}`), { n })).status, 200);
      assert.deepEqual(
        (await peer.take(sid, 3)).map((m) => JSON.parse(m.payload).n),
        [0, 1, 2],
      );
      // The refusal of the first lookup came back before the publish's flush answered.
      assert.deepEqual(
        gw.logs.filter((l) => l.level !== 'info' && l.level !== 'debug').map((l) => l.msg),
        [],
      );
    } finally {
      peer.close();
    }
  });
});
