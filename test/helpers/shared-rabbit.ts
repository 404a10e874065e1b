import { existsSync, readFileSync } from 'node:fs';
import { relative } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import type { RabbitNode, RabbitServer } from './servers.js';
import { rabbitCtl, startRabbit } from './servers.js';

/**
 * One RabbitMQ for a whole test run. A node takes ~5 s of a core to boot (far more when the run
 * keeps both cores busy) and a few hundred MB, and most files only need queues of their own, so
 * scripts/run-tests.js starts one (shared-rabbit-main.ts) beside the tests and names, in this
 * variable, the file where that node's address appears once it answers. Each test file that asks
 * for it gets a virtual host of its own, named after the file: exchanges, queues, bindings and
 * permissions are per vhost, so files running at the same time cannot see each other's. The node
 * boots with those vhosts already defined (a `rabbitmqctl` call costs ~2 s of a core). Users are
 * node-wide: a file that adds one names it after its process. A file that stops, freezes or
 * reconfigures its server (outages, `max_message_size`, `consumer_timeout`) calls startRabbit().
 */
export const SHARED_RABBIT_ENV = 'EVENTGATE_TEST_RABBIT';

/** What the run's server process writes to the file: the node and the vhosts it has, or why it did not start. */
export type SharedRabbitInfo = { node: RabbitNode; vhosts: string[] } | { error: string };

const testRoot = fileURLToPath(new URL('../', import.meta.url));

/** The vhost of a test file on the shared node: its path under dist/test, `e2e/amqp-route-rebind`. */
export function vhostFor(testFile: string): string {
  return relative(testRoot, testFile).replace(/\.test\.js$/, '');
}

let calls = 0;

/**
 * A vhost of this file's own on the run's shared RabbitMQ, or, when the file runs without one
 * (`node --test dist/test/e2e/x.test.js`), a server of its own as startRabbit() starts. `down`,
 * `up` and `pid` are not offered on the shared one (they would take it from the other files).
 */
export async function sharedRabbit(): Promise<RabbitServer> {
  const file = process.env[SHARED_RABBIT_ENV];
  if (!file) return startRabbit();
  const { node, vhosts } = await sharedNode(file);
  const ctl = rabbitCtl(node);
  // A second call in the file, or a file the runner did not start the node for, makes one.
  const vhost = `${vhostFor(process.argv[1] ?? 'test')}${++calls > 1 ? `-${calls}` : ''}`;
  if (!vhosts.includes(vhost)) {
    await ctl('add_vhost', vhost);
    await ctl('set_permissions', '-p', vhost, 'guest', '.*', '.*', '.*');
  }
  const notHere = (what: string) => () => {
    throw new Error(`${what}: the run's shared RabbitMQ serves other test files too; a file that needs this starts its own (startRabbit)`);
  };
  return {
    url: `amqp://guest:guest@127.0.0.1:${node.port}/${encodeURIComponent(vhost)}`,
    host: '127.0.0.1',
    port: node.port,
    dir: node.home,
    vhost,
    node,
    ctl,
    pid: notHere('pid()'),
    down: notHere('down()'),
    up: notHere('up()'),
    // The vhost goes with the node at the end of the run (a delete_vhost would cost a rabbitmqctl).
    async stop() {},
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
