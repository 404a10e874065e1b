import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, it } from 'node:test';
import { defaultRegistry } from '../../src/kinds/index.js';
import { loadPlan } from '../../src/plan/compile.js';
import { memoryBroker } from '../../src/kinds/brokers/memory.js';
import { diffPlans, type Change, type ChangeOp } from '../../src/plan/diff.js';
import type { Plan } from '../../src/plan/types.js';
import { tempDir } from '../helpers/reaper.js';

const registry = defaultRegistry();

/** Compiles configs in one directory, so two versions refer to the same files. */
function workspace() {
  const dir = tempDir('eventgate-diff');
  return async (yaml: string, files: Record<string, string> = {}): Promise<Plan> => {
    for (const [name, text] of Object.entries(files)) {
      mkdirSync(dirname(join(dir, name)), { recursive: true });
      writeFileSync(join(dir, name), text);
    }
    writeFileSync(join(dir, 'gateway.yaml'), yaml);
    const { plan, diagnostics } = await loadPlan(join(dir, 'gateway.yaml'), { registry, env: {} });
    assert.deepEqual(diagnostics, []);
    return plan!;
  };
}

function config(o: { retain?: number; apiPort?: number; maxBody?: number; filter?: string; pushKind?: string; adminPort?: number; keyOrder?: boolean } = {}): string {
  const api = o.keyOrder ? `{ port: ${o.apiPort ?? 0}, kind: http }` : `{ kind: http, port: ${o.apiPort ?? 0}${o.maxBody ? `, maxBodyBytes: ${o.maxBody}` : ''} }`;
  return `
version: 1
${o.adminPort !== undefined ? `admin: { port: ${o.adminPort} }` : ''}
brokers:
  local: { kind: memory${o.retain ? `, retain: ${o.retain}` : ''} }
listeners:
  api: ${api}
  push: { kind: ${o.pushKind ?? 'websocket'}, port: 7000 }
chains:
  checked:
    - validate: { schema: schemas/s.json }
  picky:
    - filter: ${o.filter ?? 'a > 1'}
routes:
  - name: validated
    from: { listener: api, path: /v }
    through: checked
    to: { broker: local, topic: t }
  - name: filtered
    from: { listener: api, path: /f }
    through: picky
    to: { broker: local, topic: t }
  - name: plain
    from: { broker: local, topic: t }
    to: ${o.pushKind === 'http' ? '{ broker: local, topic: u }' : '{ listener: push, path: /ws }'}
`;
}

const schema = (max: number) => JSON.stringify({ type: 'object', properties: { a: { maximum: max } } });
/** The names of each op, sorted: `{keep: [...], replace: [...]}` (ops with no names are left out). */
function ops<P>(changes: readonly Change<P>[]): Partial<Record<ChangeOp, string[]>> {
  const out: Partial<Record<ChangeOp, string[]>> = {};
  for (const c of changes) (out[c.op] ??= []).push(c.name);
  for (const names of Object.values(out)) names.sort();
  return out;
}

