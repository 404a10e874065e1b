import { startKafka } from './dist/test/helpers/kafka.js';
import { KafkaProxyListener } from './dist/src/kinds/listeners/kafka/proxy.js';
import { createLogger } from './dist/src/log.js';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import Ajv from 'ajv';
const N = Number(process.env.N ?? 300000);
const k = await startKafka({ brokers: 3, requestLog: false });
const l = new KafkaProxyListener('kin', { upstream: 'c', host: '127.0.0.1', port: 0, brokerPorts: {}, maxRequestBytes: 1e8, bootstrap: k.bootstrap.split(','), tls: false }, { logger: createLogger('warn') }, null);
await l.start();
const boot = `127.0.0.1:${l.address().port}`;
const lines = []; for (let i = 0; i < N; i++) lines.push(JSON.stringify({ id: i, lumens: 640, sentAt: '2026-11-23T10:00:00Z' }));
writeFileSync('/tmp/12/records.txt', lines.join('\n') + '\n');
const check = new Ajv().compile({ type: 'object', required: ['id', 'lumens'], properties: { id: { type: 'integer' }, lumens: { type: 'number', minimum: 0 }, sentAt: { type: 'string' } } });
const run = (b, t) => new Promise((res, rej) => { const s = performance.now(); const c = spawn('sh', ['-c', `kcat -P -b ${b} -t ${t} -X linger.ms=5 -q < /tmp/12/records.txt`], { stdio: 'inherit' }); c.on('exit', (code) => code ? rej(new Error('kcat ' + code)) : res(performance.now() - s)); });
const cons = (b, t) => new Promise((res, rej) => { const s = performance.now(); const c = spawn('sh', ['-c', `kcat -C -b ${b} -t ${t} -o beginning -e -q > /dev/null`], { stdio: 'inherit' }); c.on('exit', (code) => code ? rej(new Error('kcat ' + code)) : res(performance.now() - s)); });
for (const mode of ['direct', 'proxy', 'validate', 'direct', 'proxy', 'validate']) {
  const t = k.topic('perf'); await k.createTopic(t, 3);
  if (mode === 'validate') l.bind({ publish: new Map([[t, { name: 'v', options: { ack: false }, handle: (m) => Promise.resolve(check(m.value) ? { outcome: 'delivered', deliveries: [], tagged: false, message: m } : { outcome: 'invalid', problem: { detail: 'x' } }) }]]), forward: new Set() });
  const ms = await run(mode === 'direct' ? k.bootstrap : boot, t);
  const cms = await cons(mode === 'direct' ? k.bootstrap : boot, t);
  console.log(mode, 'produce', Math.round(N / ms * 1000), 'rec/s', 'consume', Math.round(N / cms * 1000), 'rec/s');
}
await l.stop({ drainMs: 100 }); await k.stop(); process.exit(0);
