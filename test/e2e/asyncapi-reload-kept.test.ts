import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { eventually, useGateway } from '../helpers/gateway.js';
import { mosquittoPub } from '../helpers/peers.js';
import { startMosquittoLogged, type LoggedMosquitto } from '../helpers/servers.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';

/** An AsyncAPI document of two messages; `other` requires the properties given. */
const contracts = (other: string) => `asyncapi: 3.0.0
info: {title: Plant, version: '1.0.0'}
channels:
  readings:
    address: readings
    messages:
      reading:
        payload: {$ref: 'reading.yaml'}
      other:
        payload: {type: object, required: [${other}]}
`;

const reading = (required: string) => `type: object\nrequired: [${required}]\n`;

/**
 * Spec §6: "Components whose config did not change are kept". A consume route validating against
 * one AsyncAPI message was rebuilt by any edit of its document (another message, the info): the
 * route key held the hash of every file of the document, so its MQTT connection was closed and
 * opened again (mosquitto's log: a second "New client connected ... as <clientId>-readings"), an
 * AMQP route got a new consumer, a JetStream route recreated its subscription.
 */
describe('hot reload: an AsyncAPI edit keeps the routes whose contract it did not change', () => {
  let mqtt: LoggedMosquitto;
  let webhook: WebhookReceiver;
  const clientId = `eg-kept-${process.pid}`;
  before(async () => {
    // mosquitto's own log of connections: the server side of "the route kept its connection".
    [mqtt, webhook] = await Promise.all([startMosquittoLogged(), WebhookReceiver.start()]);
  });
  after(async () => {
    await Promise.all([mqtt?.stop(), webhook?.stop()]);
  });
  /** How many times the route's client connected to mosquitto. */
  const routeConnects = () => mqtt.connects(`${clientId}-readings`);

  const gw = useGateway(
    () => `version: 1
asyncapi: plant.yaml
admin: {port: 0}
brokers:
  mqtt: {kind: mqtt, url: ${mqtt.url}, clientId: ${clientId}, qos: 1}
routes:
  - name: readings
    from: {broker: mqtt, topic: kept/readings}
    through:
      - validate: {message: reading}
    to: {http: {url: "${webhook.url}/readings"}}
`,
    () => ({ files: { 'plant.yaml': contracts('o'), 'reading.yaml': reading('n') } }),
  );

  /** Publishes `value` with mosquitto_pub and waits for the route to deliver it to the webhook. */
  const delivered = async (value: Record<string, unknown>) => {
    await mosquittoPub(mqtt, 'kept/readings', JSON.stringify(value));
    await eventually(
      () =>
        assert.ok(
          webhook.requests.some((x) => JSON.parse(x.body).seq === value.seq),
          `message ${value.seq} at the webhook`,
        ),
      15000,
    );
  };

  it('an edit of another message leaves the route and its MQTT connection as they were', async () => {
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === 'readings', 15000);
    await delivered({ seq: 1, n: 1 });
    assert.equal(routeConnects(), 1);

    const line = await gw.reconfigure(contracts('o, p'), 'plant.yaml');
    assert.equal(line.msg, 'config reloaded', JSON.stringify(line));
    const from = gw.logs.indexOf(line);
    assert.deepEqual(
      gw.logs
        .slice(from)
        .filter((l) => l.route === 'readings')
        .map((l) => l.msg),
      [],
      'the route was not rebuilt',
    );
    await delivered({ seq: 2, n: 1 });
    assert.equal(routeConnects(), 1, 'mosquitto saw the route connect once');
  });

  it('an edit of its own message (a $ref-ed file) rebuilds the route, which validates with the new payload schema', async () => {
    const from = gw.logs.length;
    const line = await gw.reconfigure(reading('m'), 'reading.yaml');
    assert.equal(line.msg, 'config reloaded', JSON.stringify(line));
    // The rebuilt route reads the same filter at the same QoS: it takes the connection over (point 128).
    await gw.waitForLog((l) => l.msg === 'subscription handed over to the rebuilt route' && l.route === 'readings', 15000, from);
    // Valid only under the new schema (no 'n'): the old one would have refused it.
    await delivered({ seq: 3, m: 1 });
    assert.equal(routeConnects(), 1);
  });
});
