import assert from 'node:assert/strict';
import type { HttpReply } from './clients.js';
import type { RunningGateway } from './gateway.js';
import { fetch } from './http.js';

export async function readyz(gw: RunningGateway): Promise<{ status: number; body: any }> {
  const res = await fetch(`${gw.adminUrl}/readyz`);
  return { status: res.status, body: await res.json() };
}

/**
 * Publishes `total` numbered messages from 4 concurrent clients and takes the server down once
 * message `downAt` is reached: what every outage test does. Returns the messages answered 200
 * (with their answer) and how many were refused; anything but 200 or 503 fails the test.
 */
export async function publishThroughOutage(
  send: (i: number) => Promise<HttpReply>,
  down: () => Promise<void>,
  options: { total?: number; downAt?: number } = {},
): Promise<{ acked: { i: number; reply: HttpReply }[]; refused: number }> {
  const total = options.total ?? 160;
  const downAt = options.downAt ?? 40;
  const acked: { i: number; reply: HttpReply }[] = [];
  let refused = 0;
  let stopped: Promise<void> | undefined;
  await Promise.all(
    [0, 1, 2, 3].map(async (lane) => {
      for (let i = lane; i < total; i += 4) {
        if (i >= downAt && !stopped) stopped = down();
        const reply = await send(i);
        if (reply.status === 200) acked.push({ i, reply });
        else {
          assert.equal(reply.status, 503, reply.text);
          assert.equal(reply.body.code, 'EG_BROKER_UNAVAILABLE');
          refused++;
        }
      }
    }),
  );
  await stopped;
  assert.ok(refused > 0, 'some publishes were refused during the outage');
  return { acked, refused };
}
