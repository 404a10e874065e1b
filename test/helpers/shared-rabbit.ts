import { existsSync, readFileSync } from 'node:fs';
import { relative } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import type { RabbitNode, RabbitServer, RabbitUser } from './servers.js';
import { rabbitAdmin, rabbitCall, startRabbit } from './servers.js';
import { type SharedRabbitKindName, sharedRabbitKinds } from './shared-rabbit-kinds.js';

/**
 * One RabbitMQ for a whole test run (of each kind, shared-rabbit-kinds.ts). A node takes ~5 s of a
 * core to boot (far more when the run keeps both cores busy) and a few hundred MB, and most files
 * only need queues of their own, so scripts/run-tests.js starts one (shared-rabbit-main.ts) beside
 * the tests and names, in the kind's variable, the file where that node's address appears once it
 * answers. Each test file that asks for it gets a virtual host of its own, named after the file,
 * and a user of its own allowed only there: exchanges, queues, bindings and permissions are per
 * vhost, so files running at the same time cannot see each other's; users are node-wide, so what
 * RabbitMQ sets per user (`set_user_limits`) goes on the file's own user, never on guest. The node
 * boots with those vhosts and users already defined (fewer steps for each file's start). A
 * file that stops, freezes or reconfigures its server (outages, `consumer_timeout`) calls startRabbit().
 */

/** What the run's server process writes to the file: the node and the vhosts it has, or why it did not start. */
export type SharedRabbitInfo = { node: RabbitNode; vhosts: string[] } | { error: string };

/** A vhost of the file's own on a shared node, and a user of its own there. */
export interface SharedRabbit extends RabbitServer {
  /** The file's own user (userFor), allowed everything in its vhost and nothing elsewhere. */
  user: string;
  /** `url` as that user instead of guest. */
  userUrl: string;
}

const testRoot = fileURLToPath(new URL('../', import.meta.url));

/** The vhost of a test file on the shared node: its path under dist/test, `e2e/amqp-route-rebind`. */
export function vhostFor(testFile: string): string {
  return relative(testRoot, testFile).replace(/\.test\.js$/, '');
}

/** The vhost of a file's `n`th call of a kind's function (one count for all kinds): the file's own, then `-2`, `-3`, ... */
export function vhostOfCall(testFile: string, n: number): string {
  return `${vhostFor(testFile)}${n > 1 ? `-${n}` : ''}`;
}

/**
 * The vhosts a file's calls take: as many as its text calls a kind's function (as the runner
 * looks), so its node boots with each one defined: a vhost made at the call (rabbitAdmin) is four
 * calls more on the node for each describe block.
 */
export function vhostsOfFile(testFile: string, text: string): string[] {
  const calls = Object.values(sharedRabbitKinds).reduce((n, { call }) => n + text.split(`${call}(`).length - 1, 0);
  return Array.from({ length: Math.max(1, calls) }, (_, i) => vhostOfCall(testFile, i + 1));
}

/** The user of a vhost's own: `eg-e2e-amqp-publish-reopen`, its password the same. */
export function userFor(vhost: string): RabbitUser {
  const name = `eg-${vhost.replace(/[^A-Za-z0-9-]/g, '-')}`;
  return { name, password: name, vhost };
}

/**
 * A vhost of this file's own on the run's shared RabbitMQ, or, when the file runs without one
 * (`node --test dist/test/e2e/x.test.js`), on a server of its own with the same vhost and user.
 * `down`, `up` and `pid` are not offered (they would take the shared node from the other files).
 */
export function sharedRabbit(): Promise<SharedRabbit> {
  return sharedOf('plain');
}

/** As sharedRabbit(), on the run's node whose `max_message_size` is SIZE_LIMITED_RABBIT_MAX_MESSAGE_SIZE. */
export function sharedSizeLimitedRabbit(): Promise<SharedRabbit> {
  return sharedOf('size-limited');
}

let calls = 0;

async function sharedOf(kindName: SharedRabbitKindName): Promise<SharedRabbit> {
  const kind = sharedRabbitKinds[kindName];
  // A second call in the file gets a vhost (and user) of its own too, defined at boot as well (vhostsOfFile).
  const vhost = vhostOfCall(process.argv[1] ?? 'test', ++calls);
  const user = userFor(vhost);
  const file = process.env[kind.env];
  if (!file) {
    // Under scripts/run-tests.js, which boots a kind's node for the files whose text calls its function.
    if (process.env.EVENTGATE_TEST_SHARED_RABBITS !== undefined) throw new Error(unseenCall(kind.call));
    const own = await startRabbit({ advancedConfig: kind.advancedConfig, vhosts: [vhost], users: [user] });
    return onVhost(own.node, vhost, user, () => own.stop());
  }
  const { node, vhosts } = await sharedNode(file);
  if (!vhosts.includes(vhost)) {
    // Not defined at boot (a call the file's text does not spell out).
    const admin = rabbitAdmin(node);
    await admin.addVhost(vhost);
    await admin.setPermissions(vhost, 'guest', '.*', '.*', '.*');
    await admin.addUser(user.name, user.password);
    await admin.setPermissions(vhost, user.name, '.*', '.*', '.*');
  }
  // The vhost goes with the node at the end of the run.
  return onVhost(node, vhost, user, async () => {});
}

/**
 * Why a file run by scripts/run-tests.js got no shared node of a kind: the runner looks for the
 * call in the file's text, and this file's does not have it.
 */
export function unseenCall(call: string): string {
  return `scripts/run-tests.js booted no shared RabbitMQ for ${call}(): it boots one for the files whose text has \`${call}(\`, and this file's has not (write the call out: \`useRabbit(() => ${call}())\`, not \`useRabbit(${call})\`)`;
}

function onVhost(node: RabbitNode, vhost: string, user: RabbitUser, stop: () => Promise<void>): SharedRabbit {
  const notHere = (what: string) => () => {
    throw new Error(`${what}: the run's shared RabbitMQ serves other test files too; a file that needs this starts its own (startRabbit)`);
  };
  const at = `127.0.0.1:${node.port}/${encodeURIComponent(vhost)}`;
  return {
    url: `amqp://guest:guest@${at}`,
    userUrl: `amqp://${user.name}:${user.password}@${at}`,
    user: user.name,
    host: '127.0.0.1',
    port: node.port,
    dir: node.home,
    vhost,
    node,
    admin: rabbitAdmin(node),
    call: rabbitCall(node),
    pid: notHere('pid()'),
    down: notHere('down()'),
    up: notHere('up()'),
    stop,
  };
}

/** Waits for the runner's server to answer (it boots while the first files run), or for why it did not. */
async function sharedNode(file: string): Promise<{ node: RabbitNode; vhosts: string[] }> {
  const deadline = Date.now() + 180000;
  while (!existsSync(file)) {
    if (Date.now() > deadline) throw new Error(`the run's shared RabbitMQ did not start within 180 s (no ${file})`);
    await sleep(200);
  }
  const info = JSON.parse(readFileSync(file, 'utf8')) as SharedRabbitInfo;
  if ('error' in info) throw new Error(`the run's shared RabbitMQ did not start: ${info.error}`);
  return info;
}
