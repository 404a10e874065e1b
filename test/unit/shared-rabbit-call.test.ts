import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
// Imported under another name: scripts/run-tests.js boots the run's node for a file whose text
// calls the function by its own name, and this file must get none.
import { sharedRabbit as plainNode, sharedSizeLimitedRabbit as sizeLimitedNode, unseenCall } from '../helpers/shared-rabbit.js';

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
