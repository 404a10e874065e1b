import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { eventsAcrossACut, openBrowserPage, type BrowserPage } from '../helpers/browser.js';
import { useGateway } from '../helpers/gateway.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { fetch } from '../helpers/http.js';
import { splitId, untagged } from '../helpers/sse.js';

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
  api: { kind: http, port: 0, events: { retryMs: 200, maxBufferedBytes: 65536 }, cors: { origins: '*' } }
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
    // The ids as the page's EventSource kept them (and sent back as Last-Event-ID across the cut): the tag of the route's source, then the position.
    const [tag] = splitId(events[0]!.id).tags;
    assert.deepEqual(
      events.map((e) => e.id),
      ['0:0', '0:1', '0:2', '0:3', '0:4'].map((p) => `${tag}~${p}`),
    );
    assert.ok(events.every((e) => e.type === 'order.placed'));
    // A new EventSource (a reloaded page) gives the id it kept in the query: read back as it was sent.
    await browser.page.evaluate((id) => {
      const g = globalThis as any;
      g.resumed = [];
      g.es = new g.EventSource(`/orders/stream?lastEventId=${encodeURIComponent(id)}`);
      g.es.addEventListener('order.placed', (e: any) => g.resumed.push({ id: e.lastEventId, n: JSON.parse(e.data).n }));
    }, events[2]!.id);
    const resumed = await browser.page
      .waitForFunction(() => (globalThis as any).resumed.length >= 2 && (globalThis as any).resumed, undefined, { timeout: 15_000 })
      .then((h) => h.jsonValue() as Promise<{ id: string; n: number }[]>)
      .finally(() => browser.page.evaluate(() => (globalThis as any).es.close()));
    assert.deepEqual(resumed, [
      { id: `${tag}~0:3`, n: 4 },
      { id: `${tag}~0:4`, n: 5 },
    ]);
  });

  it('catches up after a cut whose replay is larger than events.maxBufferedBytes: the replay is paced by its reading, not cut off on every reconnect', async () => {
    const { page } = browser;
    const pad = 'x'.repeat(10_000);
    const post = async (n: number) => {
      const res = await fetch(gw.url('api', '/orders'), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ n, pad }) });
      assert.equal(res.status, 200);
    };
    await page.evaluate(() => {
      const g = globalThis as any;
      g.got = [];
      g.opens = 0;
      g.es = new g.EventSource('/orders/stream');
      g.es.addEventListener('order.placed', (e: any) => g.got.push({ n: JSON.parse(e.data).n, id: e.lastEventId }));
      g.es.onopen = () => g.opens++;
    });
    try {
      await page.waitForFunction(() => (globalThis as any).opens === 1);
      await post(0);
      await page.waitForFunction(() => (globalThis as any).got.length === 1);
      proxy.cutAndHold();
      await page.waitForFunction(() => (globalThis as any).es.readyState === 0);
      // 30 events of 10 KB: a replay of 300 KB, past the 64 KB bound.
      for (let n = 1; n <= 30; n++) await post(n);
      const from = gw.logs.length;
      proxy.release();
      const got = await page
        .waitForFunction(() => (globalThis as any).got.length >= 31 && (globalThis as any).got, undefined, { timeout: 30_000 })
        .then((h) => h.jsonValue() as Promise<{ n: number; id: string }[]>)
        .catch(async (err: Error) => {
          const seen = await page.evaluate(() => ({ got: (globalThis as any).got.length, opens: (globalThis as any).opens }));
          throw new Error(`the page got ${seen.got} of 31 events over ${seen.opens} connections; cut off: ${gw.logs.slice(from).filter((l) => /too slow/.test(l.msg)).length} times: ${err.message}`);
        });
      assert.deepEqual(
        got.map((e) => e.n),
        Array.from({ length: 31 }, (_, n) => n),
      );
      const [tag] = splitId(got[0]!.id).tags;
      const first = Number(untagged(got[0]!.id).split(':')[1]);
      assert.deepEqual(
        got.map((e) => e.id),
        got.map((_, i) => `${tag}~0:${first + i}`),
      );
      assert.deepEqual(
        gw.logs.slice(from).filter((l) => /too slow/.test(l.msg)),
        [],
      );
    } finally {
      await page.evaluate(() => (globalThis as any).es.close());
    }
  });

  it('lets a page on another origin POST a binary-mode CloudEvent (its ce-* headers pass the preflight) and read the problem of a bad one, and of a path no route uses', async () => {
    // The page's origin is the proxy's; the gateway's own port is another origin.
    const answers = await browser.page.evaluate(
      async ([url, unknown]) => {
        const post = async (headers: Record<string, string>, to = url) => {
          try {
            const res = await fetch(to, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: '{"n":1}' });
            return { status: res.status, body: await res.json() };
          } catch (err) {
            return { status: 0, body: String(err) };
          }
        };
        const event = { 'ce-specversion': '1.0', 'ce-source': '/page', 'ce-type': 'order.placed', 'ce-tenant': 'acme' };
        return [await post({ ...event, 'ce-id': 'page-1' }), await post(event), await post({ ...event, 'ce-id': 'page-2' }, unknown)];
      },
      [gw.url('api', '/orders'), gw.url('api', '/ordres')],
    );
    assert.equal(answers[0]!.status, 200, JSON.stringify(answers[0]));
    assert.equal(answers[0]!.body.deliveries.length, 1);
    assert.equal(answers[1]!.status, 400, JSON.stringify(answers[1]));
    assert.equal(answers[1]!.body.code, 'EG_CLOUDEVENT_INVALID');
    assert.match(answers[1]!.body.detail, /'id' is missing/);
    // Its preflight was answered, so the page reads the 404 rather than 'Failed to fetch'.
    assert.equal(answers[2]!.status, 404, JSON.stringify(answers[2]));
    assert.equal(answers[2]!.body.code, 'EG_NOT_FOUND');
  });
});
