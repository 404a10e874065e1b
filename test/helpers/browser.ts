import { createHash, generateKeyPairSync } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
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

/** An unpacked browser extension: its folder, and the origin its pages send (`chrome-extension://<id>`). */
export interface UnpackedExtension {
  dir: string;
  origin: string;
}

/**
 * A Manifest V3 extension of one empty page (`page.html`), with no host permissions, so its page's
 * requests are cross-origin as a site's are. Its id, and so its origin, is fixed by the public key
 * in its manifest (as the store's is): the first 32 hex digits of the key's SHA-256, written a-p.
 */
export function unpackedExtension(): UnpackedExtension {
  const dir = tempDir('eventgate-extension');
  const key = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'der' });
  const hex = createHash('sha256').update(key).digest('hex').slice(0, 32);
  const id = [...hex].map((d) => String.fromCharCode(97 + Number.parseInt(d, 16))).join('');
  writeFileSync(`${dir}/manifest.json`, JSON.stringify({ manifest_version: 3, name: 'eventgate origins test', version: '1', key: key.toString('base64') }));
  writeFileSync(`${dir}/page.html`, '<!doctype html><title>eventgate origins test</title>\n');
  return { dir, origin: `chrome-extension://${id}` };
}

/** Headless Chromium (`/usr/bin/chromium`, through playwright-core) with a fresh profile, and its first page; `extension`: loaded into it. */
export async function openBrowserPage(options: { viewport?: { width: number; height: number }; ignoreHTTPSErrors?: boolean; extension?: UnpackedExtension } = {}): Promise<BrowserPage> {
  const { extension, ...contextOptions } = options;
  const profile = tempDir('eventgate-chromium');
  const args = extension === undefined ? CHROMIUM_ARGS : [...CHROMIUM_ARGS, `--disable-extensions-except=${extension.dir}`, `--load-extension=${extension.dir}`];
  const context = await chromium.launchPersistentContext(profile, { executablePath: '/usr/bin/chromium', headless: true, args, ...contextOptions });
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
