import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { CloudEvent, HTTP, Kafka } from 'cloudevents';
import { eventually, useGateway } from '../helpers/gateway.js';
import { kcatConsume, kcatProduce, startKafka, type KafkaCluster } from '../helpers/kafka.js';
import { openStream } from '../helpers/sse.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';
import { fetch } from '../helpers/http.js';

describe('CloudEvents on Kafka (the CloudEvents Kafka protocol binding)', () => {
  let kafka: KafkaCluster;
  let receiver: WebhookReceiver;
  const t = { binary: '', structured: '', incoming: '', data: '' };

  before(async () => {
    kafka = await startKafka();
    receiver = await WebhookReceiver.start();
    for (const k of Object.keys(t) as (keyof typeof t)[]) t[k] = kafka.topic(k);
    for (const topic of Object.values(t)) await kafka.createTopic(topic, 1);
  });
  const gw = useGateway(
    () => `
version: 1
brokers:
  kafka:
    kind: kafka
    brokers: ["${kafka.bootstrap}"]
    producer: { lingerMs: 1 }
    consumer: ${kafka.consumerYaml}
listeners:
  api: { kind: http, port: 0 }
routes:
  - name: in
    from: { listener: api, path: /events }
    to:
      - { broker: kafka, topic: ${t.binary} }
      - { broker: kafka, topic: ${t.structured}, cloudevents: structured }
  - name: out
    from: { broker: kafka, topic: ${t.binary}, fromBeginning: true }
    to: { http: { url: "${receiver.url}/hook", cloudevents: structured } }
  - name: produced-elsewhere
    from: { broker: kafka, topic: ${t.incoming}, fromBeginning: true }
    to: { http: { url: "${receiver.url}/elsewhere" } }
  - name: data-in
    from: { listener: api, path: /data }
    to: { broker: kafka, topic: ${t.data} }
  - name: data-out
    from: { broker: kafka, topic: ${t.data}, fromBeginning: true }
    to:
      - { http: { url: "${receiver.url}/data", cloudevents: structured } }
      - { listener: api, path: /data/stream, format: cloudevent }
`,
  );
  before(async () => {
    await Promise.all(['out', 'produced-elsewhere', 'data-out'].map((r) => gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === r, 20000)));
  });
  after(async () => {
    await receiver?.stop();
    await kafka?.stop();
  });

  it('round trip HTTP binary → Kafka binary → HTTP structured keeps every attribute and extension (SDK on both ends)', async () => {
    const sent = new CloudEvent({
      id: 'rt-1',
      source: 'urn:shop:eu',
      type: 'order.placed',
      subject: 'order-7',
      time: '2026-12-01T17:00:00.000Z',
      dataschema: 'https://example.com/order.json',
      tenant: 'acme',
      traceid: 'abc123',
      data: { orderId: 7, lines: [{ sku: 'x', qty: 2 }] },
    });
    const { headers, body } = HTTP.binary(sent);
    const res = await fetch(gw.url('api', '/events'), { method: 'POST', headers: headers as Record<string, string>, body: body as string });
    assert.equal(res.status, 200, await res.clone().text());

    // On Kafka, binary mode: ce_ headers and content-type; the SDK's Kafka binding reads it back.
    const [record] = await kcatConsume(kafka.bootstrap, t.binary, 1);
    assert.equal(record!.headers.ce_id, 'rt-1');
    assert.equal(record!.headers.ce_tenant, 'acme');
    assert.match(record!.headers['content-type']!, /^application\/json/);
    const fromKafka = Kafka.toEvent({ headers: record!.headers, key: record!.key ?? undefined, value: record!.value, body: record!.value } as never) as CloudEvent<unknown>;
    assert.equal(fromKafka.id, 'rt-1');

    // Structured mode as an option: one JSON value, content-type application/cloudevents+json.
    const [structured] = await kcatConsume(kafka.bootstrap, t.structured, 1);
    assert.equal(structured!.headers['content-type'], 'application/cloudevents+json');
    assert.equal(structured!.headers.ce_id, undefined);
    assert.equal((JSON.parse(structured!.value!) as { id: string }).id, 'rt-1');

    const [hook] = await receiver.received(1);
    assert.equal(hook!.url, '/hook');
    const got = HTTP.toEvent({ headers: hook!.headers as Record<string, string>, body: hook!.body }) as CloudEvent<unknown>;
    const fields = ['id', 'source', 'type', 'subject', 'time', 'dataschema', 'specversion', 'tenant', 'traceid'];
    for (const f of fields) assert.equal((got as unknown as Record<string, unknown>)[f], (sent as unknown as Record<string, unknown>)[f], f);
    assert.deepEqual(got.data, sent.data);
  });

  it('reads events other producers wrote in structured mode as CloudEvents', async () => {
    const ev = { specversion: '1.0', id: 'k-1', source: '/producer', type: 'thing.happened', region: 'eu', data: { n: 1 } };
    await kcatProduce(kafka.bootstrap, t.incoming, [{ value: JSON.stringify(ev), headers: { 'content-type': 'application/cloudevents+json' } }]);
    // Found by its path, not by a count: the first case's record may come to /hook again (a
    // consumer group's rebalance redelivers what it had not committed).
    const r = await eventually(() => receiver.requests.find((h) => h.url === '/elsewhere') ?? assert.fail('no request yet'), 15000);
    assert.equal(r.headers['ce-id'], 'k-1');
    assert.equal(r.headers['ce-region'], 'eu');
    assert.deepEqual(JSON.parse(r.body), { n: 1 });
  });

  it('keeps binary data (data_base64) byte for byte through a Kafka topic: data_base64 again in a structured webhook and a cloudevent stream', async () => {
    const bytes = new Uint8Array([0, 1, 2, 0xff, 0xfe, 0x0a, 0x0d, 0xc3]);
    const stream = await openStream(gw.url('api', '/data/stream'));
    const sent = new CloudEvent({ id: 'bin-1', source: '/sensor', type: 'frame.captured', datacontenttype: 'application/octet-stream', data: bytes });
    const { headers, body } = HTTP.structured(sent);
    const res = await fetch(gw.url('api', '/data'), { method: 'POST', headers: headers as Record<string, string>, body: body as string });
    assert.equal(res.status, 200, await res.clone().text());

    // The webhook's structured event, as the SDK reads it: the same bytes.
    const hook = await eventually(() => receiver.requests.find((r) => r.url === '/data') ?? assert.fail('no request yet'), 15000);
    assert.equal((JSON.parse(hook.body) as { data_base64: string }).data_base64, Buffer.from(bytes).toString('base64'));
    const got = HTTP.toEvent({ headers: hook.headers as Record<string, string>, body: hook.body }) as CloudEvent<unknown>;
    assert.equal(got.id, 'bin-1');
    assert.equal(got.datacontenttype, 'application/octet-stream');
    assert.deepEqual(Buffer.from(got.data as Uint8Array), Buffer.from(bytes));

    // The event stream's structured event too.
    await eventually(() => assert.equal(stream.events().length, 1), 15000);
    stream.close();
    const event = JSON.parse(stream.events()[0]!.data) as Record<string, unknown>;
    assert.equal(event.data, undefined);
    assert.equal(event.data_base64, Buffer.from(bytes).toString('base64'));
  });

  it('writes string data of a JSON datacontenttype as a JSON string, so it reads back as that string (SDK Kafka binding)', async () => {
    const strings = ['hello', '123', 'true'];
    for (const data of strings) {
      const { headers, body } = HTTP.structured(new CloudEvent({ id: `str-${data}`, source: '/s', type: 'text.said', datacontenttype: 'application/json', data }));
      const res = await fetch(gw.url('api', '/data'), { method: 'POST', headers: headers as Record<string, string>, body: body as string });
      assert.equal(res.status, 200, await res.clone().text());
    }
    // The record's value is JSON, as its content-type says; the SDK reads the same string back.
    const records = (await kcatConsume(kafka.bootstrap, t.data, 1 + strings.length)).slice(1);
    assert.deepEqual(
      records.map((r) => r.value),
      strings.map((s) => JSON.stringify(s)),
    );
    for (const [i, r] of records.entries()) {
      const ev = Kafka.toEvent({ headers: r.headers, key: r.key ?? undefined, value: r.value, body: r.value } as never) as CloudEvent<unknown>;
      assert.equal(ev.data, strings[i]);
    }
    // And the gateway reading the topic gives the structured webhook the string, not a number or boolean.
    const hooks = await eventually(() => {
      const got = receiver.requests.filter((r) => r.url === '/data').slice(1);
      assert.equal(got.length, strings.length);
      return got;
    }, 15000);
    assert.deepEqual(
      hooks.map((h) => (JSON.parse(h.body) as { data: unknown }).data),
      strings,
    );
  });
});
