/**
 * `node dist/bench/rejoin.js [sessionTimeoutMs]`: how long a Kafka consume route is without a
 * consumer when the gateway restarts (SIGTERM, then a new process) and when a reload rebuilds the
 * route, against librdkafka's mock cluster. Prints one JSON line per round (docs/performance.md,
 * "Rejoining after a restart or a reload"). Run it under the bench lock on a shared machine.
 */
import { startGateway, type LogLine } from '../test/helpers/gateway.js';
import { kcatConsume, kcatProduce, startKafka } from '../test/helpers/kafka.js';

const session = Number(process.argv[2] ?? 30000);
const kafka = await startKafka({ brokers: 3, requestLog: false });
const consumer = `{ sessionTimeoutMs: ${session}, heartbeatIntervalMs: ${Math.floor(session / 3)}, maxWaitMs: 100 }`;
const src = kafka.topic('src');
const dst = kafka.topic('dst');
await kafka.createTopic(src, 3);
await kafka.createTopic(dst, 3);
const yaml = (version: number) => `
version: 1
brokers:
  kafka: { kind: kafka, brokers: "${kafka.bootstrap}", producer: { lingerMs: 1 }, consumer: ${consumer} }
routes:
  - name: copy
    from: { broker: kafka, topic: ${src}, group: g-${src} }
    through: [ { transform: '{"v": ${version}, "n": n}' } ]
    to: { broker: kafka, topic: ${dst} }
`;
const at = (l: LogLine) => (typeof l.time === 'number' ? l.time : Date.parse(String(l.time)));
let copied = 0;
/** Produces one record and waits until the route copied it. */
const copyOne = async () => {
  await kcatProduce(kafka.bootstrap, src, [{ key: 'k', value: JSON.stringify({ n: copied }) }]);
  copied++;
  await kcatConsume(kafka.bootstrap, dst, copied, 120000);
};

for (let round = 0; round < 3; round++) {
  const gw = await startGateway(yaml(1));
  const ready = at(gw.logs.find((l) => l.msg === 'gateway ready')!);
  const consumerReady = await gw.waitForLog((l) => l.msg === 'consumer ready', 120000);
  await copyOne();
  console.log(JSON.stringify({ what: 'restart', sessionTimeoutMs: session, round, consumerReadyMs: at(consumerReady) - ready, firstCopyMs: Date.now() - ready }));
  if (round === 2) {
    for (let r = 0; r < 3; r++) {
      const mark = gw.logs.length;
      const written = Date.now();
      await gw.reconfigure(yaml(r + 2));
      await copyOne();
      const handedOver = gw.logs.slice(mark).some((l) => l.msg === 'subscription handed over to the rebuilt route');
      console.log(JSON.stringify({ what: 'reload', sessionTimeoutMs: session, round: r, handedOver, firstCopyMs: Date.now() - written }));
    }
  }
  await gw.stop('SIGTERM');
}
await kafka.stop();
