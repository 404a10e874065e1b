import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { sharedRabbitKinds } from '../helpers/shared-rabbit-kinds.js';
// Imported under another name: scripts/run-tests.js boots the run's node for a file whose text
// calls the function by its own name, and this file must get none.
import { sharedRabbit as plainNode, sharedSizeLimitedRabbit as sizeLimitedNode, unseenCall, vhostOfCall, vhostsOfFile } from '../helpers/shared-rabbit.js';

/**
 * A file run by scripts/run-tests.js whose text does not call a shared kind's function by name
 * (`useRabbit(sharedRabbit)`) gets no node of that kind from the runner: its call fails saying
 * why, where it booted a node of the file's own and passed, slower, unnoticed.
 */
describe('shared RabbitMQ: a call the runner did not see in the file', () => {
  const names = ['EVENTGATE_TEST_SHARED_RABBITS', 'EVENTGATE_TEST_RABBIT', 'EVENTGATE_TEST_RABBIT_SIZE_LIMITED'] as const;
  const saved = new Map(names.map((n) => [n, process.env[n]]));
  before(() => {
    // As the runner sets them when no selected file's text called either function.
    process.env.EVENTGATE_TEST_SHARED_RABBITS = '';
    delete process.env.EVENTGATE_TEST_RABBIT;
    delete process.env.EVENTGATE_TEST_RABBIT_SIZE_LIMITED;
  });
  after(() => {
    for (const [n, v] of saved) {
      if (v === undefined) delete process.env[n];
      else process.env[n] = v;
    }
  });

  it('fails, naming the call to write out, for either kind', async () => {
    await assert.rejects(plainNode(), { message: unseenCall('sharedRabbit') });
    await assert.rejects(sizeLimitedNode(), { message: unseenCall('sharedSizeLimitedRabbit') });
  });
});

/**
 * The runner's node boots with a vhost for each call a file's text makes (the first the file's
 * own, then `-2`, `-3`, as the calls take them, either kind counted): a vhost made at a call is
 * four admin calls more (they were `rabbitmqctl` runs, over 100 s of a loaded run for each block).
 */
describe('shared RabbitMQ: the vhosts a file takes', () => {
  it('one per call of either function in its text, named as the calls take them', () => {
    const file = join(fileURLToPath(new URL('../', import.meta.url)), 'e2e', 'x.test.js');
    // Spelled from the kinds: this file's own text must not call either by name (the runner would boot a node for it).
    const call = (kind: keyof typeof sharedRabbitKinds) => `useRabbit(() => ${sharedRabbitKinds[kind].call}());`;
    const text = [call('plain'), call('size-limited'), call('plain')].join('\n');
    assert.deepEqual(vhostsOfFile(file, text), ['e2e/x', 'e2e/x-2', 'e2e/x-3']);
    assert.deepEqual(
      vhostsOfFile(file, text),
      [1, 2, 3].map((n) => vhostOfCall(file, n)),
    );
    // A file that names neither (the runner gives it no node) still has its own, as before.
    assert.deepEqual(vhostsOfFile(file, ''), ['e2e/x']);
  });
});
