import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { post } from '../helpers/clients.js';
import { eventually, useGateway } from '../helpers/gateway.js';
import { mosquittoPub } from '../helpers/peers.js';
import { startMosquitto, type MessageServer } from '../helpers/servers.js';
import { openStream } from '../helpers/sse.js';
import { WebhookReceiver, type Received } from '../helpers/webhook-receiver.js';

/**
 * A consume route runs its chain again for each try of a message (the first failed at a target):
 * what the steps make must be what they made the first time, not more of it, and a CloudEvent the
 * chain wraps the message in keeps its id, so a receiver that took the first try can tell the retry.
 */
describe('consume routes: the chain run again on a retry', () => {
  let hook: WebhookReceiver;
  let mqtt: MessageServer;
  before(async () => {
    [hook, mqtt] = await Promise.all([WebhookReceiver.start(), startMosquitto()]);
    // Each path's first request fails (500): the webhook's one try is spent and the route tries the message again.
    const seen = new Set<string>();
    hook.respond = (r, res) => {
      const first = !seen.has(r.url);
      seen.add(r.url);
      res.writeHead(first ? 500 : 200).end();
    };
  });
  after(async () => {
    await Promise.all([hook?.stop(), mqtt?.stop()]);
  });

  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  local: { kind: memory }
  devices: { kind: mqtt, url: "${mqtt.url}" }
listeners:
  api: { kind: http, port: 0, host: 127.0.0.1 }
chains:
  judged:
    - validate: { schema: { type: object, required: [id] }, onInvalid: tag }
    - cloudevent: { source: /walk, type: walk.judged }
routes:
  - name: feed
    from: { listener: api, path: /feed }
    to: { broker: local, topic: jobs }
  - name: judge
    from: { broker: local, topic: jobs }
    through: judged
    to:
      http:
        url: "${hook.url}/memory"
        retry: { attempts: 1 }
        headers: { x-tag: '$headers._asyncapi_eg_validation_error' }
        signature: { secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" }
  - name: stamp
    from: { listener: api, path: /stamp }
    to: { broker: local, topic: stamped }
  - name: stream
    from: { broker: local, topic: stamped }
    through: [ { cloudevent: { source: /walk, type: walk.streamed } } ]
    to: { listener: api, path: /stream, format: cloudevent }
  - name: judge-mqtt
    from: { broker: devices, topic: jobs/in, qos: 1 }
    through: judged
    to:
      http:
        url: "${hook.url}/mqtt"
        retry: { attempts: 1 }
        headers: { x-tag: '$headers._asyncapi_eg_validation_error' }
`,
  );

  /** The route's two tries at `path`: the failed one, and the retry (its backoff 100 ms) that took it. */
  const tries = (path: string): Promise<Received[]> =>
    eventually(() => {
      const got = hook.requests.filter((r) => r.url === path);
      assert.equal(got.length, 2, `tries at ${path}`);
      return got;
    }, 15000);
  const errorsOf = (r: Received) => JSON.parse(String(r.headers['x-tag'])).errors;

  it('tags a message tried again with its errors once, not once more per try, and keeps its CloudEvent id and webhook-id (a memory topic: an id made of its place there)', async () => {
    assert.equal((await post(gw.url('api', '/feed'), { n: 1 })).status, 200);
    const [first, retry] = await tries('/memory');
    assert.deepEqual(errorsOf(first!), [": must have required property 'id'"]);
    assert.deepEqual(errorsOf(retry!), [": must have required property 'id'"]);
    assert.match(String(first!.headers['ce-id']), /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.equal(retry!.headers['ce-id'], first!.headers['ce-id']);
    assert.equal(retry!.headers['webhook-id'], first!.headers['webhook-id']);
  });

  it("replays a resuming event stream's events with the ids the live stream gave them", async () => {
    const live = await openStream(gw.url('api', '/stream'));
    try {
      for (const n of [1, 2]) assert.equal((await post(gw.url('api', '/stamp'), { n })).status, 200);
      await eventually(() => assert.equal(live.events().length, 2));
    } finally {
      live.close();
    }
    const [one, two] = live.events();
    const resumed = await openStream(gw.url('api', '/stream'), { 'last-event-id': one!.id! });
    try {
      await eventually(() => assert.equal(resumed.events().length, 1));
    } finally {
      resumed.close();
    }
    const replayed = JSON.parse(resumed.events()[0]!.data);
    assert.deepEqual(replayed.data, { n: 2 });
    assert.equal(replayed.id, JSON.parse(two!.data).id);
  });

  it('keeps the CloudEvent id of a message its source does not name (MQTT) across the route’s tries, a UUID drawn once', async () => {
    await mosquittoPub(mqtt, 'jobs/in', JSON.stringify({ n: 2 }));
    const [first, retry] = await tries('/mqtt');
    assert.deepEqual(errorsOf(retry!), [": must have required property 'id'"]);
    assert.match(String(first!.headers['ce-id']), /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.equal(retry!.headers['ce-id'], first!.headers['ce-id']);
  });
});
