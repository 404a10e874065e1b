import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { HTTP } from 'cloudevents';
import { WsClient } from '../helpers/clients.js';
import { useGateway } from '../helpers/gateway.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';
import { fetch } from '../helpers/http.js';

/**
 * The HTTP binding's binary mode carries data of any media type as the body. The gateway sends
 * such events that way (a data_base64 event leaves a binary-mode webhook as its bytes), so it must
 * take them in that way too: here a binary-mode request with `application/octet-stream` data goes
 * through to a binary-mode and a structured webhook, as the SDK on the receiving end reads them.
 */
describe('CloudEvents binary mode with data that is neither JSON nor text', () => {
  let binaryOut: WebhookReceiver;
  let structuredOut: WebhookReceiver;
  before(async () => {
    binaryOut = await WebhookReceiver.start();
    structuredOut = await WebhookReceiver.start();
  });
  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  local: { kind: memory }
listeners:
  api: { kind: http, port: 0 }
  ws: { kind: websocket, port: 0 }
routes:
  - name: bytes-wrapped
    from: { listener: api, path: /wrapped }
    through: [{ transform: '{"data": $, "type": $ce.type, "parts": [$, 1]}' }]
    to: { listener: ws, path: /wrapped }
  - name: bytes-text
    from: { listener: api, path: /text }
    through: [{ headers: { set: { x-data: '$', x-parts: '[$, 1]', x-string: '$string({"d": $})', x-joined: '"b64:" & $', x-joined-in: '{"d": $} & ""' } } }]
    to: { broker: local, topic: text, key: '$' }
  - name: text-watch
    from: { broker: local, topic: text }
    to: { listener: ws, path: /text, format: envelope }
  - name: bytes-in
    from: { listener: api, path: /bytes }
    to:
      - { http: { url: "${binaryOut.url}/bin" } }
      - { http: { url: "${structuredOut.url}/structured", cloudevents: structured } }
`,
  );
  after(async () => {
    await binaryOut?.stop();
    await structuredOut?.stop();
  });

  it('takes the body as the bytes of the data, and sends them on in binary and structured mode', async () => {
    const bytes = Buffer.from([0x00, 0xff, 0xfe, 0x80, 0x0a, 0x7b, 0xc3, 0x28]);
    const res = await fetch(gw.url('api', '/bytes'), {
      method: 'POST',
      headers: { 'content-type': 'application/octet-stream', 'ce-specversion': '1.0', 'ce-id': 'raw-1', 'ce-source': '/sensor', 'ce-type': 'reading', 'ce-unit': 'raw' },
      body: bytes,
    });
    assert.equal(res.status, 200, await res.clone().text());
    const [bin] = await binaryOut.received(1);
    assert.deepEqual(bin!.bytes, bytes);
    assert.equal(bin!.headers['content-type'], 'application/octet-stream');
    assert.equal(bin!.headers['ce-id'], 'raw-1');
    assert.equal(bin!.headers['ce-unit'], 'raw');
    const [structured] = await structuredOut.received(1);
    const ev = HTTP.toEvent({ headers: structured!.headers, body: structured!.body }) as unknown as { id: string; datacontenttype: string; data_base64?: string; data?: unknown; unit: string };
    assert.equal(ev.id, 'raw-1');
    assert.equal(ev.unit, 'raw');
    assert.equal(ev.datacontenttype, 'application/octet-stream');
    assert.equal(JSON.parse(structured!.body).data_base64, bytes.toString('base64'));
  });

  /** POSTs four bytes as a binary-mode CloudEvent `id` to `path`; resolves to the bytes once answered 200. */
  async function postReading(path: string, id: string): Promise<Buffer> {
    const bytes = Buffer.from([0xde, 0xad, 0xbe, 0xef]);
    const res = await fetch(gw.url('api', path), {
      method: 'POST',
      headers: { 'content-type': 'application/octet-stream', 'ce-specversion': '1.0', 'ce-id': id, 'ce-source': '/sensor', 'ce-type': 'reading' },
      body: bytes,
    });
    assert.equal(res.status, 200, await res.clone().text());
    return bytes;
  }

  it("writes the bytes as base64 inside a transform's result, as forwards write a value of bytes (not Buffer's own JSON)", async () => {
    const client = await WsClient.connect(gw.url('ws', '/wrapped', 'ws'));
    try {
      const bytes = await postReading('/wrapped', 'raw-2');
      assert.deepEqual(await client.next(), { data: bytes.toString('base64'), type: 'reading', parts: [bytes.toString('base64'), 1] });
    } finally {
      client.close();
    }
  });

  it('writes the bytes as base64 in the text of a header, a key, $string and &, as forwards write them', async () => {
    const client = await WsClient.connect(gw.url('ws', '/text', 'ws'));
    try {
      const bytes = await postReading('/text', 'raw-3');
      const b64 = bytes.toString('base64');
      const envelope = await client.next();
      // Each was Buffer's own JSON, {"type":"Buffer","data":[222,173,190,239]}.
      assert.equal(envelope.headers['x-data'], b64);
      assert.equal(envelope.headers['x-parts'], JSON.stringify([b64, 1]));
      assert.equal(envelope.headers['x-string'], JSON.stringify({ d: b64 }));
      // `&` joined Buffer's JSON too until 640.
      assert.equal(envelope.headers['x-joined'], `b64:${b64}`);
      assert.equal(envelope.headers['x-joined-in'], JSON.stringify({ d: b64 }));
      assert.equal(envelope.key, b64);
      assert.equal(envelope.value, b64);
    } finally {
      client.close();
    }
  });

  it('still refuses that content type for a request that is not a CloudEvent', async () => {
    const res = await fetch(gw.url('api', '/bytes'), { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: Buffer.from([1, 2, 3]) });
    assert.equal(res.status, 415);
  });
});
