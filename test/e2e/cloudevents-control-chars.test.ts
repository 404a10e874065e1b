import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { useGateway } from '../helpers/gateway.js';
import { type FetchInit, fetch } from '../helpers/http.js';

/**
 * CloudEvents' String type disallows control characters (U+0000-U+001F, U+007F-U+009F) and lone
 * surrogates. An attribute holding one is malformed: 400 naming it, in every mode, and nothing is
 * delivered (the event would otherwise break binary-mode headers and SSE lines downstream).
 */
describe('CloudEvents attributes with control characters', () => {
  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  local: { kind: memory }
listeners:
  api: { kind: http, port: 0 }
routes:
  - name: in
    from: { listener: api, path: /in }
    to: { broker: local, topic: events }
`,
  );

  async function refused(init: FetchInit): Promise<string[]> {
    const res = await fetch(gw.url('api', '/in'), { method: 'POST', ...init });
    const p = (await res.json()) as { code: string; errors: string[] };
    assert.equal(res.status, 400, JSON.stringify(p));
    assert.equal(p.code, 'EG_CLOUDEVENT_INVALID');
    return p.errors;
  }
  const base = { specversion: '1.0', id: 'e1', source: '/s', type: 't' };

  it('answers 400 naming the attribute, in structured, batched and binary mode', async () => {
    const structured = { 'content-type': 'application/cloudevents+json' };
    let errors = await refused({ headers: structured, body: JSON.stringify({ ...base, type: 'a\nid: 9\n\nevent: x', data: 1 }) });
    assert.match(errors.join(), /'type' must not contain control characters/);
    errors = await refused({ headers: structured, body: JSON.stringify({ ...base, id: 'e\r\n2' }) });
    assert.match(errors.join(), /'id' must not contain control characters/);
    errors = await refused({ headers: structured, body: `{"specversion":"1.0","id":"e3","source":"/s","type":"t","tag":"\\ud800"}` });
    assert.match(errors.join(), /'tag' must not contain control characters or lone surrogates/);
    errors = await refused({ headers: { 'content-type': 'application/cloudevents-batch+json' }, body: JSON.stringify([base, { ...base, subject: 'x\u0085y' }]) });
    assert.match(errors.join(), /\[1\] 'subject' must not contain control characters/);
    errors = await refused({ headers: { 'content-type': 'application/json', 'ce-specversion': '1.0', 'ce-id': 'e%0A4', 'ce-source': '/s', 'ce-type': 't' }, body: '{}' });
    assert.match(errors.join(), /'id' must not contain control characters/);
  });

  it('still takes attributes with other Unicode', async () => {
    const res = await fetch(gw.url('api', '/in'), {
      method: 'POST',
      headers: { 'content-type': 'application/cloudevents+json' },
      body: JSON.stringify({ ...base, subject: 'café ✓ 😀', note: 'tab-free' }),
    });
    assert.equal(res.status, 200);
  });
});