describe('diffPlans', () => {
  it('adds everything on the first plan', async () => {
    const compile = workspace();
    const d = diffPlans(undefined, await compile(config(), { 'schemas/s.json': schema(1) }), registry);
    assert.deepEqual(ops(d.brokers), { add: ['local'] });
    assert.deepEqual(ops(d.listeners), { add: ['api', 'push'] });
    assert.deepEqual(ops(d.routes), { add: ['filtered', 'plain', 'validated'] });
    assert.equal(d.admin, undefined);
  });

  it('keeps everything for the same config, or one whose keys are only reordered', async () => {
    const compile = workspace();
    const a = await compile(config(), { 'schemas/s.json': schema(1) });
    const b = await compile(config({ keyOrder: true }));
    const d = diffPlans(a, b, registry);
    assert.deepEqual([ops(d.brokers), ops(d.listeners), ops(d.routes)], [{ keep: ['local'] }, { keep: ['api', 'push'] }, { keep: ['filtered', 'plain', 'validated'] }]);
  });

  it('carries the plans themselves, so nothing needs a lookup by name', async () => {
    const compile = workspace();
    const a = await compile(config(), { 'schemas/s.json': schema(1) });
    const b = await compile(config({ filter: 'a > 2' }));
    const filtered = diffPlans(a, b, registry).routes.find((c) => c.name === 'filtered')!;
    assert.equal(filtered.op, 'replace');
    assert.ok(filtered.op === 'replace' && filtered.before === a.routes.get('filtered') && filtered.after === b.routes.get('filtered'));
  });

  it('rebuilds only the routes that use a changed chain', async () => {
    const compile = workspace();
    const d = diffPlans(await compile(config(), { 'schemas/s.json': schema(1) }), await compile(config({ filter: 'a > 2' })), registry);
    assert.deepEqual(ops(d.routes), { replace: ['filtered'], keep: ['plain', 'validated'] });
    assert.deepEqual(ops(d.listeners), { keep: ['api', 'push'] });
  });

  it('rebuilds the routes that use a schema file whose content changed, though the config did not', async () => {
    const compile = workspace();
    const a = await compile(config(), { 'schemas/s.json': schema(1) });
    const b = await compile(config(), { 'schemas/s.json': schema(2) });
    assert.notEqual(a.version, b.version);
    assert.deepEqual(ops(diffPlans(a, b, registry).routes), { replace: ['validated'], keep: ['filtered', 'plain'] });
  });

  it('replaces a listener whose port changed and rebuilds the routes on it, keeping the rest', async () => {
    const compile = workspace();
    const d = diffPlans(await compile(config({ apiPort: 8001 }), { 'schemas/s.json': schema(1) }), await compile(config({ apiPort: 8002 })), registry);
    assert.deepEqual(ops(d.listeners), { replace: ['api'], keep: ['push'] });
    assert.deepEqual(ops(d.routes), { replace: ['filtered', 'validated'], keep: ['plain'] });
    const why = d.routes.find((c) => c.name === 'validated');
    assert.equal(why?.op === 'replace' && why.why, "listener 'api' is replaced");
  });

  it('reconfigures a listener in place when only a non-socket option changed, keeping its routes', async () => {
    const compile = workspace();
    const d = diffPlans(await compile(config(), { 'schemas/s.json': schema(1) }), await compile(config({ maxBody: 1000 })), registry);
    assert.deepEqual(ops(d.listeners), { reconfigure: ['api'], keep: ['push'] });
    assert.equal(ops(d.routes).replace, undefined);
  });

  // Regression: the socket key held only port and host, so a listener that changed kind on the
  // same port kept its socket and was handed the other kind's options.
  it('replaces a listener that changes kind on the same port', async () => {
    const compile = workspace();
    const d = diffPlans(await compile(config(), { 'schemas/s.json': schema(1) }), await compile(config({ pushKind: 'http' })), registry);
    assert.deepEqual(ops(d.listeners).replace, ['push']);
  });

  it('keeps a broker reconfigured in place with its routes, but rebuilds the routes of a replaced one', async () => {
    const compile = workspace();
    const a = await compile(config(), { 'schemas/s.json': schema(1) });
    const b = await compile(config({ retain: 10 }));
    const inPlace = diffPlans(a, b, registry);
    assert.deepEqual(ops(inPlace.brokers), { reconfigure: ['local'] });
    assert.equal(ops(inPlace.routes).replace, undefined);
    const notInPlace = defaultRegistry().broker({ ...memoryBroker, canReconfigure: () => false });
    const replaced = diffPlans(a, b, notInPlace);
    assert.deepEqual(ops(replaced.brokers), { replace: ['local'] });
    assert.deepEqual(ops(replaced.routes), { replace: ['filtered', 'plain', 'validated'] });
  });

  // Points 280-283: a networked broker whose reload changed only keys read per publish or per
  // message is reconfigured in place, its consume routes kept; any other key still replaces it.
  it('reconfigures an mqtt, nats or amqp broker in place when only keys read per publish changed, and replaces it for any other', async () => {
    const compile = workspace();
    const networked = (extra: { mqtt?: string; nats?: string; amqp?: string } = {}) => `
version: 1
brokers:
  m: { kind: mqtt, url: "mqtt://127.0.0.1:1883", clientId: eg${extra.mqtt ?? ''} }
  n: { kind: nats, servers: "nats://127.0.0.1:4222"${extra.nats ?? ''} }
  a: { kind: amqp, url: "amqp://127.0.0.1:5672"${extra.amqp ?? ''} }
routes:
  - { name: fromM, from: { broker: m, topic: in/m, group: g }, to: { broker: n, topic: out.n } }
  - { name: fromN, from: { broker: n, topic: in.n, group: g }, to: { broker: a, topic: out.a } }
  - { name: fromA, from: { broker: a, topic: in.a, group: g }, to: { broker: m, topic: out/m } }
`;
    const before = await compile(networked());
    const inPlace = [
      { mqtt: ', ackTimeoutMs: 2500', nats: ', ackTimeoutMs: 2500', amqp: ', ackTimeoutMs: 2500' },
      { mqtt: ', retain: true', nats: ', corePendingBytes: 1000', amqp: ', persistent: false, mandatory: false' },
    ];
    for (const extra of inPlace) {
      const d = diffPlans(before, await compile(networked(extra)), registry);
      assert.deepEqual(ops(d.brokers), { reconfigure: ['a', 'm', 'n'] }, JSON.stringify(extra));
      assert.deepEqual(ops(d.routes), { keep: ['fromA', 'fromM', 'fromN'] }, JSON.stringify(extra));
    }
    const replacing = [
      { mqtt: ', ackTimeoutMs: 2500, keepaliveSeconds: 10', nats: ', ackTimeoutMs: 2500, pingIntervalMs: 2000', amqp: ', ackTimeoutMs: 2500, prefetch: 5' },
      { mqtt: ', qos: 0', nats: ', prefetch: 5', amqp: ', lagPollMs: 1000' },
      { mqtt: ', username: u', nats: ', user: u', amqp: ', connectTimeoutMs: 1000' },
    ];
    for (const extra of replacing) {
      const d = diffPlans(before, await compile(networked(extra)), registry);
      assert.deepEqual(ops(d.brokers), { replace: ['a', 'm', 'n'] }, JSON.stringify(extra));
      assert.deepEqual(ops(d.routes), { replace: ['fromA', 'fromM', 'fromN'] }, JSON.stringify(extra));
    }
    // The url itself: another server.
    const moved = diffPlans(before, await compile(networked().replace('127.0.0.1:1883', '127.0.0.1:1884')), registry);
    assert.deepEqual(ops(moved.brokers), { keep: ['a', 'n'], replace: ['m'] });
  });

  it('reconfigures a kafka broker in place when only producer keys read per request or the probe period changed (nested keys), and replaces it for any other', async () => {
    const compile = workspace();
    const kafka = (extra = '') => `
version: 1
brokers:
  k: { kind: kafka, brokers: "127.0.0.1:9092"${extra} }
routes:
  - { name: fromK, from: { broker: k, topic: in, group: g }, to: { broker: k, topic: out } }
`;
    const before = await compile(kafka());
    for (const extra of [', producer: { ackTimeoutMs: 2500 }', ', producer: { acks: leader, lingerMs: 5, maxBatchRecords: 10, maxBatchBytes: 2048, compression: zstd }, healthCheckIntervalMs: 500']) {
      const d = diffPlans(before, await compile(kafka(extra)), registry);
      assert.deepEqual(ops(d.brokers), { reconfigure: ['k'] }, extra);
      assert.deepEqual(ops(d.routes), { keep: ['fromK'] }, extra);
    }
    for (const extra of [
      ', producer: { ackTimeoutMs: 2500, idempotent: true }',
      ', producer: { ackTimeoutMs: 2500 }, consumer: { maxWaitMs: 200 }',
      ', connectionTimeoutMs: 1000',
      ', clientId: other',
    ]) {
      const d = diffPlans(before, await compile(kafka(extra)), registry);
      assert.deepEqual(ops(d.brokers), { replace: ['k'] }, extra);
      assert.deepEqual(ops(d.routes), { replace: ['fromK'] }, extra);
    }
  });

  it('adds and removes routes by name', async () => {
    const compile = workspace();
    const a = await compile(config(), { 'schemas/s.json': schema(1) });
    const b = await compile(config().replace('name: plain', 'name: renamed'));
    assert.deepEqual(ops(diffPlans(a, b, registry).routes), { add: ['renamed'], keep: ['filtered', 'validated'], remove: ['plain'] });
  });

  it('adds, replaces and removes the admin server as its section appears, moves and goes', async () => {
    const compile = workspace();
    const none = await compile(config(), { 'schemas/s.json': schema(1) });
    const at1 = await compile(config({ adminPort: 9001 }));
    const at2 = await compile(config({ adminPort: 9002 }));
    assert.equal(diffPlans(none, at1, registry).admin?.op, 'add');
    assert.equal(diffPlans(at1, at1, registry).admin?.op, 'keep');
    assert.equal(diffPlans(at1, at2, registry).admin?.op, 'replace');
    assert.equal(diffPlans(at2, none, registry).admin?.op, 'remove');
  });
});
