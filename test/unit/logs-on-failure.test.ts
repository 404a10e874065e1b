import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { inspect } from 'node:util';
import { type RunningGateway, withLogsOnFailure } from '../helpers/gateway.js';

// A failure seen once on a loaded machine is read from the run's output only: the spec reporter
// prints a failed test's error as util.inspect does.
describe('withLogsOnFailure', () => {
  const gateway = { logs: [{ level: 40, msg: 'consumer joined group', route: 'changing' }], stderr: () => 'the stderr' } as unknown as RunningGateway;

  const failure = async (fail: () => void) => {
    try {
      await withLogsOnFailure(
        () => [gateway],
        async () => fail(),
      );
    } catch (err) {
      return err as Error;
    }
    assert.fail('withLogsOnFailure did not rethrow');
  };

  it("shows each gateway's log where the test reporter prints an assertion's failure", async () => {
    const err = await failure(() => assert.deepEqual([1, 2], [1, 3], 'each record once'));
    assert.ok(err instanceof assert.AssertionError);
    const printed = inspect(err);
    assert.match(printed, /each record once/);
    assert.match(printed, /gateway 1's log:\n\{"level":40,"msg":"consumer joined group","route":"changing"\}\nstderr: the stderr/);
  });

  it('and for any other error', async () => {
    const err = await failure(() => {
      throw new Error('timed out waiting for a log line');
    });
    assert.match(inspect(err), /timed out waiting for a log line[\s\S]*gateway 1's log:\n\{"level":40,"msg":"consumer joined group"/);
  });

  it('passes on what a test that succeeds returns', async () => {
    assert.equal(
      await withLogsOnFailure(
        () => [gateway],
        async () => 42,
      ),
      42,
    );
  });
});
