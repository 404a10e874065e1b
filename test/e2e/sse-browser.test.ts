import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { eventsAcrossACut, openBrowserPage, type BrowserPage } from '../helpers/browser.js';
import { useGateway } from '../helpers/gateway.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { fetch } from '../helpers/http.js';

describe('Server-Sent Events in headless Chromium (EventSource)', () => {
  let proxy: TcpProxy;
  let browser: BrowserPage;
  after(async () => {
    await browser?.close();
    await proxy?.stop();
  });

  const gw = useGateway(`
version: 1
brokers:
  local: { kind: memory }
listeners:
  api: { kind: http, port: 0, events: { retryMs: 200 } }
routes:
  - name: publish
    from: { listener: api, path: /orders }
    through:
      - cloudevent: { source: /shop, type: order.placed }
    to: { broker: local, topic: orders }
  - name: stream
    from: { broker: local, topic: orders }
    to: { listener: api, path: /orders/stream }
`);
  before(async () => {
    // The browser reaches the gateway through a proxy that can cut its connection, as a network would.
    proxy = await TcpProxy.start(gw.port('api'));
    browser = await openBrowserPage();
    // Any page of the gateway's origin will do: the stream is then same-origin.
    await browser.page.goto(`http://127.0.0.1:${proxy.port}/`);
  });

  const publish = async (n: number) => {
    const res = await fetch(gw.url('api', '/orders'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ n }) });
    assert.equal(res.status, 200);
  };
  it('receives each message as an event named by its CloudEvent type, and resumes after a cut connection with no gap and no duplicate', async () => {
    const events = await eventsAcrossACut(browser.page, proxy, '/orders/stream', 'order.placed', publish);
    assert.deepEqual(
      events.map((e) => JSON.parse(e.data).n),
      [1, 2, 3, 4, 5],
    );
    assert.deepEqual(
      events.map((e) => e.id),
      ['0:0', '0:1', '0:2', '0:3', '0:4'],
    );
    assert.ok(events.every((e) => e.type === 'order.placed'));
  });
});
