import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
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

/**
 * Stops a server with SIGSTOP (its whole process group unless `group` is false) and returns once
 * every thread of those processes is stopped: kill() only queues the signal, and on a loaded
 * machine a server answered a request sent right after it (spec-checklist 1733). Resume it with
 * `process.kill(-pid, 'SIGCONT')` (or `pid`).
 */
export async function freezeProcess(pid: number, group = true): Promise<void> {
  process.kill(group ? -pid : pid, 'SIGSTOP');
  const pids = group ? processesOfGroup(pid) : [pid];
  const deadline = Date.now() + 5000;
  while (!pids.every(allThreadsStopped)) {
    if (Date.now() > deadline) assert.fail(`process ${pid} did not stop within 5 s of SIGSTOP`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** x86-64's epoll_wait, epoll_pwait and epoll_pwait2: the system calls a Node process's event loop waits in. */
const EPOLL_WAITS = new Set(['232', '281', '441']);

/**
 * freezeProcess() for one Node process, stopped while its event loop waits for I/O (its main
 * thread in epoll, per /proc/<pid>/syscall), never in the middle of a callback: tried again until
 * so. Resumed with SIGCONT, such a loop runs its timers due before it reads what came meanwhile
 * (the wait returns EINTR), as a process starved of CPU past its timers may.
 */
export async function freezeWhileIdle(pid: number): Promise<void> {
  const deadline = Date.now() + 10000;
  for (;;) {
    await freezeProcess(pid, false);
    if (EPOLL_WAITS.has(readFileSync(`/proc/${pid}/syscall`, 'utf8').split(' ')[0]!)) return;
    process.kill(pid, 'SIGCONT');
    if (Date.now() > deadline) assert.fail(`process ${pid} was not found waiting in its event loop within 10 s`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** The processes of process group `pgid` (field 5 of /proc/<pid>/stat). */
function processesOfGroup(pgid: number): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const fields = readStat(`/proc/${entry}/stat`);
    if (fields !== undefined && Number(fields[2]) === pgid) pids.push(Number(entry));
  }
  return pids;
}

/** Every thread of `pid` in state T (stopped); a process gone since counts as stopped. */
function allThreadsStopped(pid: number): boolean {
  let threads: string[];
  try {
    threads = readdirSync(`/proc/${pid}/task`);
  } catch {
    return true;
  }
  return threads.every((t) => {
    const state = readStat(`/proc/${pid}/task/${t}/stat`)?.[0];
    return state === undefined || state === 'T' || state === 't';
  });
}

/** The fields of a /proc stat line after the command's `(...)`: state first. */
function readStat(file: string): string[] | undefined {
  try {
    const text = readFileSync(file, 'utf8');
    return text.slice(text.lastIndexOf(') ') + 2).split(' ');
  } catch {
    return undefined;
  }
}
