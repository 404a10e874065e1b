import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { failConnectWhenClosed, lib, loadNats, PROTOCOL_MODULE } from '../../src/kinds/brokers/nats/lib.js';

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
