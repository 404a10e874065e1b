import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Page } from 'playwright-core';
import { openBrowserPage, unpackedExtension, type BrowserPage } from '../helpers/browser.js';
import { useGateway } from '../helpers/gateway.js';

// A browser extension's pages send `Origin: chrome-extension://<id>`, which no `origins` entry could name before.
const EXTENSION = unpackedExtension();
const OTHER_EXTENSION = `chrome-extension://${'a'.repeat(32)}`;

const CONFIG = `version: 1
brokers:
  local: {kind: memory}
listeners:
  api: {kind: http, port: 0, cors: {origins: ["${EXTENSION.origin}", "capacitor://localhost"]}}
  push: {kind: websocket, port: 0, origins: ["${EXTENSION.origin}", "capacitor://localhost"]}
  elsewhere: {kind: http, port: 0, cors: {origins: ["${OTHER_EXTENSION}", "https://app.example.com"]}}
  elsewherePush: {kind: websocket, port: 0, origins: ["${OTHER_EXTENSION}", "https://app.example.com"]}
routes:
  - name: api
    from: {listener: api, path: /in}
    to: {broker: local, topic: t}
  - name: push
    from: {listener: push, path: /ws}
    to: {broker: local, topic: t}
  - name: elsewhere
    from: {listener: elsewhere, path: /in}
    to: {broker: local, topic: t}
  - name: elsewhere-push
    from: {listener: elsewherePush, path: /ws}
    to: {broker: local, topic: t}
`;

describe('origins of a browser extension, in headless Chromium', () => {
  let browser: BrowserPage;
  let page: Page;
  before(async () => {
    browser = await openBrowserPage({ extension: EXTENSION });
    page = browser.page;
    // The extension's own page: what it fetches and opens is sent with its origin.
    await page.goto(`${EXTENSION.origin}/page.html`);
  });
  after(async () => {
    await browser?.close();
  });
  const gw = useGateway(CONFIG);

  /** A JSON POST from the extension's page (so with a preflight first): the status it could read, or the error it got. */
  const publish = (url: string) =>
    page.evaluate(async (u) => {
      try {
        const res = await fetch(u, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"from":"extension"}' });
        return { status: res.status, origin: (globalThis as any).location.origin as string };
      } catch (err) {
        return { error: String(err), origin: (globalThis as any).location.origin as string };
      }
    }, url);
  /** A WebSocket from the extension's page: `open`, or the close code the page saw. */
  const connect = (url: string) =>
    page.evaluate(
      (u) =>
        new Promise<string>((resolve) => {
          const ws = new (globalThis as any).WebSocket(u);
          ws.onopen = () => {
            resolve('open');
            ws.close(1000);
          };
          ws.onclose = (e: { code: number }) => resolve(`closed ${e.code}`);
        }),
      url,
    );

  it('lets the extension publish over http with CORS and open a WebSocket when its origin is listed', async () => {
    assert.deepEqual(await publish(gw.url('api', '/in')), { status: 200, origin: EXTENSION.origin });
    assert.equal(await connect(gw.url('push', '/ws', 'ws')), 'open');
  });

  it('refuses it (403, which the page sees as a failed fetch and a WebSocket closed 1006) where its origin is not listed', async () => {
    const from = gw.logs.length;
    assert.deepEqual(await publish(gw.url('elsewhere', '/in')), { error: 'TypeError: Failed to fetch', origin: EXTENSION.origin });
    const http = await gw.waitForLog((l) => l.msg === 'refused a page of an origin not in cors.origins (403)' && l.listener === 'elsewhere', undefined, from);
    assert.equal(http.origin, EXTENSION.origin);
    assert.equal(await connect(gw.url('elsewherePush', '/ws', 'ws')), 'closed 1006');
    const ws = await gw.waitForLog((l) => l.msg === 'refused a page of an origin not in origins (403)' && l.listener === 'elsewherePush', undefined, from);
    assert.equal(ws.origin, EXTENSION.origin);
  });
});
