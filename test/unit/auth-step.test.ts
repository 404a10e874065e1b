import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SignJWT } from 'jose';
import { authStep } from '../../src/kinds/steps/auth.js';
import type { StepCompileContext } from '../../src/kinds/contracts.js';
import type { Message, MessageContext, RequestMeta } from '../../src/core/message.js';
import { isStop } from '../../src/core/outcome.js';

const SECRET = 'unit-test-secret-that-is-32-bytes-long';

function compileCtx(problems: string[]): StepCompileContext {
  return {
    report: (path, code, message) => problems.push(`${path.join('.')} ${code} ${message}`),
    compileExpression: () => undefined,
    compileJsonSchema: () => undefined,
    readFile: () => undefined,
    checkBroker: () => true,
    checkTopic: () => true,
    checkQos: () => true,
  };
}

const message = (): Message => ({ value: {}, key: null, headers: {}, topic: null, partition: null, offset: null, timestamp: 0 });

describe('auth step, per connection', () => {
  it('verifies a WebSocket handshake once, then refuses its frames after the token expires', async (t) => {
    t.mock.timers.enable({ apis: ['Date'], now: Date.now() });
    const problems: string[] = [];
    const step = authStep.compile({ jwt: { secret: SECRET, query: 'access_token' } }, compileCtx(problems))!;
    assert.deepEqual(problems, []);
    const token = await new SignJWT({ sub: 'ws-client' }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('1m').sign(new TextEncoder().encode(SECRET));
    const request: RequestMeta = { headers: {}, query: { access_token: token }, remoteAddress: '127.0.0.1' };

    const admitted = await step.admit!(request);
    assert.deepEqual(admitted.ok && admitted.identity?.principal, 'ws-client');

    const ctx: MessageContext = { route: 'r', request, query: request.query };
    const first = await step.run(message(), ctx);
    assert.equal(isStop(first), false);
    assert.equal(ctx.identity?.principal, 'ws-client');
    assert.equal(ctx.query?.access_token, undefined, 'the token is dropped from $query');

    t.mock.timers.tick(2 * 60_000);
    const later = await step.run(message(), { route: 'r', request, query: request.query });
    assert.ok(isStop(later) && later.stop === 'rejected');
    assert.equal(later.problem.status, 401);
    assert.match(later.problem.detail, /expired/);
  });

  it('does not let a message without a client request through', async () => {
    const step = authStep.compile({ apiKey: { keys: { a: 'long-enough-key-1234' } } }, compileCtx([]))!;
    const r = await step.run(message(), { route: 'r' });
    assert.ok(isStop(r) && r.stop === 'rejected' && r.problem.status === 401);
  });
});
