/**
 * Baseline for kafka-ws-latency: a kafkajs consumer whose eachMessage sends each record's value
 * to every websocket client — the hand-written version of a websocket forward route.
 * Env: KAFKA_BROKERS (comma-separated), TOPIC, and the same consumer timings the gateway gets.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import kafkajs from 'kafkajs';
import { WebSocketServer, type WebSocket } from 'ws';
import { announce } from './announce.js';

const { Kafka, logLevel } = kafkajs;
const kafka = new Kafka({ clientId: 'diy-kafka-ws', brokers: process.env.KAFKA_BROKERS!.split(','), logLevel: logLevel.NOTHING });
const consumer = kafka.consumer({
  groupId: `diy-kafka-ws-${process.pid}`,
  sessionTimeout: Number(process.env.SESSION_TIMEOUT_MS ?? 30000),
  heartbeatInterval: Number(process.env.HEARTBEAT_INTERVAL_MS ?? 3000),
  rebalanceTimeout: Number(process.env.REBALANCE_TIMEOUT_MS ?? 60000),
  maxWaitTimeInMs: Number(process.env.MAX_WAIT_MS ?? 1000),
});

const server = createServer();
const wss = new WebSocketServer({ server, perMessageDeflate: false });
const clients = new Set<WebSocket>();
wss.on('connection', (ws) => {
  clients.add(ws);
  ws.on('close', () => clients.delete(ws));
});

await consumer.connect();
await consumer.subscribe({ topics: [process.env.TOPIC!], fromBeginning: false });
await consumer.run({
  eachMessage: async ({ message }) => {
    const value = message.value?.toString('utf8') ?? '';
    for (const ws of clients) if (ws.readyState === 1) ws.send(value);
  },
});
server.listen(0, '127.0.0.1', () => announce((server.address() as AddressInfo).port));
