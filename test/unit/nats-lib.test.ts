import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { failConnectWhenClosed, lib, loadNats, PROTOCOL_MODULE } from '../../src/kinds/brokers/nats/lib.js';
import { PULL_MESSAGES } from '../../src/kinds/brokers/nats/replay.js';

/**
 * The patch of nats.js' private protocol handler (kinds/brokers/nats/lib.ts): a connect the server
 * closed with an error before its first PONG fails at once. The module is not nats.js' API: a
 * release without it must leave the broker starting as the library behaves, not fail its start.
 */
describe('nats lib: failConnectWhenClosed', () => {
  it('a nats.js without the private module is left as it is: no patch, no failure', async () => {
    assert.equal(await failConnectWhenClosed('nats/lib/nats-base-client/no-such-module.js'), false);
  });

  it('brokers loading nats.js together patch its handler once', async () => {
    await Promise.all([loadNats(), loadNats()]);
    assert.ok(lib?.connect, 'nats.js loaded');
    const { ProtocolHandler } = (await import(PROTOCOL_MODULE)) as { ProtocolHandler: { prototype: { disconnected: unknown } } };
    const patched = ProtocolHandler.prototype.disconnected;
    assert.equal(await failConnectWhenClosed(PROTOCOL_MODULE), true);
    assert.equal(ProtocolHandler.prototype.disconnected, patched, 'wrapped a second time');
  });
});

/**
 * A JetStream replay's pull is bounded in bytes, and nats.js then asks the server for a number of
 * messages of its own choosing; when that many fit, the server ends the pull without a status and
 * nats.js' fetch waits for its expiry (30 s per pull). The replay leaves the pull after that many
 * (nats/replay.ts' PULL_MESSAGES): a nats.js that asks another number must change it too.
 */
describe('nats lib: the messages nats.js asks of a pull bounded in bytes', () => {
  it('are the PULL_MESSAGES a replay leaves its pull after', async () => {
    // nats.js' own option parsing (it reads nothing of the consumer it belongs to).
    const { PullConsumerMessagesImpl } = await import('nats/lib/jetstream/consumer.js');
    const { max_bytes, max_messages } = PullConsumerMessagesImpl.prototype.parseOptions.call({}, { max_bytes: 1024 * 1024, expires: 30_000 });
    assert.equal(max_bytes, 1024 * 1024);
    assert.equal(max_messages, PULL_MESSAGES);
  });
});
