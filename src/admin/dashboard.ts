import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { problem } from '../core/errors.js';
import { sendProblem } from '../kinds/listeners/http-reply.js';
import type { AdminServer } from './server.js';

/**
 * The page is plain HTML with its script and style inline, kept in the source tree and read at
 * run time (this module runs from dist/src/admin/, the page stays in src/admin/), so there is no
 * build step and `npm ci && npm start` serves it from a fresh clone.
 */
const PAGE_FILE = fileURLToPath(new URL('../../../src/admin/dashboard.html', import.meta.url));

interface Page {
  body: Buffer;
  csp: string;
}

let cached: Page | undefined;

/** Reads the page once, and allows exactly its inline script and style by hash (no 'unsafe-inline'). */
function page(): Page {
  if (cached) return cached;
  const html = readFileSync(PAGE_FILE, 'utf8');
  const hashes = (tag: string) => [...html.matchAll(new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`, 'g'))].map((m) => `'sha256-${createHash('sha256').update(m[1]!).digest('base64')}'`).join(' ');
  const csp = [
    "default-src 'none'",
    `script-src ${hashes('script')}`,
    `style-src ${hashes('style')}`,
    // 'self' covers the admin API and, in CSP 3, the tap's ws:// URL on the same host and port.
    "connect-src 'self'",
    "img-src 'self' data:",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; ');
  cached = { body: Buffer.from(html), csp };
  return cached;
}

/**
 * `GET /`: the dashboard. Open without the token, because a browser navigating to it cannot send
 * one: the page holds no data; it asks for the token and sends it with every API call it makes.
 */
export function mountDashboard(admin: AdminServer): void {
  admin.route(
    'GET /',
    (_req, res) => {
      let p: Page;
      try {
        p = page();
      } catch (err) {
        return sendProblem(res, problem('EG_INTERNAL', `the dashboard page is missing (${PAGE_FILE}): ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`));
      }
      res.writeHead(200, {
        'content-type': 'text/html; charset=utf-8',
        'content-length': p.body.length,
        'content-security-policy': p.csp,
        'x-content-type-options': 'nosniff',
        'referrer-policy': 'no-referrer',
        'cache-control': 'no-cache',
      });
      res.end(p.body);
    },
    { open: true },
  );
}
