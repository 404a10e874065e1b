import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { eventually, useGateway } from '../helpers/gateway.js';
import { readyz } from '../helpers/outage.js';
import { startNats, type MessageServer } from '../helpers/servers.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { tempDir } from '../helpers/reaper.js';

/** Debian's chromium: no download, a fresh profile each run (as sse-browser.test.ts). */
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];

/**
 * A browser's EventSource on a stream fed from a JetStream subject: after a cut connection it
 * reconnects with the last id it saw (`0:<stream sequence>`) and gets what the stream stored
 * meanwhile. Before, it got nothing of that: only memory and Kafka topics were read again.
 */
describe('Server-Sent Events from NATS JetStream in headless Chromium (EventSource)', () => {
  let nats: MessageServer;
  let proxy: TcpProxy;
  let context: BrowserContext;
  let page: Page;
  let profile: string;
  before(async () => {
    nats = await startNats();
  });
  after(async () => {
    await context?.close();
    if (profile) rmSync(profile, { recursive: true, force: true });
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
    profile = tempDir('eventgate-chromium');
    context = await chromium.launchPersistentContext(profile, { executablePath: '/usr/bin/chromium', headless: true, args: CHROMIUM_ARGS });
    page = context.pages()[0] ?? (await context.newPage());
    await page.goto(`http://127.0.0.1:${proxy.port}/`);
  });

  const published: string[] = [];
  const publish = async (n: number) => {
    const res = await fetch(gw.url('api', '/orders'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ n }) });
    assert.equal(res.status, 200);
    published.push(`0:${((await res.json()) as { deliveries: { offset: string }[] }).deliveries[0]!.offset}`);
  };
  const seen = () => page.evaluate(() => (globalThis as any).seen as { id: string; data: string }[]);
  const waitFor = (count: number) =>
    page
      .waitForFunction((n) => (globalThis as any).seen.length >= n, count, { timeout: 15000 })
      .catch(async (err: Error) => {
        throw new Error(`the page saw ${JSON.stringify(await seen())}, expected ${count} events: ${err.message}`);
      });

  it('resumes after a cut connection with what the stream stored meanwhile, no gap and no duplicate', { timeout: 90_000 }, async () => {
    await page.evaluate(() => {
      const g = globalThis as any;
      g.seen = [];
      g.opens = 0;
      const es = new g.EventSource('/orders/stream');
      es.onmessage = (e: any) => g.seen.push({ id: e.lastEventId, data: e.data });
      es.addEventListener('eventgate.resume', (e: any) => g.seen.push({ id: 'notice', data: e.data }));
      es.onopen = () => g.opens++;
      g.es = es;
    });
    await page.waitForFunction(() => (globalThis as any).opens === 1);
    await publish(1);
    await publish(2);
    await waitFor(2);

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
      published,
    );
    await page.evaluate(() => (globalThis as any).es.close());
  });
});
