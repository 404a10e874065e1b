import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { consumerName } from '../../src/kinds/brokers/nats/subjects.js';
import { defaultInstanceId, instanceIdProblem } from '../../src/config/instance-id.js';

describe('instance ids', () => {
  // The default `<hostname>-<pid>` was not held to what EVENTGATE_INSTANCE_ID takes (spec-checklist 2974, 3105).
  it('makes the default id of a host name and a pid within what EVENTGATE_INSTANCE_ID takes: other characters become -, the name is cut, the pid kept whole', () => {
    const cases: [string, number, string][] = [
      ['web-0.eu_1', 42, 'web-0.eu_1-42'],
      ['café lab', 7, 'caf--lab-7'],
      ['x'.repeat(64), 4194304, `${'x'.repeat(56)}-4194304`],
      ['', 9, 'eventgate-9'],
    ];
    for (const [host, pid, id] of cases) {
      const made = defaultInstanceId(host, pid);
      assert.equal(made, id);
      assert.equal(instanceIdProblem({ EVENTGATE_INSTANCE_ID: made }), undefined, made);
    }
  });

  it("names a per-instance group's NATS consumer apart for every id, keeping the name of an id of letters, digits and - only", () => {
    // Unchanged: what an upgrade finds on the server is the consumer it reads.
    assert.equal(consumerName('eventgate-live-web-0', 'web-0'), 'eventgate-live-web-0');
    assert.equal(consumerName('eventgate-feed.eu-web-0', 'web-0'), 'eventgate-feed_eu-web-0');
    assert.equal(consumerName('billing.v2'), 'billing_v2');
    // `.` and `_` both become `_`: ids that hold them add their hash.
    const ids = ['web.0', 'web_0', 'web-0', 'web.0.x', 'web_0_x', 'web_0.x', 'a', 'a.b-c', 'a_b-c'];
    const names = ids.map((id) => consumerName(`eventgate-live-${id}`, id));
    assert.equal(new Set(names).size, ids.length, names.join(' '));
    for (const name of names) assert.match(name, /^[A-Za-z0-9_-]+$/);
    assert.match(consumerName('eventgate-live-web.0', 'web.0'), /^eventgate-live-web_0-[0-9a-f]{10}$/);
    // A renamed route's group taken over on this instance (`-2`) keeps the rule.
    assert.notEqual(consumerName('eventgate-live-web.0-2', 'web.0'), consumerName('eventgate-live-web_0-2', 'web_0'));
  });
});
