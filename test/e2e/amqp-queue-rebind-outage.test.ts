import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { eventually, useGateway } from '../helpers/gateway.js';
import { pikaPublish, pikaQueueDepth } from '../helpers/peers.js';
import { useRabbit } from '../helpers/rabbit.js';
import { sharedRabbit } from '../helpers/shared-rabbit.js';

/**
 * A reload that removes a declared queue's entry (the queue stays on the server) unbinds the
 * queue's bindings (test/e2e/amqp-queue-rebind). One applied while the server cannot be reached (a
 * network partition, the server away) could not: the bindings were left, with a warning to remove
 * them by hand, and once the path was back RabbitMQ went on routing their messages into a queue
 * nothing reads, without bound (fault audit, point 173). They are now unbound at the next connect
 * of a broker to that server.
 */
describe('kind: amqp, a declared queue removed by a reload while the server cannot be reached', () => {
  const rabbit = useRabbit(() => sharedRabbit(), { proxy: true });
  const queue = `eg-orphan-${process.pid}`;

  const config = (queues: string) => `
version: 1
admin: { port: 0 }
brokers:
  rabbit:
    kind: amqp
    url: "${rabbit.proxiedUrl}"
    connectTimeoutMs: 1000
    queues: { ${queues} }
`;
  const gw = useGateway(() => config(`${queue}: { bindings: [orphan.a] }, kept: { bindings: [orphan.kept] }`));

  it('unbinds the removed queue once the server is reached again', async () => {
    await gw.waitForLog((l) => l.msg === 'amqp connected', 60000);
    await pikaPublish(rabbit, 'amq.topic', 'orphan.a', [{ body: '{"n":1}' }]);
    await eventually(async () => assert.equal(await pikaQueueDepth(rabbit, queue), 1), 15000);

    rabbit.proxy.cutAndHold();
    await gw.waitForLog((l) => l.msg === 'amqp connection lost; reconnecting', 15000);
    const from = gw.logs.length;
    const line = await gw.reconfigure(config('kept: { bindings: [orphan.kept] }'));
    assert.equal(line.msg, 'config reloaded', JSON.stringify(line));
    await gw.waitForLog((l) => /^amqp bindings a reload dropped/.test(l.msg) && l.queue === queue, 15000, from);

    rabbit.proxy.release();
    await gw.waitForLog((l) => l.msg === 'amqp queue unbound from a binding a reload dropped' && l.queue === queue && l.routingKey === 'orphan.a', 30000, from);
    // Nothing more goes to the queue nothing reads; what it held stays.
    await pikaPublish(rabbit, 'amq.topic', 'orphan.a', [{ body: '{"n":2}' }]);
    await pikaPublish(rabbit, 'amq.topic', 'orphan.kept', [{ body: '{"n":3}' }]);
    await eventually(async () => assert.equal(await pikaQueueDepth(rabbit, 'kept'), 1), 15000);
    assert.equal(await pikaQueueDepth(rabbit, queue), 1);
  });
});
