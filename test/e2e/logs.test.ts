import assert from 'node:assert/strict';
import { once } from 'node:events';
import { renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { post } from '../helpers/clients.js';
import { type LogLine, useGateway } from '../helpers/gateway.js';
import { fetch } from '../helpers/http.js';

const TOKEN = 'admin-token-never-logged-7f3a';
const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const PAYLOAD_MARKER = 'payload-marker-do-not-log';
const HEADER_MARKER = 'header-marker-do-not-log';

const config = (log: string) => `
version: 1
admin:
  port: 0
  token: \${ADMIN_TOKEN}
log: ${log}
brokers:
  local: { kind: memory }
listeners:
  api: { kind: http, port: 0 }
routes:
  - name: orders
    from: { listener: api, path: /orders }
    through:
      - validate: { schema: { type: object, required: [id], properties: { id: { type: integer } } } }
      - transform: 'fail = true ? $error("the order cannot be priced") : empty = true ? nothing : $'
    to: { broker: local, topic: orders }
`;

describe('logs', () => {
  const gw = useGateway(config('{ level: info }'), { env: { ADMIN_TOKEN: TOKEN } });
  const send = (body: unknown, traceparent = `00-${TRACE}-00f067aa0ba902b7-01`) => post(gw.url('api', '/orders'), body, { traceparent, 'x-note': HEADER_MARKER });
  /** Applies the config now and waits for the result (a quiet log level may hide the "config reloaded" line). */
  const reconfigure = async (yaml: string) => {
    // Renamed over, so the watcher never reads the file half-written: on a loaded machine an
    // in-place write's truncation alone could be read as an empty config, whose rejection
    // (logged at error) would then stand among the lines this file counts.
    writeFileSync(join(gw.dir, 'gateway.yaml.next'), yaml);
    renameSync(join(gw.dir, 'gateway.yaml.next'), join(gw.dir, 'gateway.yaml'));
    const res = await fetch(`${gw.adminUrl}/admin/reload`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` } });
    assert.equal(res.status, 200, await res.text());
  };
  const failedLine = (from: number) => gw.waitForLog((l) => l.msg === 'message failed', 5000, from);

  it('logs a failed message at warn with its route, outcome and trace id, and without its payload or headers', async () => {
    const from = gw.logs.length;
    const reply = await send({ id: 1, fail: true, note: PAYLOAD_MARKER });
    assert.equal(reply.status, 500);
    const line = await failedLine(from);
    assert.equal(line.level, 'warn');
    assert.equal(line.route, 'orders');
    assert.equal(line.outcome, 'failed');
    assert.equal(line.traceId, TRACE);
    assert.equal(line.status, 500);
    assert.equal(line.code, 'EG_EXPRESSION_FAILED');
    assert.match(line.detail as string, /the order cannot be priced/);
    // The line and column of the `$error(` that raised it, as JSONata places it.
    assert.match(line.where as string, /^expression "fail = true .*" at gateway\.yaml:16:\d+$/, 'the log names the expression and its config line');
    assert.equal(line.message, undefined);
  });

  it('names the expression and its line in the log of a transform that gave no value, as of one that raised an error', async () => {
    const from = gw.logs.length;
    const reply = await send({ id: 3, empty: true });
    assert.equal(reply.status, 500);
    assert.equal(reply.body.detail, 'transform produced no value for this message');
    const line = await failedLine(from);
    assert.match(line.where as string, /^expression "fail = true .*" at gateway\.yaml:16$/);
  });

  it('answers the client what failed, but not the expression or where it is in the config', async () => {
    const from = gw.logs.length;
    const reply = await send({ id: 1, fail: true });
    assert.equal(reply.status, 500);
    assert.equal(reply.body.detail, 'transform failed: the order cannot be priced');
    assert.doesNotMatch(JSON.stringify(reply.body), /gateway\.yaml|\$error/);
    await failedLine(from); // so the next test's log window starts after this message's line
  });

  it('keeps invalid messages out of the log at level info', async () => {
    const from = gw.logs.length;
    assert.equal((await send({ id: 'not a number', note: PAYLOAD_MARKER })).status, 400);
    // Lines are written in order: once the next failure is logged, an invalid line would be there too.
    await send({ id: 2, fail: true });
    await failedLine(from);
    assert.deepEqual(
      gw.logs.slice(from).map((l) => l.msg),
      ['message failed'],
    );
  });

  it('applies a new log.level and log.payloads on reload', async () => {
    await reconfigure(config('{ level: debug, payloads: true }'));
    const from = gw.logs.length;
    assert.equal((await send({ id: 'x', note: PAYLOAD_MARKER })).status, 400);
    const invalid = await gw.waitForLog((l) => l.msg === 'message invalid', 5000, from);
    assert.equal(invalid.level, 'debug');
    assert.equal(invalid.route, 'orders');
    assert.equal(invalid.traceId, TRACE);
    assert.deepEqual(invalid.errors, ['/id: must be integer']);
    // With payloads: true the value and headers are there, for debugging.
    assert.deepEqual((invalid.message as { value: unknown }).value, { id: 'x', note: PAYLOAD_MARKER });
    assert.equal((invalid.message as { headers: Record<string, string> }).headers['x-note'], HEADER_MARKER);

    await reconfigure(config('{ level: warn }'));
    // Lines logged before the switch (say, the watcher noticing the write) may still be on their
    // way; stdout keeps order, so once a line logged after the switch is here, they all are.
    const before = gw.logs.length;
    await send({ id: 4, fail: true });
    const sync = await failedLine(before);
    const quiet = gw.logs.indexOf(sync) + 1;
    await reconfigure(config('{ level: warn, payloads: false }'));
    await send({ id: 'y' });
    await send({ id: 3, fail: true, note: PAYLOAD_MARKER });
    const failed = await failedLine(quiet);
    assert.equal(failed.message, undefined, 'payloads: false again');
    assert.deepEqual(
      gw.logs.slice(quiet).map((l) => `${l.level} ${l.msg}`),
      ['warn message failed'],
      'at warn neither the reload (info) nor the invalid message (debug) is logged',
    );
  });

  it('writes every line as one JSON object, and never the admin token or, unless asked, payloads', async () => {
    // A rejected reload logs its diagnostics; shutdown logs its steps.
    const from = gw.logs.length;
    await reconfigure(config('{ level: info }'));
    await gw.waitForLog((l) => l.msg === 'config reloaded', 5000, from);
    const next = gw.logs.length;
    gw.write('gateway.yaml', config('{ level: info }').replace('kind: memory', 'kind: nope'));
    await gw.waitForLog((l) => l.msg.startsWith('reload rejected'), 5000, next);
    const exit = await gw.stop();
    assert.equal(exit.code, 0);
    assert.ok(gw.logs.length > 10);
    const unparsed = gw.logs.filter((l) => l.level === 'unparsed');
    assert.deepEqual(unparsed, [], 'every stdout line parses as JSON');
    for (const l of gw.logs) {
      assert.equal(typeof l.level, 'string');
      assert.equal(typeof l.msg, 'string');
      assert.equal(typeof (l as LogLine & { time: unknown }).time, 'string');
    }
    const all = gw.logs.map((l) => JSON.stringify(l)).join('\n') + gw.stderr();
    assert.ok(!all.includes(TOKEN), 'the admin token never appears');
    // The marker appears only in the one line logged while payloads: true.
    const withPayload = gw.logs.filter((l) => JSON.stringify(l).includes(PAYLOAD_MARKER) || JSON.stringify(l).includes(HEADER_MARKER));
    assert.deepEqual(
      withPayload.map((l) => l.msg),
      ['message invalid'],
    );
  });
});

describe('logs on the way out', () => {
  const gw = useGateway();
  // libuv's thread pool busy from SIGTERM on, as compression, DNS lookups and file reads keep it
  // under load; with one thread, anything else queued there waits for this.
  const busyPool = (dir: string) => writeFileSync(join(dir, 'busy.cjs'), "process.prependOnceListener('SIGTERM', () => require('node:crypto').pbkdf2('x', 'y', 3e6, 32, 'sha256', () => {}));\n");

  it('writes every line, in order, up to the last one, however busy the thread pool', async () => {
    await gw.start(
      'version: 1\nbrokers:\n  local: { kind: memory }\nlisteners:\n  api: { kind: http, port: 0 }\nroutes:\n  - { name: r, from: { listener: api, path: /p }, to: { broker: local, topic: t } }\n',
      {
        setup: busyPool,
        env: { UV_THREADPOOL_SIZE: '1', NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --require ./busy.cjs` },
      },
    );
    const from = gw.logs.length;
    const stdout = gw.process.stdout!;
    const { code } = await gw.stop('SIGTERM');
    assert.equal(code, 0);
    if (!stdout.closed) await once(stdout, 'close'); // every line read
    assert.deepEqual(
      gw.logs.slice(from).map((l) => l.msg),
      ['signal received', 'shutting down: draining', 'shutdown complete'],
    );
  });
});
