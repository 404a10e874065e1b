/**
 * Baseline for http-mqtt, http-amqp and http-nats: what a user writes by hand — node:http,
 * JSON.parse to check the body, and one publish per request with the same client library the
 * gateway uses, answered once the server acknowledged it (MQTT QoS 1 PUBACK, an AMQP publisher
 * confirm, a JetStream PubAck).
 * Env: KIND (mqtt | amqp | nats), URL, TOPIC.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { announce } from './announce.js';

const url = process.env.URL!;
const topic = process.env.TOPIC!;

async function publisher(): Promise<(body: string) => Promise<unknown>> {
  switch (process.env.KIND) {
    case 'mqtt': {
      const { connectAsync } = await import('mqtt');
      const client = await connectAsync(url, { clientId: `diy-${process.pid}`, protocolVersion: 5 });
      return (body) => client.publishAsync(topic, body, { qos: 1 });
    }
    case 'amqp': {
      const { connect } = await import('amqplib');
      const channel = await (await connect(url)).createConfirmChannel();
      return (body) => new Promise<void>((resolve, reject) => channel.publish('amq.topic', topic, Buffer.from(body), { persistent: true }, (err) => (err ? reject(err) : resolve())));
    }
    case 'nats': {
      const { connect } = await import('nats');
      const js = (await connect({ servers: url })).jetstream();
      return (body) => js.publish(topic, Buffer.from(body));
    }
    default:
      throw new Error(`KIND must be mqtt, amqp or nats, not ${process.env.KIND}`);
  }
}

const publish = await publisher();
const server = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', async () => {
    const body = Buffer.concat(chunks).toString('utf8');
    try {
      JSON.parse(body);
    } catch {
      res.writeHead(400).end();
      return;
    }
    try {
      await publish(body);
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': 2 });
      res.end('{}');
    } catch {
      res.writeHead(503).end();
    }
  });
});
server.keepAliveTimeout = 5000;
server.listen(0, '127.0.0.1', () => announce((server.address() as AddressInfo).port));
