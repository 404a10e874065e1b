import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { connect, type TLSSocket } from 'node:tls';
import { describe, it } from 'node:test';
import { makeCertificates } from '../helpers/certificates.js';
import { RawWsClient, WsClient } from '../helpers/clients.js';
import { eventually, useGateway } from '../helpers/gateway.js';

/** The gateway's peak resident memory so far (VmHWM), in bytes. */
function peakRss(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m![1]) * 1024;
}

/** A client over TLS that reads nothing after the response head to `head` (an event stream's GET, a websocket handshake). */
async function stalledTlsReader(port: number, head: string, ca: string): Promise<TLSSocket> {
  const socket = connect({ host: '127.0.0.1', port, ca });
  await once(socket, 'secureConnect');
  socket.write(head);
  await once(socket, 'data');
  socket.pause();
  socket.on('error', () => undefined);
  return socket;
}

const streamHead = 'GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n';
const upgradeHead = `GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${Buffer.from('eventgate-tests!').toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`;

describe('event streams and websocket forwards over TLS under a burst larger than the send bound', () => {
  const certs = makeCertificates();
  const gw = useGateway(
    `version: 1
brokers:
  local: {kind: memory}
listeners:
  api: {kind: http, port: 0, maxBodyBytes: 33554432}
  feed: {kind: http, port: 0, tls: {cert: certs/server.pem, key: certs/server-key.pem}, events: {heartbeatMs: 600000, maxBufferedBytes: 65536}}
  push: {kind: websocket, port: 0, tls: {cert: certs/server.pem, key: certs/server-key.pem}, maxBufferedBytes: 65536, pingIntervalMs: 600000}
routes:
  - name: in
    from: {listener: api, path: /burst}
    to: {broker: local, topic: t}
  - name: out
    from: {broker: local, topic: t}
    to: {listener: feed, path: /events}
  - name: out-ws
    from: {broker: local, topic: t}
    to: {listener: push, path: /ws}
`,
    { files: { 'certs/server.pem': certs.a.cert, 'certs/server-key.pem': certs.a.key } },
  );

  // 80 events of 50 KB in one CloudEvents batch: published, and forwarded, within one turn.
  const pad = 'p'.repeat(50_000);
  const burst = JSON.stringify(Array.from({ length: 80 }, (_, i) => ({ specversion: '1.0', id: `b-${i}`, source: '/t', type: 'burst', data: { i, pad } })));
  const post = async () => {
    const res = await fetch(gw.url('api', '/burst'), { method: 'POST', headers: { 'content-type': 'application/cloudevents-batch+json' }, body: burst });
    assert.equal(res.status, 200, await res.text());
  };

  it('one turn larger than the bound to many stalled event-stream clients costs about one copy, not one per client', async () => {
    const pid = gw.process.pid!;
    const one = [await stalledTlsReader(gw.port('feed'), streamHead, certs.a.cert)];
    for (let i = 0; i < 3; i++) await post();
    const base = peakRss(pid);
    const many: TLSSocket[] = [];
    for (let i = 0; i < 40; i++) many.push(await stalledTlsReader(gw.port('feed'), streamHead, certs.a.cert));
    // 4 MB in one turn, 40 clients that do not read: 40 encrypted copies would be 160 MB.
    // A client that reads: once it has the burst's last event, the burst went to every client.
    const reader = connect({ host: '127.0.0.1', port: gw.port('feed'), ca: certs.a.cert });
    await once(reader, 'secureConnect');
    let text = '';
    reader.setEncoding('utf8').on('data', (c: string) => (text += c));
    reader.write(streamHead);
    await eventually(() => assert.match(text, /retry: \d+/));
    text = '';
    await post();
    await eventually(() => assert.match(text, /"i":79,/), 20000);
    const grew = peakRss(pid) - base;
    for (const s of [...one, ...many, reader]) s.destroy();
    assert.ok(grew < 60e6, `peak RSS grew ${(grew / 1e6).toFixed(0)} MB`);
  });

  it('one turn larger than the bound to many stalled websocket clients costs about one copy, not one per client', async () => {
    const pid = gw.process.pid!;
    const one = [await stalledTlsReader(gw.port('push'), upgradeHead, certs.a.cert)];
    for (let i = 0; i < 3; i++) await post();
    const base = peakRss(pid);
    const many: TLSSocket[] = [];
    for (let i = 0; i < 40; i++) many.push(await stalledTlsReader(gw.port('push'), upgradeHead, certs.a.cert));
    // 4 MB in one turn, 40 clients that do not read: 40 encrypted copies would be 160 MB.
    // A client that reads: once it has the burst's last message, the burst went to every client.
    const reader = await WsClient.connect(gw.url('push', '/ws', 'wss'), { ca: [certs.a.cert] });
    await post();
    for (let i = 0; i < 80; i++) assert.equal((await reader.next(20000)).i, i);
    const grew = peakRss(pid) - base;
    for (const s of [...one, ...many]) s.destroy();
    reader.close();
    assert.ok(grew < 60e6, `peak RSS grew ${(grew / 1e6).toFixed(0)} MB`);
  });
});

describe('websocket forwards paced to a client that is behind', () => {
  const config = (out: boolean) => `
version: 1
admin: { port: 0 }
brokers:
  local: {kind: memory}
listeners:
  api: {kind: http, port: 0, maxBodyBytes: 33554432}
  push: {kind: websocket, port: 0, maxBufferedBytes: 67108864}
routes:
  - name: in
    from: {listener: api, path: /burst}
    to: {broker: local, topic: t}
${out ? '  - name: out\n    from: {broker: local, topic: t}\n    to: {listener: push, path: /ws}\n' : ''}`;
  const gw = useGateway();

  it('sends the close frame of a path a reload removes after every message forwarded before it, though most were still waiting to be handed to the socket', async () => {
    const g = await gw.start(config(true));
    const client = await RawWsClient.connect(g.url('push', '/ws', 'ws'));
    client.pause();
    // 4 bursts of 4 MB, one turn each: more than the loopback socket buffers take from a client that does not read.
    const pad = 'p'.repeat(50_000);
    for (let b = 0; b < 4; b++) {
      const burst = JSON.stringify(Array.from({ length: 80 }, (_, i) => ({ specversion: '1.0', id: `b-${b}-${i}`, source: '/t', type: 'burst', data: { n: b * 80 + i, pad } })));
      const res = await fetch(g.url('api', '/burst'), { method: 'POST', headers: { 'content-type': 'application/cloudevents-batch+json' }, body: burst });
      assert.equal(res.status, 200);
    }
    // All forwarded (to the client's socket, or waiting to be handed to it).
    await eventually(async () => assert.match(await (await fetch(`${g.adminUrl}/metrics`)).text(), /eventgate_route_messages_total\{route="out",outcome="delivered"\} 320\n/), 20000);
    assert.equal((await g.reconfigure(config(false))).msg, 'config reloaded');
    client.resume();
    const close = await client.waitCloseFrame(20000);
    assert.deepEqual([close.code, close.reason], [1001, 'route removed']);
    assert.equal(client.textsBeforeClose, 320);
    assert.deepEqual(
      client.texts.slice(0, 320).map((t) => JSON.parse(t).n),
      Array.from({ length: 320 }, (_, i) => i),
    );
    client.destroy();
  });
});
