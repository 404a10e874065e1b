import assert from 'node:assert/strict';
import type { ServerResponse } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { eventually, useGateway, withLogsOnFailure } from '../helpers/gateway.js';
import { MosquittoPubStream, MosquittoSub } from '../helpers/peers.js';
import { startMosquitto, type MessageServer } from '../helpers/servers.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';

/** Messages published to the route's topic; the webhook takes the first ANSWERED of them, holds the next and fails every one after the removal began. */
const TOTAL = 10;
const ANSWERED = 3;
/** The message the webhook holds, failing, while the proxy drops the route's connection (the cut case). */
const CUT_AT = 6;

const KEPT = 'mqtt session of a consume route a reload removed kept on the server';
const ENDED = 'mqtt session of a consume route a reload removed ended on the server';

/**
 * A consume route a reload removes leaves its group: it unsubscribes and takes what its persistent
 * session still holds (mqtt-removed-route-session). A target failing meanwhile (a webhook's tries
 * exhausted) has the stopping route give the message back at once, unacknowledged, to the session;
 * the reload then ended that session, and every such message with it. The session, unsubscribed,
 * holds only those: it is now kept, with a warning, for a route reading its filter again.
 */
describe('hot reload: an MQTT consume route whose target fails while it leaves its group', () => {
  let mqtt: MessageServer;
  let webhook: WebhookReceiver;
  /** In front of mosquitto for the `cut` broker: drops its connections mid-leave. */
  let proxy: TcpProxy;
  const clientId = `eg-leave-fail-${process.pid}`;

  before(async () => {
    [mqtt, webhook] = await Promise.all([startMosquitto(), WebhookReceiver.start()]);
    proxy = await TcpProxy.start(mqtt.port);
  });
  after(async () => {
    await proxy?.stop();
    await Promise.all([mqtt?.stop(), webhook?.stop()]);
  });

  const config = (routes: string) => `version: 1
admin: {port: 0}
brokers:
  v5: {kind: mqtt, url: "mqtt://127.0.0.1:${mqtt.port}", clientId: ${clientId}, qos: 1, ackTimeoutMs: 2000, connectTimeoutMs: 2000, sessionExpirySeconds: 600}
  v311: {kind: mqtt, url: "mqtt://127.0.0.1:${mqtt.port}", clientId: ${clientId}-311, qos: 1, ackTimeoutMs: 2000, connectTimeoutMs: 2000, protocolVersion: 4}
  cut: {kind: mqtt, url: "mqtt://127.0.0.1:${proxy.port}", clientId: ${clientId}-cut, qos: 1, ackTimeoutMs: 2000, connectTimeoutMs: 2000, sessionExpirySeconds: 600, reconnectPeriodMs: 600000}
routes:
${routes}`;
  /** A route reading `topic` in group `group` to the webhook's `/<name>`, one request at a time and one try each. */
  const route = (name: string, broker: string, topic: string, group: string) => `  - name: ${name}
    from: {broker: ${broker}, topic: ${topic}, group: ${group}}
    to: {http: {url: "${webhook.url}/${name}", concurrency: 1, retry: {attempts: 1}}}
`;
  const gw = useGateway(() => config('  []'));
  const numbers = (r: { body: string }) => (JSON.parse(r.body) as { n: number }).n;

  /**
   * Route `name` reads `topic`; TOTAL messages are published to it (mosquitto_sub, straight to the
   * server, counts what the server took); the webhook answers the first ANSWERED 200, holds the
   * next, and once the reload removing the route has it unsubscribed, answers that one and every
   * later one 500. With `cut` (a broker through the proxy), message CUT_AT is held until the
   * proxy dropped the route's connection and the route saw it go, then failed too. Returns the
   * reload's log lines up to the session's fate, what was answered 200 and what 500.
   */
  const failWhileLeaving = async (name: string, broker: string, topic: string, cut = false) => {
    const answered: number[] = [];
    const failed = new Set<number>();
    let failing = false;
    let held: ServerResponse | undefined;
    let heldAtCut: ServerResponse | undefined;
    const respond = webhook.respond;
    webhook.respond = (r, res) => {
      if (r.url !== `/${name}`) return respond(r, res);
      const n = numbers(r);
      if (failing && cut && n === CUT_AT) return void (heldAtCut = res);
      if (failing) return void res.writeHead(500).end('down', () => failed.add(n));
      if (n < ANSWERED) return void res.end('ok', () => answered.push(n));
      held = res;
    };
    const watch = await MosquittoSub.start(mqtt, topic, 1);
    try {
      const added = await gw.reconfigure(config(route(name, broker, topic, 'shared')));
      assert.equal(added.msg, 'config reloaded', JSON.stringify(added));
      await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === name, 15000, gw.logs.indexOf(added));
      const pub = MosquittoPubStream.start(mqtt, topic, 1);
      pub.write(Array.from({ length: TOTAL }, (_, n) => JSON.stringify({ n })));
      await pub.end();
      assert.equal((await watch.take(TOTAL)).length, TOTAL, 'the server took every message');
      await eventually(() => assert.ok(held, `${answered.length} answered, none held yet`), 15000);
      const from = gw.logs.length;
      const removed = gw.reconfigure(config('  []'));
      // The route is leaving its group now: its target fails from here on.
      await gw.waitForLog((l) => l.msg.startsWith('mqtt consume route a reload removed unsubscribed'), 15000, from);
      failing = true;
      held!.writeHead(500).end('down', () => failed.add(ANSWERED));
      if (cut) {
        // Messages given back on the connection so far, one in hand: the connection drops mid-leave.
        await eventually(() => assert.ok(heldAtCut, `${failed.size} failed, message ${CUT_AT} not in hand yet`), 15000);
        const at = gw.logs.length;
        proxy.cutAndHold();
        proxy.release();
        await gw.waitForLog((l) => l.msg === 'mqtt connection lost; reconnecting' && l.connection === `route ${name}`, 15000, at);
        heldAtCut!.writeHead(500).end('down', () => failed.add(CUT_AT));
      }
      const line = await removed;
      assert.equal(line.msg, 'config reloaded', JSON.stringify(line));
      const session = `${clientId}${{ v5: '', v311: '-311', cut: '-cut' }[broker]}-${name}`;
      const fate = await gw.waitForLog((l) => (l.msg.startsWith(KEPT) || l.msg === ENDED) && l.session === session, 15000, from);
      return { logs: gw.logs.slice(from, gw.logs.indexOf(fate) + 1), fate, session, answered, failed: [...failed].sort((a, b) => a - b) };
    } finally {
      watch.stop();
      webhook.respond = respond;
    }
  };

  /** What the webhook answered 200, by path, once `respondOk` set it to. */
  const answeredOk = new Map<string, number[]>();
  /** The webhook answers `path` 200 (until the returned function restores what it did). */
  const respondOk = (path: string) => {
    const respond = webhook.respond;
    webhook.respond = (r, res) => {
      if (r.url !== path) return respond(r, res);
      res.end('ok', () => {
        const list = answeredOk.get(path) ?? [];
        list.push(numbers(r));
        answeredOk.set(path, list);
      });
    };
    return () => (webhook.respond = respond);
  };

  /**
   * Route `name` reads `topic` in the group again (a reload); asserts that every message the server
   * took was answered 200, counting `answered` before; returns what `name` was answered 200.
   */
  const readAgain = async (name: string, broker: string, topic: string, answered: number[]) => {
    const restore = respondOk(`/${name}`);
    try {
      const line = await gw.reconfigure(config(route(name, broker, topic, 'shared')));
      assert.equal(line.msg, 'config reloaded', JSON.stringify(line));
      const done = () => [...answered, ...(answeredOk.get(`/${name}`) ?? [])];
      await eventually(() => assert.equal(new Set(done()).size, TOTAL), 15000).catch(() => undefined);
      const missing = Array.from({ length: TOTAL }, (_, n) => n).filter((n) => !done().includes(n));
      assert.deepEqual(missing, [], `${missing.length} of ${TOTAL} messages the server took never answered 200: lost with the session`);
      return answeredOk.get(`/${name}`) ?? [];
    } finally {
      restore();
    }
  };

  it('keeps the unsubscribed session (MQTT 5) until a route of the same group takes over what the failing target gave back', () =>
    withLogsOnFailure(
      () => [gw],
      async () => {
        const { logs, fate, session, answered } = await failWhileLeaving('failing', 'v5', 'leave/v5');
        // A route reading the same filter (topic and group) takes the session over.
        const again = await readAgain('again', 'v5', 'leave/v5', answered);
        // What the webhook failed went back to the session, and only that came again.
        assert.deepEqual(
          again.sort((a, b) => a - b),
          Array.from({ length: TOTAL - ANSWERED }, (_, n) => n + ANSWERED),
        );
        assert.ok(fate.msg.startsWith(KEPT), fate.msg);
        assert.equal(fate.level, 'warn');
        assert.equal(fate.givenBack, TOTAL - ANSWERED);
        assert.equal(fate.filter, '$share/shared/leave/v5');
        assert.equal(fate.sessionExpirySeconds, 600);
        assert.match(fate.msg, /ends the session 600 s \(sessionExpirySeconds\) after it disconnected/);
        assert.ok(!gw.logs.some((l) => l.msg === ENDED && l.session === session), 'the session is not ended');
        // No error saying the subscription runs: the route's stop gave them back.
        assert.deepEqual(
          logs.filter((l) => l.msg.startsWith('message given back by its route while its subscription runs')),
          [],
        );
        assert.ok(logs.some((l) => l.msg.startsWith('message given back by a route a reload removed, as it leaves its group') && l.level === 'info'));
      },
    ));

  it('keeps an MQTT 3.1.1 session, naming its client id, until the route put back resumes it', () =>
    withLogsOnFailure(
      () => [gw],
      async () => {
        const { fate, session, answered } = await failWhileLeaving('failing311', 'v311', 'leave/v311');
        // The same route put back resumes its session under the same client id: the server sends what it holds again.
        await readAgain('failing311', 'v311', 'leave/v311', answered);
        assert.ok(fate.msg.startsWith(KEPT), fate.msg);
        assert.equal(fate.level, 'warn');
        assert.equal(fate.givenBack, TOTAL - ANSWERED);
        assert.equal(fate.sessionExpirySeconds, undefined);
        assert.ok(fate.msg.includes(`a clean-session connect with client id '${session}' ends it`), fate.msg);
      },
    ));

  it('keeps the session when its connection drops mid-leave, after the route gave messages back on it', () =>
    withLogsOnFailure(
      () => [gw],
      async () => {
        const { fate, session, answered, failed } = await failWhileLeaving('failingcut', 'cut', 'leave/cut', true);
        // A route of the same group on the same broker takes the session over: the server sends
        // what it holds, given back before the drop and after it (the route's messages in hand then).
        const again = await readAgain('againcut', 'cut', 'leave/cut', answered);
        assert.ok(failed.includes(ANSWERED) && failed.includes(CUT_AT), `failed: ${failed}`);
        assert.deepEqual(
          again.sort((a, b) => a - b),
          Array.from({ length: TOTAL - ANSWERED }, (_, n) => n + ANSWERED),
        );
        assert.ok(fate.msg.startsWith(KEPT), fate.msg);
        // Every message the route gave back, on the connection that dropped and after, counted.
        assert.equal(fate.givenBack, failed.length, `failed: ${failed}`);
        assert.ok(!gw.logs.some((l) => l.msg === ENDED && l.session === session), 'the session is not ended');
      },
    ));
});
