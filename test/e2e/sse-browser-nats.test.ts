import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { eventsAcrossACut, openBrowserPage, type BrowserPage } from '../helpers/browser.js';
import { splitId, untagged } from '../helpers/sse.js';
import { afterGateways, eventually, useGateway } from '../helpers/gateway.js';
import { readyz } from '../helpers/outage.js';
import { startNats, type MessageServer } from '../helpers/servers.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { fetch } from '../helpers/http.js';

/**
 * A browser's EventSource on a stream fed from a JetStream subject: after a cut connection it
 * reconnects with the last id it saw (`<tag>~0:<stream sequence>`) and gets what the stream stored
 * meanwhile. Before, it got nothing of that: only memory and Kafka topics were read again.
 */
describe('Server-Sent Events from NATS JetStream in headless Chromium (EventSource)', () => {
  let nats: MessageServer;
  let proxy: TcpProxy;
  let browser: BrowserPage;
  before(async () => {
    nats = await startNats();
  });
  afterGateways(async () => {
    await browser?.close();
    await proxy?.stop();
    await nats?.stop();
  });

  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  nats: { kind: nats, servers: ${nats.url}, streams: { ORDERS: { subjects: ["orders.>"] } } }
listeners:
  api: { kind: http, port: 0, events: { retryMs: 200 } }
routes:
  - name: publish
    from: { listener: api, path: /orders }
    to: { broker: nats, topic: orders.placed }
  - name: stream
    from: { broker: nats, topic: "orders.*" }
    to: { listener: api, path: /orders/stream }
`,
  );
  before(async () => {
    // The gateway is ready before its brokers are: a publish meanwhile is a 503 (the stream not declared yet).
    await eventually(async () => assert.equal((await readyz(gw)).status, 200), 30_000);
    // The browser reaches the gateway through a proxy that can cut its connection, as a network would.
    proxy = await TcpProxy.start(gw.port('api'));
    browser = await openBrowserPage();
    await browser.page.goto(`http://127.0.0.1:${proxy.port}/`);
  });

  const published: string[] = [];
  const publish = async (n: number) => {
    const res = await fetch(gw.url('api', '/orders'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ n }) });
    assert.equal(res.status, 200);
    published.push(`0:${((await res.json()) as { deliveries: { offset: string }[] }).deliveries[0]!.offset}`);
  };
  it('resumes after a cut connection with what the stream stored meanwhile, no gap and no duplicate', { timeout: 90_000 }, async () => {
    const events = await eventsAcrossACut(browser.page, proxy, '/orders/stream', 'message', publish);
    assert.deepEqual(
      events.map((e) => JSON.parse(e.data).n),
      [1, 2, 3, 4, 5],
    );
    assert.deepEqual(
      events.map((e) => untagged(e.id)),
      published,
    );
    assert.equal(new Set(events.map((e) => splitId(e.id).tags[0])).size, 1, 'one tag: one source');
  });
});
