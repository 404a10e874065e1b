// The run's shared RabbitMQ of one kind (shared-rabbit.ts, shared-rabbit-kinds.ts), started by scripts/run-tests.js:
//   node dist/test/helpers/shared-rabbit-main.js KIND INFO_FILE TEST_FILE...
// Boots a node of KIND with a vhost and a user for each call in each TEST_FILE (vhostsOfFile), writes its address (or why it
// did not boot) to INFO_FILE, and stops it, removing its directory, once its stdin ends: the runner
// closes it when the tests are over, and the kernel closes it if the runner dies, so the node never
// outlives the run.
import { readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { type SharedRabbitInfo, userFor, vhostsOfFile } from './shared-rabbit.js';
import { type SharedRabbitKind, type SharedRabbitKindName, sharedRabbitKinds } from './shared-rabbit-kinds.js';
import { startRabbit, type RabbitServer } from './servers.js';

const [kindName, infoFile, ...testFiles] = process.argv.slice(2);
const kind: SharedRabbitKind | undefined = Object.hasOwn(sharedRabbitKinds, kindName ?? '') ? sharedRabbitKinds[kindName as SharedRabbitKindName] : undefined;
if (!kind || !infoFile) {
  console.error(`usage: shared-rabbit-main.js KIND INFO_FILE TEST_FILE... (KIND: ${Object.keys(sharedRabbitKinds).join(', ')})`);
  process.exit(2);
}

/** Written whole and then renamed, so a test file never reads half of it. */
function publish(info: SharedRabbitInfo): void {
  writeFileSync(`${infoFile}.tmp`, JSON.stringify(info));
  renameSync(`${infoFile}.tmp`, infoFile);
}

let server: RabbitServer | undefined;
let stopping = false;

async function stop(): Promise<void> {
  if (stopping) return;
  stopping = true;
  await server?.stop();
  process.exit(0);
}

// Killed by a signal instead, the server helpers' reaper kills the node; its directory goes here.
process.on('exit', () => {
  if (server) rmSync(server.dir, { recursive: true, force: true, maxRetries: 5 });
});

process.stdin.on('end', () => void (server ? stop() : (stopping = true)));
process.stdin.resume();

try {
  const vhosts = testFiles.flatMap((file) => vhostsOfFile(file, readFileSync(file, 'utf8')));
  server = await startRabbit({ advancedConfig: kind.advancedConfig, vhosts, users: vhosts.map(userFor) });
  publish({ node: server.node, vhosts });
} catch (err) {
  publish({ error: (err as Error).message });
  process.exit(1);
}
// The run ended while the node booted.
if (stopping) {
  stopping = false;
  await stop();
}
