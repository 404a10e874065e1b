import { describe, it } from 'node:test';
import { useGateway } from '../helpers/gateway.js';
import { lateAnswerRoutes, storedOnceDespiteLateAnswer } from '../helpers/late-answer.js';
import { pikaConsume, pikaQueueDepth } from '../helpers/peers.js';
import { useRabbit } from '../helpers/rabbit.js';
import { sharedRabbit } from '../helpers/shared-rabbit.js';

/**
 * A consume route (memory → amqp) whose publisher confirm comes after `ackTimeoutMs`: RabbitMQ
 * routed the message to its queue, the proxy holds the basic.ack. The route's try fails at the
 * deadline and the route waits for that confirm (amqplib still delivers it) before trying again:
 * it comes once the proxy lets it through, so the message is delivered and not published a second
 * time. Before, the route published it again 100 ms after the deadline: two copies in the queue
 * (docs/spec-checklist.md, point 62).
 */
describe('amqp: a consume route whose confirm comes late', () => {
  const rabbit = useRabbit(() => sharedRabbit(), { queues: [['late-seen', 'amq.topic', 'late.out']], proxy: true });

  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  mem: { kind: memory }
  rabbit: { kind: amqp, url: "${rabbit.proxiedUrl}", ackTimeoutMs: 1000 }
${lateAnswerRoutes('rabbit', 'late.out')}`,
  );

  it('waits for the late confirm of its try: the message is published once', () =>
    storedOnceDespiteLateAnswer(gw, rabbit.proxy, 'rabbit', {
      count: () => pikaQueueDepth(rabbit, 'late-seen'),
      // Everything in the queue, until none came for 2 s.
      bodies: async () => (await pikaConsume(rabbit, 'late-seen', 10, 2)).map((b) => (JSON.parse(b.body) as { n: number }).n),
    }));
});
