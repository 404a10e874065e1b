import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Page, Route } from 'playwright-core';
import { openBrowserPage, type BrowserPage } from '../helpers/browser.js';
import { post, WsClient } from '../helpers/clients.js';
import { repoRoot, useGateway } from '../helpers/gateway.js';
import { fetch } from '../helpers/http.js';
import { openStream } from '../helpers/sse.js';

const TOKEN = 'dashboard-token-42';
const CONFIG = `
version: 1
admin:
  port: 0
  token: ${TOKEN}
brokers:
  local: { kind: memory }
listeners:
  api: { kind: http, port: 0 }
  push: { kind: websocket, port: 0 }
routes:
  - name: orders-in
    from: { listener: api, path: /orders }
    through:
      - validate: { schema: { type: object, required: [qty], properties: { qty: { type: integer, minimum: 1 } } } }
    to: { broker: local, topic: orders }
  - name: orders-out
    from: { broker: local, topic: orders }
    to: { listener: push, path: /ws/orders, format: envelope }
  - name: orders-stream
    from: { broker: local, topic: orders }
    to: { listener: api, path: /orders/stream }
  - name: orders-hook
    from: { listener: api, path: /hook }
    to: [{ http: { url: "http://crm:pw@127.0.0.1:9/orders?key=k" } }, { broker: local, topic: hooked }]
`;

