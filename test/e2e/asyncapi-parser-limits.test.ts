import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { post } from '../helpers/clients.js';
import { useGateway } from '../helpers/gateway.js';
import { fetch } from '../helpers/http.js';

/**
 * The parser thread's limits (`asyncapiParser`), each reached through what a user can do: a
 * document whose parse needs more than the thread's heap, and one whose remote `$ref` does not
 * arrive before the parse's time is up. Either way the reload is rejected with the limit named at
 * the document, the running config keeps serving, and the next parse (a new thread) works
 * (docs/spec-checklist.md, point 94).
 */

/** A valid AsyncAPI 3.0 document of `n` channels, each with one message (~180 bytes a channel). */
function channels(n: number): string {
  const out = ['asyncapi: 3.0.0', "info: {title: Many, version: '1'}", 'channels:'];
  for (let i = 0; i < n; i++) {
    out.push(
      `  c${i}:`,
      `    address: c${i}`,
      '    messages:',
      `      m${i}:`,
      '        payload: {type: object, properties: {a: {type: string}, b: {type: integer}, c: {type: array, items: {type: string}}}}',
    );
  }
  return `${out.join('\n')}\n`;
}

/** A document whose one message's payload is `payload` (a schema or a `$ref`). */
const alerts = (payload: string) => `asyncapi: 3.0.0
info: {title: Alerts, version: '1.0.0'}
channels:
  alerts:
    messages:
      alert:
        payload: ${payload}
`;
const levels = '{type: object, required: [level], properties: {level: {type: string, enum: [info, warning]}}}';

/**
 * The gateway's config; `parserTimeoutMs` bounds the parse of this very config. Only the case
 * that waits for it sets it low: on a starved CI machine a new thread's first parse took over 8 s,
 * so every other parse gets the default's room.
 */
const config = (origin: string, withDocument: boolean, parserTimeoutMs = 60000) => `version: 1
${withDocument ? 'asyncapi: alerts.yaml\n' : ''}asyncapiRemoteRefs: {origins: ["${origin}"], timeoutMs: 30000}
asyncapiParser: {timeoutMs: ${parserTimeoutMs}, maxHeapMb: 48}
admin: {port: 0}
brokers:
  local: {kind: memory}
listeners:
  api: {kind: http, port: 0}
routes:
  - name: alert
    from: {listener: api, path: /alert}
    through:
${withDocument ? '      - validate: {channel: alerts}' : '      - validate: {schema: {type: object}}'}
    to: {broker: local, topic: alerts}
`;

describe("the AsyncAPI parser thread's limits (asyncapiParser)", () => {
  // Serves remote schemas; holds every request while `holding` (a schema server that does not answer).
  let holding = true;
  const held: ServerResponse[] = [];
  let schemas: Server;
  let origin = '';
  before(async () => {
    schemas = createServer((_req: IncomingMessage, res: ServerResponse) => {
      if (holding) held.push(res);
      else res.end(levels);
    });
    await new Promise<void>((r) => schemas.listen(0, '127.0.0.1', r));
    origin = `http://127.0.0.1:${(schemas.address() as AddressInfo).port}`;
  });
  after(() => {
    for (const res of held) res.destroy();
    schemas?.closeAllConnections();
    schemas?.close();
  });

  const gw = useGateway(() => config(origin, false), { files: { 'alerts.yaml': alerts(levels) } });
  const version = async () => ((await (await fetch(`${gw.adminUrl}/admin/status`)).json()) as { version: string }).version;
  /** Writes the files, then the config, and waits for the reload's outcome (a parse may take `timeoutMs`). */
  const reload = async (files: Record<string, string>, withDocument: boolean, parserTimeoutMs?: number) => {
    const from = gw.logs.length;
    for (const [name, text] of Object.entries(files)) writeFileSync(join(gw.dir, name), text);
    writeFileSync(join(gw.dir, 'gateway.yaml'), config(origin, withDocument, parserTimeoutMs));
    return gw.waitForLog((l) => l.msg === 'config reloaded' || l.msg.startsWith('reload rejected'), 70000, from);
  };
  const anyObjectPasses = async () => assert.equal((await post(gw.url('api', '/alert'), { level: 'loud' })).status, 200, 'the running config (no document) still serves');

  it('a document whose parse outgrows maxHeapMb: the reload is rejected, the config kept, and the next parse works', async () => {
    const before = await version();
    // ~0.7 MB, within refs.ts's 4 MiB: its parse needs well over 48 MB.
    const rejected = await reload({ 'alerts.yaml': channels(4000) }, true);
    assert.equal(rejected.msg, 'reload rejected; the running config keeps serving');
    assert.match(String(rejected.diagnostic), /alerts\.yaml:1:1: AsyncAPI: the document could not be parsed: the parser ran out of its 48 MB heap \(asyncapiParser\.maxHeapMb\)$/);
    assert.equal(await version(), before);
    await anyObjectPasses();
    // A small document: a new thread parses it, and the contract is live.
    const small = await reload({ 'alerts.yaml': alerts(levels) }, true);
    assert.equal(small.msg, 'config reloaded', String(small.diagnostic));
    assert.equal((await post(gw.url('api', '/alert'), { level: 'loud' })).status, 400);
    assert.equal((await post(gw.url('api', '/alert'), { level: 'info' })).status, 200);
  });

  it('a remote $ref that does not arrive within timeoutMs: the reload is rejected, the config kept, and the next parse works', async () => {
    assert.equal((await reload({}, false)).msg, 'config reloaded');
    const before = await version();
    const rejected = await reload({ 'alerts.yaml': alerts(`{$ref: '${origin}/level.yaml'}`) }, true, 8000);
    assert.equal(rejected.msg, 'reload rejected; the running config keeps serving');
    assert.match(String(rejected.diagnostic), /alerts\.yaml:1:1: AsyncAPI: the document could not be parsed: parsing took longer than 8000 ms \(asyncapiParser\.timeoutMs\)$/);
    assert.equal(held.length, 1, 'the parse was waiting for the schema server');
    assert.equal(await version(), before);
    await anyObjectPasses();
    // The schema server answers now: the same document parses in a new thread.
    holding = false;
    const again = await reload({ 'alerts.yaml': `${alerts(`{$ref: '${origin}/level.yaml'}`)}# again\n` }, true);
    assert.equal(again.msg, 'config reloaded', String(again.diagnostic));
    assert.equal((await post(gw.url('api', '/alert'), { level: 'loud' })).status, 400);
  });
});
