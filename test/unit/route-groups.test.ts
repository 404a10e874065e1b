import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import type { BrokerRuntime, ListenerRuntime, SubscribeSpec } from '../../src/kinds/contracts.js';
import { defaultRegistry } from '../../src/kinds/index.js';
import { loadPlan } from '../../src/plan/compile.js';
import { diffPlans } from '../../src/plan/diff.js';
import type { Plan } from '../../src/plan/types.js';
import { RouteRuntime } from '../../src/runtime/route.js';
import { tempDir } from '../helpers/reaper.js';

const yaml = `
version: 1
brokers:
  local: { kind: memory }
listeners:
  push: { kind: websocket, port: 0 }
  api: { kind: http, port: 0 }
routes:
  - name: in
    from: { listener: api, path: /in }
    to: { broker: local, topic: t }
  - name: to-clients
    from: { broker: local, topic: t }
    to: { listener: push, path: /ws }
  - name: to-topic
    from: { broker: local, topic: t }
    to: { broker: local, topic: u }
  - name: named
    from: { broker: local, topic: t, group: shared }
    to: { listener: push, path: /ws }
`;

describe('consumer groups of consume routes', () => {
  const dir = tempDir('eventgate-groups');
  writeFileSync(join(dir, 'gateway.yaml'), yaml);
  const loaded = loadPlan(join(dir, 'gateway.yaml'), { registry: defaultRegistry(), env: {} });

  async function groupsOf(instanceId: string, planned?: Plan): Promise<Record<string, string>> {
    const plan = planned ?? (await loaded).plan;
    const specs: SubscribeSpec[] = [];
    const broker = { name: 'local', subscribe: (spec: SubscribeSpec) => (specs.push(spec), { stop: async () => undefined }) } as unknown as BrokerRuntime;
    const listener = { forwardTarget: () => ({ send: async () => ({ listener: 'push', path: '/ws', clients: 0 }) }) } as unknown as ListenerRuntime;
    const deps = { brokers: new Map([['local', broker]]), listeners: new Map([['push', listener]]), logger: pino({ level: 'silent' }), instanceId };
    for (const route of plan!.routes.values()) new RouteRuntime(route, deps).start();
    return Object.fromEntries(specs.map((s) => [s.route, s.group]));
  }

  it('is eventgate-<route> by default, shared by every instance', async () => {
    assert.equal((await groupsOf('a'))['to-topic'], 'eventgate-to-topic');
    assert.equal((await groupsOf('b'))['to-topic'], 'eventgate-to-topic');
  });

  it('is per instance for a route whose only targets are websocket forwards, so every instance sees every message', async () => {
    assert.equal((await groupsOf('host-1'))['to-clients'], 'eventgate-to-clients-host-1');
    assert.equal((await groupsOf('host-2'))['to-clients'], 'eventgate-to-clients-host-2');
  });

  // A rebuilt route (after a reload) must rejoin its group, or it would start at the end of the
  // topic and skip what arrived during the swap.
  it('is the same for a route rebuilt by a reload', async () => {
    const before = (await loaded).plan!;
    // The reload changes the two consume routes' chains, so diffPlans has them rebuilt.
    const edited = yaml
      .replace('to: { broker: local, topic: u }', "through: [{ filter: 'true' }]\n    to: { broker: local, topic: u }")
      .replace(
        'from: { broker: local, topic: t }\n    to: { listener: push, path: /ws }',
        "from: { broker: local, topic: t }\n    through: [{ filter: 'true' }]\n    to: { listener: push, path: /ws }",
      );
    const dir2 = tempDir('eventgate-groups');
    writeFileSync(join(dir2, 'gateway.yaml'), edited);
    const after = (await loadPlan(join(dir2, 'gateway.yaml'), { registry: defaultRegistry(), env: {} })).plan!;
    const rebuilt = diffPlans(before, after, defaultRegistry())
      .routes.filter((c) => c.op === 'replace')
      .map((c) => c.name);
    assert.deepEqual(rebuilt.sort(), ['to-clients', 'to-topic']);
    const [groupsBefore, groupsAfter] = [await groupsOf('host-1', before), await groupsOf('host-1', after)];
    for (const route of rebuilt) assert.equal(groupsAfter[route], groupsBefore[route], route);
  });

  it('is the configured group when one is given', async () => {
    assert.equal((await groupsOf('host-1')).named, 'shared');
  });
});
