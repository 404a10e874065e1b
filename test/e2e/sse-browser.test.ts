import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { useGateway } from '../helpers/gateway.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { tempDir } from '../helpers/reaper.js';

/** Debian's chromium: no download, a fresh profile each run. */
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];

interface Seen {
  type: string;
  id: string;
  data: string;
}

describe('Server-Sent Events in headless Chromium (EventSource)', () => {
  let proxy: TcpProxy;
  let context: BrowserContext;
  let page: Page;
  let profile: string;
  after(async () => {
    await context?.close();
    if (profile) rmSync(profile, { recursive: true, force: true });
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
    profile = tempDir('eventgate-chromium');
    context = await chromium.launchPersistentContext(profile, { executablePath: '/usr/bin/chromium', headless: true, args: CHROMIUM_ARGS });
    page = context.pages()[0] ?? (await context.newPage());
    // Any page of the gateway's origin will do: the stream is then same-origin.
    await page.goto(`http://127.0.0.1:${proxy.port}/`);
  });

  const publish = async (n: number) => {
    const res = await fetch(gw.url('api', '/orders'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ n }) });
    assert.equal(res.status, 200);
  };
  const seen = () => page.evaluate(() => (globalThis as any).seen as Seen[]);
  const waitFor = (count: number) =>
    page
      .waitForFunction((n) => (globalThis as any).seen.length >= n, count, { timeout: 15000 })
      .catch(async (err: Error) => {
        throw new Error(`the page saw ${JSON.stringify(await seen())}, expected ${count} events: ${err.message}`);
      });

  it('receives each message as an event named by its CloudEvent type, and resumes after a cut connection with no gap and no duplicate', async () => {
    await page.evaluate(() => {
      const g = globalThis as any;
      g.seen = [];
      g.opens = 0;
      const es = new g.EventSource('/orders/stream');
      es.addEventListener('order.placed', (e: any) => g.seen.push({ type: e.type, id: e.lastEventId, data: e.data }));
      es.onopen = () => g.opens++;
      g.es = es;
    });
    await page.waitForFunction(() => (globalThis as any).opens === 1);
    await publish(1);
    await publish(2);
    await waitFor(2);

    // The connection drops; messages published meanwhile wait in the memory topic's retention.
    proxy.cutAndHold();
    await page.waitForFunction(() => (globalThis as any).es.readyState === 0);
    await publish(3);
    await publish(4);
    proxy.release();
    await page.waitForFunction(() => (globalThis as any).opens === 2, undefined, { timeout: 15000 });
    await publish(5);
    await waitFor(5);

    const events = await seen();
    assert.deepEqual(
      events.map((e) => JSON.parse(e.data).n),
      [1, 2, 3, 4, 5],
    );
    assert.deepEqual(
      events.map((e) => e.id),
      ['0:0', '0:1', '0:2', '0:3', '0:4'],
    );
    assert.ok(events.every((e) => e.type === 'order.placed'));
    await page.evaluate(() => (globalThis as any).es.close());
  });
});
