import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { post } from '../helpers/clients.js';
import { eventually, useGateway } from '../helpers/gateway.js';
import { readyz } from '../helpers/outage.js';
import { pikaConsume, pikaQueueDepth } from '../helpers/peers.js';
import { useRabbit } from '../helpers/rabbit.js';
import { sharedSizeLimitedRabbit } from '../helpers/shared-rabbit.js';
import { SIZE_LIMITED_RABBIT_MAX_MESSAGE_SIZE } from '../helpers/shared-rabbit-kinds.js';

/** The server's max_message_size: small, so a test message goes over it without megabytes. */
const LIMIT = SIZE_LIMITED_RABBIT_MAX_MESSAGE_SIZE;
const big = (n: number) => JSON.stringify({ big: 'x'.repeat(2 * LIMIT), n });

/**
 * RabbitMQ closes the publish channel for a message over its max_message_size; the broker then
 * opens a new publish channel on the same connection, and when that fails, it falls back to a
 * new publish connection, and when that fails, a full reconnect (amqp/broker.ts, reopenPublisher,
 * reopenPublishing). Provoked here with RabbitMQ's own per-user
 * channel limit (`rabbitmqctl set_user_limits`), set once the gateway holds its two channels (the
 * publish channel and a consume route's): the channel closed for the large message leaves one,
 * and the new one would make two. What a user sees meanwhile, and that nothing is lost. The
 * gateway logs in as this file's own user on the run's size-limited RabbitMQ (users are node-wide:
 * a limit on guest would reach the other files' connections); the test's own clients as guest.
 */
describe('an AMQP publish channel the server closed: a publish refused 403, a size refusal whose new channel cannot be opened', () => {
  const rabbit = useRabbit(() => sharedSizeLimitedRabbit(), { queues: [['reopen-posted', 'amq.topic', 'posted.out']] });

  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
listeners:
  api: { kind: http, port: 0 }
brokers:
  rabbit: { kind: amqp, url: ${rabbit.userUrl} }
  mem: { kind: memory }
routes:
  - name: post-amqp
    from: { listener: api, path: /amqp }
    to: { broker: rabbit, topic: posted.out }
  - name: consume-amqp
    from: { broker: rabbit, topic: consumed.in }
    to: { broker: mem, topic: consumed }
`,
  );

  // First in the file: RabbitMQ caches a channel's permission checks that passed, so the publish
  // channel must not have published before the user loses its write permission.
  it("a publish the user may not make (403 on the exchange): a 503 in the server's words, a new publish channel, the consume route's channel kept", async () => {
    await gw.waitForLog((l) => l.broker === 'rabbit' && l.msg === 'consumer ready', 30000);
    const from = gw.logs.length;
    // Its queues still, the exchange no more.
    await rabbit.admin.setPermissions(rabbit.vhost, rabbit.user, '.*', '^eventgate-', '.*');
    try {
      const refused = await post(gw.url('api', '/amqp'), { n: 'refused' });
      assert.equal(refused.status, 503, refused.text);
      assert.match(refused.body.detail, /the server closed the publish channel \(403 ACCESS_REFUSED - access to exchange 'amq\.topic' in vhost '[^']+' refused for user '[^']+'\)/);
      await gw.waitForLog((l) => l.broker === 'rabbit' && l.msg === 'amqp publish channel opened again', 15000, from);
    } finally {
      await rabbit.admin.setPermissions(rabbit.vhost, rabbit.user, '.*', '.*', '.*');
    }
    // Reconnecting changes no permission, and closed the consume route's channel (its messages in hand delivered again) at every such publish.
    assert.deepEqual(
      gw.logs.slice(from).filter((l) => l.broker === 'rabbit' && (l.msg === 'amqp connection lost; reconnecting' || l.msg === 'consumer ready')),
      [],
    );
    const res = await post(gw.url('api', '/amqp'), { n: 'allowed' });
    assert.equal(res.status, 200, res.text);
    const got = await pikaConsume(rabbit, 'reopen-posted', 1);
    assert.deepEqual(
      got.map((m) => m.body),
      [JSON.stringify({ n: 'allowed' })],
    );
  });

  it('answers the large message 413, the others 503 while the broker cannot publish (never a 2xx for a message not taken), 200 once it can; each message taken on the queue once', async () => {
    await gw.waitForLog((l) => l.broker === 'rabbit' && l.msg === 'consumer ready', 30000);
    const start = gw.logs.length;
    const taken: string[] = [];
    const publish = async (body: Record<string, unknown> | string) => {
      const res = await post(gw.url('api', '/amqp'), body);
      if (res.status === 200) taken.push(typeof body === 'string' ? body : JSON.stringify(body));
      return res;
    };
    assert.equal((await publish({ n: 1 })).status, 200);
    // The gateway holds two channels (publish, consume); from now on the server lets its user open one.
    await rabbit.admin.setUserLimits(rabbit.user, { 'max-channels': 1 });
    const refused = await publish(big(2));
    assert.equal(refused.status, 413, refused.text);
    assert.equal(refused.body.code, 'EG_PAYLOAD_TOO_LARGE');
    // The server closed the publish channel for it; the new one is refused (RabbitMQ closes the
    // publish connection for it: 530 NOT_ALLOWED), and the broker opens it again, and again.
    await gw.waitForLog((l) => l.broker === 'rabbit' && l.msg === 'amqp publish channel could not be opened again; reconnecting', 15000);
    const lost = await gw.waitForLog((l) => l.broker === 'rabbit' && l.msg === 'amqp publish connection lost; opening it again', 15000, start);
    // The server closed the connection and said why: that is what the broker is not ready for, not `unreachable`.
    const refusal = `closed by the server: 530 NOT_ALLOWED - number of channels opened for user '${rabbit.user}' has reached the maximum allowed user limit of (1) (the publish connection)`;
    assert.equal(lost?.reason, refusal, JSON.stringify(lost));
    // Meanwhile each publish is refused, 503, or taken (200) on a connection the server has not closed yet.
    for (let n = 3; n < 8; n++) {
      const res = await publish({ n });
      assert.ok(res.status === 200 || res.status === 503, `${res.status} ${res.text}`);
      if (res.status === 503) {
        assert.equal(res.body.code, 'EG_BROKER_UNAVAILABLE');
        // `... is not connected (closed by the server: 530 NOT_ALLOWED - ...)`, or a confirm the closing channel failed.
        assert.doesNotMatch(res.body.detail, /unreachable/);
      }
    }
    // /readyz names the state, /admin/status (and the 503s) the server's words; asked until seen between two reconnects.
    await eventually(
      async () => {
        const probe = await readyz(gw);
        assert.deepEqual(probe.body.reasons, ['broker rabbit: closed by the server']);
        const broker = (await gw.status()).brokers.find((b: { name: string }) => b.name === 'rabbit');
        assert.equal(broker.detail, refusal);
      },
      30000,
      20,
    );
    await rabbit.admin.clearUserLimits(rabbit.user, 'max-channels');
    await eventually(async () => assert.equal((await readyz(gw)).status, 200), 30000);
    assert.equal((await publish({ n: 8 })).status, 200);
    assert.equal(gw.logs.slice(start).filter((l) => l.broker === 'rabbit' && l.msg === 'amqp publish channel opened again').length, 0);
    // Every message answered 200 is on the queue, once, in order; nothing else is.
    const got = await pikaConsume(rabbit, 'reopen-posted', taken.length, 5);
    assert.deepEqual(
      got.map((m) => m.body),
      taken,
    );
    assert.equal(await pikaQueueDepth(rabbit, 'reopen-posted'), 0);
  });
});
