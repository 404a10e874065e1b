/**
 * Where the CPU of the kafka-proxy scenarios goes, per process: kcat producing 1,000,000 small JSON
 * records through the kafka listener (to the validated topic, or to a topic no route names) and
 * straight to the same mock cluster, one after the other, with the CPU each of kcat, the mock
 * cluster and the gateway used per record (/proc, and `/usr/bin/time` for kcat). Figures per
 * round, not a ratio to meet: it is the explanation behind the scenario's ratio.
 *
 *   node dist/bench/kafka-proxy-cpu.js [validate|plain] [rounds] [records]
 */
import { execFileSync } from 'node:child_process';
import { kafkaProxyConfig, lightRecordsFile } from './configs.js';
import { cpuMs, startGateway, startKafka } from './processes.js';

const mode = process.argv[2] === 'plain' ? 'plain' : 'validate';
const rounds = Number(process.argv[3] ?? 3);
const count = Number(process.argv[4] ?? 1_000_000);

const kafka = await startKafka({ brokers: 3, requestLog: false });
const records = lightRecordsFile(count);
const gw = await startGateway(kafkaProxyConfig(kafka.bootstrap, 'light-validated'));
await kafka.createTopic('light-validated', 3);

/** One kcat run; wall seconds and µs of CPU per record of kcat, the mock cluster and the gateway. */
async function round(bootstrap: string): Promise<{ secs: number; kcat: number; mock: number; gateway: number }> {
  const topic = mode === 'validate' ? 'light-validated' : kafka.topic('light-plain');
  if (mode === 'plain') await kafka.createTopic(topic, 3);
  const mockBefore = cpuMs(kafka.pid!);
  const gwBefore = cpuMs(gw.process.pid!);
  const started = performance.now();
  const shell = `/usr/bin/time -f '%U %S' kcat -P -b ${bootstrap} -t ${topic} -X linger.ms=5 -X queue.buffering.max.messages=2000000 -q < '${records}' 2>&1 >/dev/null`;
  const out = execFileSync('sh', ['-c', shell], { encoding: 'utf8' });
  const secs = (performance.now() - started) / 1000;
  const [user, system] = out.trim().split('\n').pop()!.split(' ').map(Number);
  const perRecord = (ms: number) => +((ms * 1000) / count).toFixed(3);
  return { secs, kcat: perRecord((user! + system!) * 1000), mock: perRecord(cpuMs(kafka.pid!) - mockBefore), gateway: perRecord(cpuMs(gw.process.pid!) - gwBefore) };
}

try {
  const proxy = `127.0.0.1:${gw.port('kafka-in')}`;
  await round(proxy); // warm-up: connections, the JIT
  for (let r = 0; r < rounds; r++) {
    const through = await round(proxy);
    const direct = await round(kafka.bootstrap);
    process.stdout.write(
      `${JSON.stringify({ mode, round: r, ratio: +(direct.secs / through.secs).toFixed(3), proxy_records_per_s: Math.round(count / through.secs), direct_records_per_s: Math.round(count / direct.secs), cpu_us_per_record: { proxy: { kcat: through.kcat, mock: through.mock, gateway: through.gateway }, direct: { kcat: direct.kcat, mock: direct.mock } } })}\n`,
    );
  }
} finally {
  await gw.stop();
  await kafka.stop();
}
