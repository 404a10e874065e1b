import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { post } from '../helpers/clients.js';
import { useGateway } from '../helpers/gateway.js';

describe('JSON Schema multipleOf with decimal steps', () => {
  const gw = useGateway(`
version: 1
brokers:
  local: { kind: memory }
listeners:
  api: { kind: http, port: 0 }
routes:
  - name: prices
    from: { listener: api, path: /prices }
    through:
      - validate: { schema: { type: object, required: [price], properties: { price: { type: number, multipleOf: 0.01 } } } }
    to: { broker: local, topic: prices }
`);

  it('accepts prices in cents that binary floating point cannot divide exactly (19.99, 0.07, 1234567.89)', async () => {
    for (const price of [19.99, 0.07, 1234567.89, 0.1 + 0.2 - 0.3 + 4.35, 100]) {
      const reply = await post(gw.url('api', '/prices'), { price });
      assert.equal(reply.status, 200, `${price}: ${reply.text}`);
    }
  });

  it('still rejects prices finer than a cent', async () => {
    for (const price of [19.995, 0.001]) {
      const reply = await post(gw.url('api', '/prices'), { price });
      assert.equal(reply.status, 400, `${price}: ${reply.text}`);
      assert.match(JSON.stringify(reply.body.errors), /multiple of 0\.01/);
    }
  });
});
