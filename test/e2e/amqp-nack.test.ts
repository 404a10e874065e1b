import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { post } from '../helpers/clients.js';
import { eventually, useGateway } from '../helpers/gateway.js';
import { readyz } from '../helpers/outage.js';
import { pikaConsume } from '../helpers/peers.js';
import { useRabbit } from '../helpers/rabbit.js';
import { sharedRabbit } from '../helpers/shared-rabbit.js';

/**
 * RabbitMQ nacks a publish when one queue it was routed to refuses it (here `x-overflow:
 * reject-publish` at the queue's `x-max-length`), while the other queues bound for it keep their
 * copies. The 503 said only "refused the message (basic.nack)", which reads as "nothing was
 * delivered": a client sending it again put a second copy in the other queue without being told.
 */
describe('kind: amqp, a publish one of its queues refuses (basic.nack)', () => {
  const rabbit = useRabbit(() => sharedRabbit());
  const suffix = `${process.pid}`;
  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  rb:
    kind: amqp
    url: ${rabbit.url}
    exchange: { name: eg-nack-${suffix}, type: topic }
    queues:
      eg-nack-tiny-${suffix}: { bindings: [n.#], arguments: { x-max-length: 1, x-overflow: reject-publish } }
      eg-nack-all-${suffix}: { bindings: [n.#] }
listeners:
  api: { kind: http, port: 0 }
routes:
  - { name: out, from: { listener: api, path: /out }, to: { broker: rb, topic: n.x } }
`,
  );

  it('answers 503 saying that other queues bound for the message may hold it', { timeout: 90_000 }, async () => {
    await eventually(async () => assert.equal((await readyz(gw)).status, 200), 30_000);
    const first = await post(gw.url('api', '/out'), { n: 1 });
    assert.equal(first.status, 200, first.text);
    const second = await post(gw.url('api', '/out'), { n: 2 });
    assert.equal(second.status, 503, second.text);
    const detail = (JSON.parse(second.text) as { detail: string }).detail;
    assert.match(detail, /basic\.nack: a queue it was routed to refused it/);
    assert.match(detail, /other queues bound for it may hold it/);
    // What the detail says: the queue that did not refuse it holds both.
    const held = await pikaConsume(rabbit, `eg-nack-all-${suffix}`, 2);
    assert.deepEqual(
      held.map((m) => JSON.parse(m.body).n),
      [1, 2],
    );
  });
});
