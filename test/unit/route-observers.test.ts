import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { pino } from 'pino';
import type { Delivery, Message } from '../../src/core/message.js';
import type { BrokerRuntime, ListenerRuntime } from '../../src/kinds/contracts.js';
import { defaultRegistry } from '../../src/kinds/index.js';
import { loadPlan } from '../../src/plan/compile.js';
import { RouteRuntime } from '../../src/runtime/route.js';
import type { TapChannel } from '../../src/telemetry/tap.js';
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
`;

/**
 * The route's observers (the tap, the log of a failed message) never change a message's fate:
 * settle() catches what they throw. Without that guard, an exception thrown as a consume route
 * settles a delivered message made its promise reject, and the broker gave the message back to
 * its server, which delivered it again: a duplicate (docs/spec-checklist.md, broker input audit).
 * Every real observer now catches its own failures (the tap shows a note for a value it cannot
 * write), so none is known to throw any more: this drives the route with a tap that throws, at
 * the route's own level, with a source broker and a target that do nothing else.
 */
describe("a consume route whose observer throws keeps the message's outcome", async () => {
  const dir = tempDir('eventgate-observers');
  after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'gateway.yaml'), yaml);
  const { plan } = await loadPlan(join(dir, 'gateway.yaml'), { registry: defaultRegistry(), env: {} });
  assert.ok(plan);

  /** The route, started on a source broker that hands it messages as `consume`, and a forward target answering as `send` does. */
  function route(send: (msg: Message) => Delivery | Promise<Delivery>) {
    let consume: ((msg: Message) => Promise<void>) | undefined;
    const broker = { name: 'local', subscribe: (_spec: unknown, handler: (msg: Message) => Promise<void>) => ((consume = handler), { stop: async () => undefined }) } as unknown as BrokerRuntime;
    const listener = { forwardTarget: () => ({ send }) } as unknown as ListenerRuntime;
    const logged: { msg: string; err?: string }[] = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void logged.push(JSON.parse(line)) });
    const tap = {
      active: true,
      publish: () => {
        throw new Error('the observer broke');
      },
    } as unknown as TapChannel;
    const deps = { brokers: new Map([['local', broker]]), listeners: new Map([['push', listener]]), logger, instanceId: 'i', tap: { channel: () => tap } };
    new RouteRuntime(plan!.routes.get('to-clients')!, deps).start();
    assert.ok(consume, 'the route subscribed');
    return { consume, logged };
  }

  const message = (n: number): Message => ({ value: { n }, key: null, headers: {}, topic: 't', partition: 0, offset: String(n), timestamp: 0 }) as Message;

  for (const [what, answer] of [
    ['a target that answers at once', (d: Delivery) => d],
    ['a target that answers later', (d: Delivery) => new Promise<Delivery>((resolve) => setImmediate(() => resolve(d)))],
  ] as const) {
    it(`delivered (${what}): consumed, not given back, sent once; the failure is logged`, async () => {
      const sent: Message[] = [];
      const r = route((msg) => {
        sent.push(msg);
        return answer({ listener: 'push', path: '/ws', clients: 1 });
      });
      await r.consume(message(1));
      assert.equal(sent.length, 1);
      const failure = r.logged.find((l) => l.msg === 'the log or the tap failed on a message; its outcome stands');
      assert.equal(failure?.err, 'the observer broke');
    });
  }
});