describe('admin dashboard (GET /) in headless Chromium', () => {
  let browser: BrowserPage;
  let page: Page;
  const problems: string[] = [];
  const cell = (route: string, col: string) => `tr[data-route="${route}"] td[data-col="${col}"]`;
  const waitForText = (selector: string, text: string) =>
    page
      .waitForFunction(([s, t]) => (globalThis as any).document.querySelector(s)?.textContent === t, [selector, text], { timeout: 8000 })
      .catch(async (err: Error) => {
        throw new Error(`${selector} never showed '${text}' (it shows '${await page.textContent(selector).catch(() => null)}'): ${err.message}`);
      });

  before(async () => {
    browser = await openBrowserPage({ viewport: { width: 1440, height: 1100 } });
    page = browser.page;
    // Console errors include Content-Security-Policy violations: the page must run under its own policy.
    page.on('console', (m) => {
      // The API's 401s before the token is given are expected; any other refused load is not (Chromium
      // asked for /favicon.ico, a 401 with a token set, on every load, until the page named its icon).
      const at = m.location().url ? new URL(m.location().url).pathname : '';
      if (m.type() === 'error' && !(m.text().includes('401') && at.startsWith('/admin/'))) problems.push(`${m.text()} (${at})`);
    });
    page.on('pageerror', (e) => problems.push(e.message));
  });
  after(async () => {
    await browser?.close();
  });
  const gw = useGateway(CONFIG);

  it('is served without the token, with a strict Content-Security-Policy', async () => {
    const res = await fetch(`${gw.adminUrl}/`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/html/);
    const csp = res.headers.get('content-security-policy') ?? '';
    assert.match(csp, /script-src 'sha256-[A-Za-z0-9+/=]+'/);
    assert.ok(!csp.includes('unsafe-inline'));
    assert.match(await res.text(), /<title>eventgate<\/title>/);
  });

  it('asks for the admin token, then shows the routes, listeners, brokers and consumer lag', async () => {
    await page.goto(`${gw.adminUrl}/`);
    await page.waitForSelector('#login.show', { timeout: 8000 });
    await page.fill('#login-token', TOKEN);
    await page.click('#login button[type=submit]');
    await page.waitForSelector('tr[data-route="orders-in"]', { timeout: 8000 });
    assert.equal(await page.isVisible('#login'), false);
    await waitForText(cell('orders-in', 'received'), '0');
    assert.ok(await page.isVisible('tr[data-route="orders-out"]'));
    // A webhook target is named by its endpoint, as /admin/status names it (it read "undefined undefined": spec-checklist 2263).
    assert.equal(await page.textContent('tr[data-route="orders-hook"] .route-path'), 'api /hook → http://127.0.0.1:9/orders, local/hooked');
    assert.match((await page.textContent('#listeners'))!, /api.*http.*bound/s);
    assert.match((await page.textContent('#listeners'))!, /push.*websocket.*bound/s);
    assert.match((await page.textContent('#brokers'))!, /local.*memory.*connected/s);
    // Consumer crashes beside the errors; group rejoins are a kafka broker's count only.
    assert.equal(await page.textContent('#brokers tr[data-key="local"] td[data-col="crashes"]'), '0');
    assert.equal(await page.textContent('#brokers tr[data-key="local"] td[data-col="rejoins"]'), '–');
    assert.match((await page.textContent('#lag'))!, /orders-out.*local \(memory\).*orders/s);
    assert.equal(await page.textContent('#ready'), 'ready', `title: ${await page.getAttribute('#ready', 'title')}`);
    const status = (await (await fetch(`${gw.adminUrl}/admin/status`, { headers: { authorization: `Bearer ${TOKEN}` } })).json()) as { version: string };
    const version = status.version;
    assert.match(version, /^[0-9a-f]{12}$/);
    assert.equal(await page.textContent('#card-version'), version);
  });

  it('updates the counters after traffic', async () => {
    const client = await WsClient.connect(gw.url('push', '/ws/orders', 'ws'));
    for (const qty of [1, 2, 3]) assert.equal((await post(gw.url('api', '/orders'), { qty })).status, 200);
    assert.equal((await post(gw.url('api', '/orders'), { qty: 0 })).status, 400);
    await waitForText(cell('orders-in', 'received'), '4');
    await waitForText(cell('orders-in', 'delivered'), '3');
    await waitForText(cell('orders-in', 'invalid'), '1');
    await waitForText(cell('orders-out', 'delivered'), '3');
    // The average latency is the last minute's: it still shows two polls after the last message (it
    // was the last refresh's, '–' on every poll with no message, so a route with a message every few
    // seconds hardly ever showed one).
    for (let polls = 0; polls < 2; polls++) await page.waitForResponse((r) => new URL(r.url()).pathname === '/admin/stats', { timeout: 8000 });
    assert.match((await page.textContent(cell('orders-in', 'latency'))) ?? '', /^\d+\.\d\d$/);
    await waitForText('#card-clients', '1');
    // An http listener's `clients` in /admin/stats are its event streams: the card counted them as
    // WebSocket clients (1 client and 2 streams showed 3). Read with sse.js' openStream, whose
    // fetch gives the body as it comes and is aborted by close(); the helpers' fetch reads a body
    // to its end, which an event stream never reaches, so a case awaiting it hung.
    const streams = [await openStream(gw.url('api', '/orders/stream')), await openStream(gw.url('api', '/orders/stream'))];
    try {
      // The listener row and the cards are drawn from the same poll.
      await waitForText('#listeners tr[data-key="api"] td[data-col="clients"]', '2');
      assert.equal(await page.textContent('#card-clients'), '1');
      assert.equal(await page.textContent('#card-streams'), 'and 2 event streams');
    } finally {
      for (const s of streams) s.close();
    }
    client.close();
  });

  // A tab in the background polls once a minute (Chromium's timer throttling): the average was
  // over the last 60 polls, up to an hour of them (spec-checklist 4865).
  it("averages the latency over the last minute by the server's clock, not over the last 60 polls", async () => {
    assert.match((await page.textContent(cell('orders-in', 'latency'))) ?? '', /^\d+\.\d\d$/);
    // Polls answered as if 61 s had passed with no message since: the minute holds none.
    const later = async (route: Route) => {
      const res = await route.fetch();
      const body = (await res.json()) as { at: number };
      await route.fulfill({ response: res, json: { ...body, at: body.at + 61_000 } });
    };
    await page.route('**/admin/stats', later);
    try {
      await waitForText(cell('orders-in', 'latency'), '–');
    } finally {
      await page.unroute('**/admin/stats', later);
    }
  });

  it('shows a live tap of the chosen route, with outcomes and validation errors', async () => {
    await page.selectOption('#tap-route', 'orders-in');
    await page.click('#tap-start');
    await page.waitForFunction(() => (globalThis as any).document.querySelector('#tap-status')?.textContent?.startsWith('tapping orders-in'), null, { timeout: 8000 });
    await post(gw.url('api', '/orders'), { qty: 7 });
    await post(gw.url('api', '/orders'), { qty: -1 });
    await page.waitForSelector('#tap-events details[data-outcome="invalid"]', { timeout: 8000 });
    assert.match((await page.textContent('#tap-events details[data-outcome="invalid"] summary'))!, /\/qty: must be >= 1/);
    assert.match((await page.textContent('#tap-events details[data-outcome="delivered"] summary'))!, /"qty":7/);
  });

  it('stops polling while the token it holds is refused, so a mistyped or rotated token does not get the address locked out (429)', async () => {
    const tab = await page.context().newPage();
    try {
      const wrong: string[] = [];
      tab.on('request', (r) => {
        if (r.headers().authorization === 'Bearer wrong') wrong.push(new URL(r.url()).pathname);
      });
      await tab.clock.install();
      await tab.goto(`${gw.adminUrl}/#token=wrong`);
      await tab.waitForSelector('#login.show', { timeout: 8000 });
      assert.equal(await tab.textContent('#login-error'), 'That token was refused.');
      const first = wrong.length;
      // Ten seconds of the page's clock: it used to send the refused token again every second, two
      // wrong tokens a time, and ten a minute lock the address out, right token or not.
      await tab.clock.runFor(10_000);
      const marker = tab.waitForRequest((r) => r.url().endsWith('/readyz?marker'));
      await tab.evaluate(() => fetch('/readyz?marker'));
      await marker;
      assert.deepEqual(wrong.slice(first), [], 'no request with the refused token after the login was shown');
      await tab.fill('#login-token', TOKEN);
      await tab.click('#login button[type=submit]');
      await tab.waitForSelector('tr[data-route="orders-in"]', { timeout: 8000 });
    } finally {
      await tab.close();
    }
  });

  it('shows the last reload and its error, and saves a screenshot', async (t) => {
    const from = gw.logs.length;
    gw.write('gateway.yaml', CONFIG.replace('kind: memory', 'kind: memroy'));
    await gw.waitForLog((l) => l.msg.startsWith('reload rejected'), 8000, from);
    await page.waitForSelector('#reload-error .diag', { timeout: 8000 });
    assert.match((await page.textContent('#reload-error'))!, /gateway\.yaml:\d+:\d+: .*memroy/);
    assert.equal(await page.textContent('[data-field="result"]'), 'rejected');

    const dir = join(repoRoot, 'dist', 'test-artifacts');
    mkdirSync(dir, { recursive: true });
    const file = join(dir, 'dashboard.png');
    await page.screenshot({ path: file, fullPage: true });
    t.diagnostic(`dashboard screenshot: ${file}`);
    assert.deepEqual(problems, [], 'no script errors or CSP violations in the page');
  });
  it('says why the admin API refuses its address after too many wrong tokens elsewhere (429), and for how long', async () => {
    // Last in the file: the gateway refuses this address for the rest of the minute from here on.
    const tab = await page.context().newPage();
    try {
      await tab.goto(`${gw.adminUrl}/#token=${TOKEN}`);
      await tab.waitForSelector('tr[data-route="orders-in"]', { timeout: 8000 });
      for (let i = 0; i < 10; i++) await fetch(`${gw.adminUrl}/admin/status`, { headers: { authorization: 'Bearer wrong' } });
      await tab.waitForSelector('#banner.show', { timeout: 8000 });
      // It said only `HTTP 429`.
      assert.match((await tab.textContent('#banner'))!, /HTTP 429 \(too many wrong admin tokens from this address: try again in \d+ s\)$/);
    } finally {
      await tab.close();
    }
  });
});
