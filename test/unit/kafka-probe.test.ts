import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { KafkaBroker } from '../../src/kinds/brokers/kafka/broker.js';
import { createLogger } from '../../src/log.js';
import { eventually } from '../helpers/gateway.js';
import { kafkaSettings } from '../helpers/kafka.js';

/**
 * The Kafka health probe's fallback (anyBrokerAnswers), driven on a broker that is built and not
 * started (no producer connecting beside it), against servers that take connections and never
 * answer: a broker dropping packets looks the same to it, each ask waits out a timeout.
 */
describe('kafka health probe: asking the other brokers', () => {
  const servers: Server[] = [];
  const sockets = new Set<Socket>();
  /** Connections each server holds now. */
  const open: number[] = [];
  let mostServersAtOnce = 0;

  before(async () => {
    for (let i = 0; i < 4; i++) {
      open.push(0);
      const server = createServer((socket) => {
        sockets.add(socket);
        open[i]!++;
        mostServersAtOnce = Math.max(mostServersAtOnce, open.filter((n) => n > 0).length);
        socket.on('close', () => open[i]!--);
        socket.on('error', () => undefined);
        // Reads (and drops) what comes, so the client's end is seen and closes the socket here too.
        socket.resume();
      });
      server.listen(0, '127.0.0.1');
      await once(server, 'listening');
      servers.push(server);
    }
  });
  after(async () => {
    for (const socket of sockets) socket.destroy();
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  });

  it('asks every broker at once, and leaves no connection open (2101)', async () => {
    // The probe's request timeout (ackTimeoutMs, at least 1 s): how long each server is waited for.
    const addresses = servers.map((s) => `127.0.0.1:${(s.address() as AddressInfo).port}`);
    const settings = kafkaSettings(addresses.join(','), { ackTimeoutMs: 1000 }, { connectionTimeoutMs: 500 });
    const broker = new KafkaBroker('silent', settings, { logger: createLogger('silent') });
    try {
      const asking = (broker as unknown as { anyBrokerAnswers(): Promise<boolean> }).anyBrokerAnswers();
      // In turn, each server would hold the one connection alone until its request timeout.
      await eventually(() => assert.equal(mostServersAtOnce, 4, 'the four servers held a connection at once'), 10000);
      assert.equal(await asking, false, 'none answered');
      await eventually(() => assert.deepEqual(open, [0, 0, 0, 0], 'every connection closed'), 10000);
    } finally {
      await broker.stop();
    }
  });

  it('closes the asks in flight at stop, not when their request timeout ends (2103)', async () => {
    // A request timeout (ackTimeoutMs) of a minute: each ask, unanswered, would hold its socket that long.
    const addresses = servers.map((s) => `127.0.0.1:${(s.address() as AddressInfo).port}`);
    const settings = kafkaSettings(addresses.join(','), { ackTimeoutMs: 60000 }, { connectionTimeoutMs: 500 });
    const broker = new KafkaBroker('silent', settings, { logger: createLogger('silent') });
    const asking = (broker as unknown as { anyBrokerAnswers(): Promise<boolean> }).anyBrokerAnswers();
    await eventually(() => assert.deepEqual(open, [1, 1, 1, 1], 'each server holds an ask'), 10000);
    await broker.stop();
    // Every server sees its connection end (an ask left alone would hold it a minute), and the asks settle.
    await eventually(() => assert.deepEqual(open, [0, 0, 0, 0], 'no connection left after stop'), 10000);
    assert.equal(await asking, false);
  });
});
