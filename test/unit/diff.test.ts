import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { describe, it } from 'node:test';
import { defaultRegistry } from '../../src/kinds/index.js';
import { loadPlan } from '../../src/plan/compile.js';
import { diffPlans, type PlanDiff } from '../../src/plan/diff.js';
import type { Plan } from '../../src/plan/types.js';

const registry = defaultRegistry();

/** Compiles configs in one directory, so two versions refer to the same files. */
function workspace() {
  const dir = mkdtempSync(join(tmpdir(), 'eventgate-diff-'));
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
const reconfigurable = () => true;
const routes = (d: PlanDiff) => ({ change: [...d.routes.change].sort(), keep: [...d.routes.keep].sort(), add: d.routes.add, remove: d.routes.remove });

describe('diffPlans', () => {
  it('starts everything on the first plan', async () => {
    const compile = workspace();
    const d = diffPlans(undefined, await compile(config(), { 'schemas/s.json': schema(1) }), reconfigurable);
    assert.deepEqual(d.brokers.add, ['local']);
    assert.deepEqual(d.listeners.add, ['api', 'push']);
    assert.deepEqual(d.routes.add, ['validated', 'filtered', 'plain']);
  });

  it('changes nothing for the same config, or one whose keys are only reordered', async () => {
    const compile = workspace();
    const a = await compile(config(), { 'schemas/s.json': schema(1) });
    const b = await compile(config({ keyOrder: true }));
    const d = diffPlans(a, b, reconfigurable);
    assert.deepEqual([d.brokers.change, d.listeners.change, d.routes.change, d.routes.add, d.routes.remove], [[], [], [], [], []]);
    assert.deepEqual(d.admin, 'keep');
  });

  it('rebuilds only the routes that use a changed chain', async () => {
    const compile = workspace();
    const d = diffPlans(await compile(config(), { 'schemas/s.json': schema(1) }), await compile(config({ filter: 'a > 2' })), reconfigurable);
    assert.deepEqual(routes(d), { change: ['filtered'], keep: ['plain', 'validated'], add: [], remove: [] });
    assert.deepEqual(d.listeners.change, []);
  });

  it('rebuilds the routes that use a schema file whose content changed, though the config did not', async () => {
    const compile = workspace();
    const a = await compile(config(), { 'schemas/s.json': schema(1) });
    const b = await compile(config(), { 'schemas/s.json': schema(2) });
    assert.notEqual(a.version, b.version);
    assert.deepEqual(routes(diffPlans(a, b, reconfigurable)), { change: ['validated'], keep: ['filtered', 'plain'], add: [], remove: [] });
  });

  it('rebinds a listener whose port changed and rebuilds the routes on it, keeping the rest', async () => {
    const compile = workspace();
    const d = diffPlans(await compile(config({ apiPort: 8001 }), { 'schemas/s.json': schema(1) }), await compile(config({ apiPort: 8002 })), reconfigurable);
    assert.deepEqual(d.listeners.change, ['api']);
    assert.deepEqual(d.listeners.rebind, ['api']);
    assert.deepEqual(routes(d), { change: ['filtered', 'validated'], keep: ['plain'], add: [], remove: [] });
  });

  it('reconfigures a listener in place when only a non-socket option changed, keeping its routes', async () => {
    const compile = workspace();
    const d = diffPlans(await compile(config(), { 'schemas/s.json': schema(1) }), await compile(config({ maxBody: 1000 })), reconfigurable);
    assert.deepEqual(d.listeners.change, ['api']);
    assert.deepEqual(d.listeners.rebind, []);
    assert.deepEqual(routes(d).change, []);
  });

  // Regression: the socket key held only port and host, so a listener that changed kind on the
  // same port kept its socket and was handed the other kind's options.
  it('rebinds a listener that changes kind on the same port', async () => {
    const compile = workspace();
    const d = diffPlans(await compile(config(), { 'schemas/s.json': schema(1) }), await compile(config({ pushKind: 'http' })), reconfigurable);
    assert.deepEqual(d.listeners.rebind, ['push']);
  });

  it('keeps a broker reconfigured in place with its routes, but rebuilds the routes of a replaced one', async () => {
    const compile = workspace();
    const a = await compile(config(), { 'schemas/s.json': schema(1) });
    const b = await compile(config({ retain: 10 }));
    const inPlace = diffPlans(a, b, () => true);
    assert.deepEqual(inPlace.brokers.change, ['local']);
    assert.deepEqual(routes(inPlace).change, []);
    const replaced = diffPlans(a, b, () => false);
    assert.deepEqual(routes(replaced).change, ['filtered', 'plain', 'validated']);
  });

  it('adds and removes routes by name', async () => {
    const compile = workspace();
    const a = await compile(config(), { 'schemas/s.json': schema(1) });
    const b = await compile(config().replace('name: plain', 'name: renamed'));
    const d = diffPlans(a, b, reconfigurable);
    assert.deepEqual([d.routes.add, d.routes.remove], [['renamed'], ['plain']]);
  });

  it('starts, restarts and stops the admin server as its section appears, moves and goes', async () => {
    const compile = workspace();
    const none = await compile(config(), { 'schemas/s.json': schema(1) });
    const at1 = await compile(config({ adminPort: 9001 }));
    const at2 = await compile(config({ adminPort: 9002 }));
    assert.equal(diffPlans(none, at1, reconfigurable).admin, 'start');
    assert.equal(diffPlans(at1, at1, reconfigurable).admin, 'keep');
    assert.equal(diffPlans(at1, at2, reconfigurable).admin, 'restart');
    assert.equal(diffPlans(at2, none, reconfigurable).admin, 'stop');
  });
});
