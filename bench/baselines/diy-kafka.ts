/**
 * Baseline for http-kafka: what a user writes by hand — node:http, JSON.parse to check the body,
 * and one kafkajs producer.send() (acks all) per request, answered with the offset.
 * Env: KAFKA_BROKERS (comma-separated), TOPIC.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import kafkajs from 'kafkajs';
import { announce } from './announce.js';

const { Kafka, logLevel } = kafkajs;
const topic = process.env.TOPIC!;
const kafka = new Kafka({ clientId: 'diy-kafka', brokers: process.env.KAFKA_BROKERS!.split(','), logLevel: logLevel.NOTHING });
const producer = kafka.producer();
await producer.connect();

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
      const [meta] = await producer.send({ topic, acks: -1, messages: [{ value: body }] });
      const text = JSON.stringify({ partition: meta!.partition, offset: meta!.baseOffset });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    } catch {
      res.writeHead(503).end();
    }
  });
});
server.keepAliveTimeout = 5000;
server.listen(0, '127.0.0.1', () => announce((server.address() as AddressInfo).port));
