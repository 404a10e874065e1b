import { rmSync } from 'node:fs';
import { chromium, type Page } from 'playwright-core';
import { tempDir } from './reaper.js';
import type { TcpProxy } from './tcp-proxy.js';

/** Debian's chromium, as the brief asks: no download, no network of its own, a fresh profile each run. */
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

export interface BrowserPage {
  page: Page;
  /** Closes the browser and removes its profile. */
  close(): Promise<void>;
}

/** Headless Chromium (`/usr/bin/chromium`, through playwright-core) with a fresh profile, and its first page. */
export async function openBrowserPage(options: { viewport?: { width: number; height: number }; ignoreHTTPSErrors?: boolean } = {}): Promise<BrowserPage> {
  const profile = tempDir('eventgate-chromium');
  const context = await chromium.launchPersistentContext(profile, { executablePath: '/usr/bin/chromium', headless: true, args: CHROMIUM_ARGS, ...options });
  const page = context.pages()[0] ?? (await context.newPage());
  return {
    page,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** An event the page's EventSource got: its type (`message`, a CloudEvent's type, `eventgate.resume`), id and data. */
export interface SeenEvent {
  type: string;
  id: string;
  data: string;
}

/**
 * An EventSource on `path` of the page's origin, reached through `proxy`: messages 1 and 2 are
 * published and seen, the proxy cuts the connection and holds it while 3 and 4 are published, and
 * once the browser reconnected (with the last id it saw) 5 is published. Resolves with every event
 * the page got by then, of type `eventType` and resume notices (`eventgate.resume`), in order.
 */
export async function eventsAcrossACut(page: Page, proxy: TcpProxy, path: string, eventType: string, publish: (n: number) => Promise<void>): Promise<SeenEvent[]> {
  const seen = () => page.evaluate(() => (globalThis as any).seen as SeenEvent[]);
  const waitFor = (count: number) =>
    page
      .waitForFunction((n) => (globalThis as any).seen.length >= n, count, { timeout: 15000 })
      .catch(async (err: Error) => {
        throw new Error(`the page saw ${JSON.stringify(await seen())}, expected ${count} events: ${err.message}`);
      });
  await page.evaluate(
    ([p, type]) => {
      const g = globalThis as any;
      g.seen = [];
      g.opens = 0;
      const es = new g.EventSource(p);
      const push = (e: any) => g.seen.push({ type: e.type, id: e.lastEventId, data: e.data });
      es.addEventListener(type, push);
      es.addEventListener('eventgate.resume', push);
      es.onopen = () => g.opens++;
      g.es = es;
    },
    [path, eventType] as const,
  );
  try {
    await page.waitForFunction(() => (globalThis as any).opens === 1);
    await publish(1);
    await publish(2);
    await waitFor(2);

    // The connection drops; what is published meanwhile must come after the reconnect.
    proxy.cutAndHold();
    await page.waitForFunction(() => (globalThis as any).es.readyState === 0);
    await publish(3);
    await publish(4);
    proxy.release();
    await page.waitForFunction(() => (globalThis as any).opens === 2, undefined, { timeout: 15000 });
    await publish(5);
    await waitFor(5);
    return await seen();
  } finally {
    await page.evaluate(() => (globalThis as any).es.close());
  }
}
