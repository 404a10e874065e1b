import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { post } from '../helpers/clients.js';
import { useGateway } from '../helpers/gateway.js';

/**
 * A query string of one key repeated (`?a&a&a&…`) is parsed into a list ($query.a). Copying that
 * list for every repeat made parsing quadratic: a 16 KiB query held the event loop for ~45 ms,
 * before any auth step or rate limit could refuse the request, and this one (800 KB, under a
 * raised maxHeaderBytes) for minutes. Parsed in linear time, it is answered like any request.
 */
const REPEATS = 400_000;

const config = `version: 1
brokers:
  local: {kind: memory}
listeners:
  api: {kind: http, port: 0, host: 127.0.0.1, maxHeaderBytes: 1048576}
routes:
  - name: counted
    from: {listener: api, path: /counted}
    through:
      - filter: '$count($query.a) = ${REPEATS} and $query.b = "1"'
    to: {broker: local, topic: counted}
`;

describe('a query string of one key repeated many times', () => {
  const gw = useGateway(config);

  it('is parsed into the full list and answered', { timeout: 60_000 }, async () => {
    const query = `${'a&'.repeat(REPEATS)}b=1`;
    const r = await post(gw.url('api', `/counted?${query}`), { n: 1 });
    assert.equal(r.status, 200);
    assert.equal(r.body.filtered, undefined, 'every repeat of a is in $query.a');
    assert.equal(r.body.deliveries.length, 1);
  });
});
