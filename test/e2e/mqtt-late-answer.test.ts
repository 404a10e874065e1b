import { after, before, describe, it } from 'node:test';
import { useGateway } from '../helpers/gateway.js';
import { lateAnswerRoutes, storedOnceDespiteLateAnswer } from '../helpers/late-answer.js';
import { MosquittoSub } from '../helpers/peers.js';
import { startMosquitto, type MessageServer } from '../helpers/servers.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';

/**
 * A consume route (memory → mqtt) whose PUBACK comes after `ackTimeoutMs`: mosquitto took the
 * publish, the proxy holds its answer. The route's try fails at the deadline and the route waits
 * for that publish's acknowledgement (mqtt.js keeps it out) before trying again: it comes once the
 * proxy lets it through, so the message is delivered and not published a second time. Before, the
 * route published it again 100 ms after the deadline: two copies (docs/spec-checklist.md, point 62).
 */
describe('mqtt: a consume route whose PUBACK comes late', () => {
  let mqtt: MessageServer;
  let proxy: TcpProxy;
  let sub: MosquittoSub;

  before(async () => {
    mqtt = await startMosquitto();
    proxy = await TcpProxy.start(mqtt.port);
    sub = await MosquittoSub.start(mqtt, 'late/out', 1);
  });
  after(async () => {
    sub?.stop();
    await Promise.all([proxy?.stop(), mqtt?.stop()]);
  });

  const gw = useGateway(
    () => `
version: 1
admin: { port: 0 }
brokers:
  mem: { kind: memory }
  devices: { kind: mqtt, url: "mqtt://127.0.0.1:${proxy.port}", clientId: eg-late-${process.pid}, qos: 1, ackTimeoutMs: 1000 }
${lateAnswerRoutes('devices', 'late/out')}`,
  );

  const copies = () => sub.all.map((m) => (JSON.parse(m.payload) as { n: number }).n);

  it('waits for the late PUBACK of its try: the message is published once', () =>
    storedOnceDespiteLateAnswer(gw, proxy, 'devices', { count: async () => copies().length, bodies: async () => copies() }));
});
