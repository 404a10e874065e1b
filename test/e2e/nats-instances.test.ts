import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { WsClient } from '../helpers/clients.js';
import { startGateway, type RunningGateway } from '../helpers/gateway.js';
import { RawNats } from '../helpers/peers.js';
import { startNats, type MessageServer } from '../helpers/servers.js';

// A per-instance route's JetStream consumer is named after its group, `eventgate-<route>-<instance>`,
// with `.` and `_` both written `_`: instances `web.0` and `web_0` read through one consumer, and
// each one's WebSocket clients got only part of the messages (spec-checklist 3105).
describe('kind: nats, two instances whose ids differ only in `.` and `_`', () => {
  let nats: MessageServer;
  let peer: RawNats;
  const gateways: RunningGateway[] = [];

  before(async () => {
    nats = await startNats();
    const yaml = `
version: 1
brokers:
  nats:
    kind: nats
    servers: ${nats.url}
    streams:
      FEED: { subjects: ["feed.>"] }
listeners:
  ws: { kind: websocket, port: 0 }
routes:
  - name: live
    from: { broker: nats, topic: feed.prices }
    to: { listener: ws, path: /live }
`;
    gateways.push(...(await Promise.all(['web.0', 'web_0'].map((id) => startGateway(yaml, { env: { EVENTGATE_INSTANCE_ID: id } })))));
    await Promise.all(gateways.map((gw) => gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'live', 15000)));
    peer = await RawNats.connect(nats);
  });
  after(async () => {
    peer?.close();
    await Promise.all(gateways.map((gw) => gw.stop()));
    await nats?.stop();
  });

  it("reads through a consumer of each instance's own: every client of each instance gets every message, in order", async () => {
    const clients = await Promise.all(gateways.map((gw) => WsClient.connect(gw.url('ws', '/live', 'ws'))));
    try {
      for (let n = 1; n <= 6; n++) await peer.jsPublish('feed.prices', JSON.stringify({ n }));
      for (const client of clients) {
        const got: unknown[] = [];
        for (let n = 1; n <= 6; n++) got.push(await client.next(10000));
        assert.deepEqual(
          got,
          [1, 2, 3, 4, 5, 6].map((n) => ({ n })),
        );
      }
      const names = ((await peer.jsApi('$JS.API.CONSUMER.NAMES.FEED', {})) as { consumers: string[] }).consumers.sort();
      // The id of letters, digits and `-` only would keep its name; these two get their hash's.
      assert.equal(names.length, 2, JSON.stringify(names));
      for (const name of names) assert.match(name, /^eventgate-live-web_0-[0-9a-f]{10}$/);
    } finally {
      for (const c of clients) c.close();
    }
  });
});
