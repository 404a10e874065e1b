import { setTimeout as sleep } from 'node:timers/promises';
import { startGateway } from '../test/helpers/gateway.js';
import { kcatConsumeAll, kcatProduce, startKafka } from '../test/helpers/kafka.js';

/**
 * `node dist/bench/kafka-stalls.js slow [lateMs] [ackTimeoutMs] [forMs]` and
 * `node dist/bench/kafka-stalls.js stall [stallMs] [stalls]`: the figures of docs/scaling.md,
 * "Stalls and late answers", against librdkafka's mock cluster, one consume route `src → dst` with
 * no `deadletter`, the tests' short consumer sessions (sessionTimeoutMs 4000). Prints one JSON line.
 *
 * - slow: dst's leader answers every request `lateMs` late (3000) for `forMs` (15 000) while one
 *   record is consumed, `ackTimeoutMs` 2000: how many times dst has it, and how many produce
 *   requests the gateway sent for it.
 * - stall: `stalls` times (8), 4 records produced to src, then the gateway process stopped
 *   (SIGSTOP) for `stallMs` (6000), the default ackTimeoutMs: how many records dst has more than
 *   once, and how many times the member was dropped from its group (a new member id).
 *
 * Run it on a machine nothing else loads: a stall of the machine is a stall of the gateway.
 */

const [mode = 'slow', ...args] = process.argv.slice(2);
const kafka = await startKafka({ brokers: 2 });
const src = kafka.topic('src');
const dst = kafka.topic('dst');
await kafka.createTopic(src, 1);
await kafka.createTopic(dst, 1);
// Broker 2 leads dst alone, so delaying its answers delays only the route's writes.
await kafka.moveLeader(src, 0, 1);
await kafka.moveLeader(dst, 0, 2);
const ackTimeoutMs = mode === 'slow' ? Number(args[1] ?? 2000) : undefined;
const gw = await startGateway(`
version: 1
admin: { port: 0 }
brokers:
  kafka:
    kind: kafka
    brokers: "${kafka.bootstrap}"
    ${ackTimeoutMs === undefined ? '' : `producer: { ackTimeoutMs: ${ackTimeoutMs} }`}
    consumer: ${kafka.consumerYaml}
routes:
  - name: copy
    from: { broker: kafka, topic: ${src} }
    to: { broker: kafka, topic: ${dst} }
`);
const ns = async () => (await kcatConsumeAll(kafka.bootstrap, dst)).map((r) => (JSON.parse(r.value!) as { n: number }).n);
/** Until dst holds record `n` (a partition's records are copied in order: those before it are settled). */
const until = async (n: number, timeoutMs = 120_000) => {
  for (const deadline = Date.now() + timeoutMs; Date.now() < deadline; await sleep(200)) if ((await ns()).includes(n)) return;
  throw new Error(`record ${n} never reached ${dst}`);
};
const produce = (from: number, count: number) =>
  kcatProduce(
    kafka.bootstrap,
    src,
    Array.from({ length: count }, (_, i) => ({ value: JSON.stringify({ n: from + i }) })),
  );

/** What the route's log says happened: tries failed, writes still out at their deadline, late answers that said the write was taken. */
const logged = () => ({
  failed: gw.logs.filter((l) => l.msg === 'message failed').length,
  outPastDeadline: gw.logs.filter((l) => l.msg.startsWith('a write is still out past its ack deadline')).length,
  takenLate: gw.logs.filter((l) => l.msg.startsWith('a write answered after its ack deadline was taken')).length,
});

try {
  await gw.waitForLog((l) => l.msg === 'consumer ready', 60_000);
  await produce(0, 1);
  await until(0);
  if (mode === 'slow') {
    const lateMs = Number(args[0] ?? 3000);
    const forMs = Number(args[2] ?? 15_000);
    const before = kafka.produceRequests();
    await kafka.delayAnswers(2, lateMs);
    await produce(1, 1);
    await sleep(forMs);
    await kafka.delayAnswers(2, 0);
    await produce(2, 1);
    await until(2);
    const values = await ns();
    // Less kcat's two produce requests to src, and the gateway's one for record 2.
    const requests = kafka.produceRequests() - before - 3;
    console.log(JSON.stringify({ mode, lateMs, ackTimeoutMs, forMs, copiesOfRecord1: values.filter((n) => n === 1).length, produceRequestsForIt: requests, ...logged(), dst: values }));
  } else {
    const stallMs = Number(args[0] ?? 6000);
    const stalls = Number(args[1] ?? 8);
    let next = 1;
    for (let i = 0; i < stalls; i++) {
      await produce(next, 4);
      gw.process.kill('SIGSTOP');
      await sleep(stallMs);
      gw.process.kill('SIGCONT');
      next += 4;
      await until(next - 1);
      // Settled: a member dropped has joined again before the next stall.
      await sleep(stallMs);
    }
    const values = await ns();
    const counts = new Map<number, number>();
    for (const n of values) counts.set(n, (counts.get(n) ?? 0) + 1);
    const twice = [...counts].filter(([, c]) => c > 1).map(([n, c]) => ({ n, copies: c }));
    const members = new Set(gw.logs.filter((l) => l.msg === 'consumer joined group').map((l) => l.memberId));
    const missing = Array.from({ length: next }, (_, n) => n).filter((n) => !counts.has(n));
    console.log(JSON.stringify({ mode, stallMs, stalls, records: next, written: values.length, twice, missing, dropped: members.size - 1, ...logged() }));
  }
} finally {
  await kafka.delayAnswers(2, 0).catch(() => {});
  await gw.stop();
  await kafka.stop();
}
