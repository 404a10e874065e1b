import assert from 'node:assert/strict';
import type { ServerResponse } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { eventually, useGateway, withLogsOnFailure } from '../helpers/gateway.js';
import { MosquittoPubStream, MosquittoSub, mqttPacketGate } from '../helpers/peers.js';
import { startMosquitto, type MessageServer } from '../helpers/servers.js';
import { TcpProxy } from '../helpers/tcp-proxy.js';
import { WebhookReceiver } from '../helpers/webhook-receiver.js';

/** MQTT control packet types (the fixed header's high nibble). */
const UNSUBSCRIBE = 10;
const UNSUBACK = 11;

/** The deadline of the waits of a route leaving its group (its UNSUBACK, each PINGRESP). */
const DEADLINE_MS = 2000;
/** The `pinged` broker's keepalive and deadline: two PINGRESPs within each wait, and mqtt.js's 1.5 keepalives of room for a loaded machine. */
const PINGED_KEEPALIVE_S = 2;
const PINGED_DEADLINE_MS = 5000;
/**
 * The `held` broker's deadline, under the time its route's webhook takes to answer
 * (HELD_ANSWER_MS), and long enough that a loaded machine's pauses do not reach it.
 */
const HELD_DEADLINE_MS = 1500;
const HELD_ANSWER_MS = 2500;
/** 'slow': the proxy passes one of the server's packets each PACE_MS, in order. */
const PACE_MS = 150;

/**
 * What the proxy between the gateway and mosquitto does with the server's packets: pass them as
 * they come; pass them one each PACE_MS, in order, so what the server sent last (the UNSUBACK)
 * comes behind what it sent first (a session's backlog), as from a server busy sending a backlog;
 * drop the UNSUBACK alone (the server answers pings, never the UNSUBSCRIBE); or, once the client
 * unsubscribed, pass nothing more (true silence).
 */
type Mode = 'pass' | 'slow' | 'unsuback-never' | 'silent';

/** One proxied connection: whether the client sent an UNSUBSCRIBE, and when the proxy last passed a packet of the server's. */
interface Connection {
  unsubscribed: boolean;
  lastPassedAt: number;
}

/**
 * A consume route a reload removes unsubscribes and takes what its persistent session still
 * holds before the session is ended (mqtt-removed-route-session). Its waits for the server's
 * answers (the UNSUBACK, each PINGRESP) were bounded by `ackTimeoutMs` from the moment it asked:
 * a server busy sending the session's backlog, whose UNSUBACK came behind it later than that, had
 * the route give up and stop as it was, the backlog ended with the session. The waits now start
 * over at each packet read: only ackTimeoutMs of silence ends them.
 */
describe('hot reload: an MQTT consume route removed while the server is slow to answer', () => {
  let mqtt: MessageServer;
  let proxy: TcpProxy;
  let webhook: WebhookReceiver;
  let mode: Mode = 'pass';
  /** 'slow': how many of the server's packets were waiting in the proxy ahead of the UNSUBACK. */
  let aheadOfUnsuback: number | undefined;
  /** Called as the proxy passes a client's UNSUBSCRIBE (a route leaving its group asked). */
  let onUnsubscribe: (() => void) | undefined;
  /** 'silent': when the proxy last passed a packet on the connection it then silenced (the route's silence starts there). */
  let silentSince: number | undefined;
  const clientId = `eg-slow-leave-${process.pid}`;

  before(async () => {
    [mqtt, webhook] = await Promise.all([startMosquitto(), WebhookReceiver.start()]);
    // The connection the proxy opens now: TcpProxy makes its two gates one after the other,
    // toServer's first, so toClient's finds the state toServer's made.
    let opening: Connection | undefined;
    proxy = await TcpProxy.start(mqtt.port, {
      toServer: () => {
        const connection: Connection = { unsubscribed: false, lastPassedAt: 0 };
        opening = connection;
        return mqttPacketGate((packet, pass) => {
          if (packet[0]! >> 4 === UNSUBSCRIBE) {
            connection.unsubscribed = true;
            onUnsubscribe?.();
          }
          pass(packet);
        });
      },
      toClient: () => {
        const connection = opening!;
        const slow: Buffer[] = [];
        let dripping: NodeJS.Timeout | undefined;
        return mqttPacketGate((packet, pass) => {
          const type = packet[0]! >> 4;
          const passOn = (p: Buffer) => {
            pass(p);
            connection.lastPassedAt = Date.now();
          };
          if (mode === 'silent' && connection.unsubscribed) {
            silentSince ??= connection.lastPassedAt;
            return;
          }
          if (type === UNSUBACK && mode === 'unsuback-never') return;
          if (mode !== 'slow' && slow.length === 0) return passOn(packet);
          if (type === UNSUBACK) aheadOfUnsuback = slow.length;
          slow.push(packet);
          const drip = () => {
            passOn(slow.shift()!);
            dripping = slow.length > 0 ? setTimeout(drip, PACE_MS) : undefined;
          };
          if (!dripping) dripping = setTimeout(drip, PACE_MS);
        });
      },
    });
  });
  after(async () => {
    await Promise.all([proxy?.stop(), mqtt?.stop(), webhook?.stop()]);
  });

  // `pinged`: mqtt.js's keepalive PINGREQs, each answered, come twice within its deadline.
  // `relay`: the memory topic `busy` to its webhook (see the first test); `kept` makes it a topic a route writes to.
  const config = (routes: string) => `version: 1
admin: {port: 0}
brokers:
  mqtt: {kind: mqtt, url: "mqtt://127.0.0.1:${proxy.port}", clientId: ${clientId}, qos: 1, ackTimeoutMs: ${DEADLINE_MS}, connectTimeoutMs: 2000}
  held: {kind: mqtt, url: "mqtt://127.0.0.1:${proxy.port}", clientId: ${clientId}-held, qos: 0, ackTimeoutMs: ${HELD_DEADLINE_MS}, connectTimeoutMs: 2000}
  pinged: {kind: mqtt, url: "mqtt://127.0.0.1:${proxy.port}", clientId: ${clientId}-pinged, qos: 1, ackTimeoutMs: ${PINGED_DEADLINE_MS}, connectTimeoutMs: 2000, keepaliveSeconds: ${PINGED_KEEPALIVE_S}}
  local: {kind: memory}
routes:
  - name: kept
    from: {broker: mqtt, topic: slow/kept}
    to: {broker: local, topic: busy}
  - name: relay
    from: {broker: local, topic: busy}
    to: {http: {url: "${webhook.url}/busy"}}
${routes}`;
  const route = (name: string, broker = 'mqtt', to = `{http: {url: "${webhook.url}/${name}", concurrency: 1}}`) => `  - name: ${name}
    from: {broker: ${broker}, topic: slow/${name}}
    to: ${to}
`;
  const gw = useGateway(() => config(''));

  /** Adds route `name` (`routed` says how), publishes `total` messages to its topic, and waits for `first` of them at the webhook. */
  const backlog = async (name: string, total: number, first: number, routed = route(name)) => {
    const line = await gw.reconfigure(config(routed));
    assert.equal(line.msg, 'config reloaded', JSON.stringify(line));
    await gw.waitForLog((l) => l.msg === 'consumer ready' && l.route === name, 15000, gw.logs.indexOf(line));
    const pub = MosquittoPubStream.start(mqtt, `slow/${name}`, 1);
    pub.write(Array.from({ length: total }, (_, n) => JSON.stringify({ n })));
    await pub.end();
    await eventually(() => assert.ok(delivered(name).length >= first, `${delivered(name).length} delivered`), 15000);
  };
  const delivered = (name: string) => webhook.requests.filter((r) => r.url === `/${name}`).map((r) => (JSON.parse(r.body) as { n: number }).n);
  /**
   * Removes every route but `kept` and `relay`, and waits for the removed route's session to be
   * ended (or kept, `fate`: it holds messages the route gave back as it left); the log lines from
   * the reload on.
   */
  const remove = async (name: string, fate: 'ended' | 'kept' = 'ended') => {
    const from = gw.logs.length;
    const line = await gw.reconfigure(config(''));
    assert.equal(line.msg, 'config reloaded', JSON.stringify(line));
    const said =
      fate === 'ended'
        ? (msg: string) => msg === 'mqtt session of a consume route a reload removed ended on the server'
        : (msg: string) => msg.startsWith('mqtt session of a consume route a reload removed kept on the server');
    await gw.waitForLog((l) => said(l.msg) && String(l.session).endsWith(`-${name}`), 15000, from);
    return gw.logs.slice(from);
  };
  const gaveUp = (logs: { msg: string }[]) => logs.find((l) => l.msg.startsWith('mqtt consume route a reload removed could not unsubscribe')) as { err?: string; time?: string } | undefined;
  const silent = (ms: number) => `no UNSUBACK, and nothing else from the server, for ackTimeoutMs (${ms} ms)`;

  it('waits for an UNSUBACK that comes behind the backlog, past ackTimeoutMs, and delivers the whole backlog once', () =>
    withLogsOnFailure(
      () => [gw],
      async () => {
        const total = 60;
        mode = 'slow';
        try {
          // To a memory topic, not a webhook: a route that stops cuts its webhook tries in flight after
          // 5 s (WEBHOOK_STOP_GRACE_MS), which a leave this long reaches, and the message then cut
          // goes with the session (given back, never sent again): a loss of its own, not this one.
          await backlog('busy', total, 3, route('busy', 'mqtt', '{broker: local, topic: busy}'));
          const logs = await remove('busy');
          assert.ok(
            aheadOfUnsuback !== undefined && aheadOfUnsuback * PACE_MS > DEADLINE_MS,
            `the UNSUBACK came behind ${aheadOfUnsuback} packets, ${PACE_MS} ms apart: past ackTimeoutMs (${DEADLINE_MS} ms)`,
          );
          const got = delivered('busy');
          const missing = Array.from({ length: total }, (_, n) => n).filter((n) => !got.includes(n));
          assert.deepEqual(missing, [], `${missing.length} of ${total} queued messages lost with the session`);
          assert.equal(got.length, total, 'each delivered once');
          assert.equal(gaveUp(logs), undefined, 'it did not give up on a server still sending');
          assert.ok(logs.some((l) => l.msg.startsWith('mqtt consume route a reload removed unsubscribed')));
        } finally {
          mode = 'pass';
        }
      },
    ));

  it('gives up on a server that answers its keepalive pings but never the UNSUBSCRIBE', () =>
    withLogsOnFailure(
      () => [gw],
      async () => {
        await backlog('unanswered', 3, 3, route('unanswered', 'pinged'));
        mode = 'unsuback-never';
        try {
          const logs = await remove('unanswered');
          assert.equal(gaveUp(logs)?.err, silent(PINGED_DEADLINE_MS));
          assert.deepEqual(delivered('unanswered').sort(), [0, 1, 2]);
        } finally {
          mode = 'pass';
        }
      },
    ));

  it('ends a session it could not unsubscribe, saying how many messages its failing target gave back are lost with it', () =>
    withLogsOnFailure(
      () => [gw],
      async () => {
        // The webhook holds the first message, and fails it and every later one once the route
        // sent its UNSUBSCRIBE, which the server never answers: the session stays subscribed, so
        // it is ended, and the three messages given back to it are lost with it.
        const held: ServerResponse[] = [];
        let failing = false;
        const respond = webhook.respond;
        webhook.respond = (r, res) => {
          if (r.url !== '/refused') return respond(r, res);
          if (failing) return void res.writeHead(500).end('down');
          held.push(res);
        };
        onUnsubscribe = () => {
          failing = true;
          for (const res of held.splice(0)) res.writeHead(500).end('down');
        };
        try {
          const to = `{http: {url: "${webhook.url}/refused", concurrency: 1, retry: {attempts: 1}}}`;
          await backlog('refused', 3, 1, route('refused', 'pinged', to));
          mode = 'unsuback-never';
          const logs = await remove('refused');
          assert.equal(gaveUp(logs)?.err, silent(PINGED_DEADLINE_MS));
          const lost = logs.find((l) => l.msg.startsWith('mqtt session of a consume route a reload removed is ended with'));
          assert.equal(lost?.givenBack, 3, JSON.stringify(lost));
          assert.equal(lost?.level, 'warn');
        } finally {
          mode = 'pass';
          onUnsubscribe = undefined;
          webhook.respond = respond;
        }
      },
    ));

  it('gives up once the server is silent for ackTimeoutMs, counted from the last packet it sent, and the reload goes on', () =>
    withLogsOnFailure(
      () => [gw],
      async () => {
        await backlog('frozen', 3, 3);
        mode = 'silent';
        try {
          const logs = await remove('frozen');
          const line = gaveUp(logs);
          assert.equal(line?.err, silent(DEADLINE_MS));
          // Not earlier than ackTimeoutMs after the last packet the proxy passed on that connection (the route read it after).
          assert.ok(silentSince !== undefined, 'the proxy silenced the connection');
          const waited = Date.parse(String(line.time)) - silentSince;
          assert.ok(waited >= DEADLINE_MS, `gave up ${waited} ms after the last packet`);
        } finally {
          mode = 'pass';
        }
      },
    ));

  it('delivers the whole backlog to a slow webhook when the leave outlasts the grace given to webhook tries in flight', () =>
    withLogsOnFailure(
      () => [gw],
      async () => {
        // Every request answered 200 after SLOW_ANSWER_MS, one at a time (`concurrency: 1`): the
        // route takes the backlog behind the UNSUBACK at that pace, so its leave lasts at least
        // (total − 4) × SLOW_ANSWER_MS (7.2 s: the backlog's wait saw 3 arrive), past the 5 s
        // after which a stopping route cuts its webhook tries (60 messages, 12 s, until the
        // fifty-fifth session). Counted as answered, not as arrived: a try cut after it arrived is
        // not a delivery the route knows of.
        const SLOW_ANSWER_MS = 200;
        const total = 40;
        const answered: number[] = [];
        const respond = webhook.respond;
        webhook.respond = (r, res) => {
          if (r.url !== '/webhooked') return respond(r, res);
          setTimeout(() => {
            res.end('ok', () => answered.push((JSON.parse(r.body) as { n: number }).n));
          }, SLOW_ANSWER_MS);
        };
        // What mosquitto itself was given: every message of the backlog (straight, not through the proxy).
        const watch = await MosquittoSub.start(mqtt, 'slow/webhooked', 1);
        try {
          await backlog('webhooked', total, 3);
          const logs = await remove('webhooked');
          assert.equal((await watch.take(total)).length, total);
          assert.equal(gaveUp(logs), undefined, 'it unsubscribed');
          // A try cut while the leave ran gave its message back to the session the reload then
          // ended: never sent again, whether or not the receiver's answer got out before the cut.
          const givenBack = logs.filter((l) => (l as { msg: string }).msg.startsWith('message given back'));
          assert.deepEqual(givenBack, [], 'nothing given back to a session about to be ended');
          const missing = Array.from({ length: total }, (_, n) => n).filter((n) => !answered.includes(n));
          assert.deepEqual(missing, [], `${missing.length} of ${total} queued messages not delivered`);
          assert.equal(delivered('webhooked').length, total, 'each sent once');
        } finally {
          watch.stop();
          webhook.respond = respond;
        }
      },
    ));

  it('cuts webhook tries that get no answer for the grace while it leaves, and the reload ends', () =>
    withLogsOnFailure(
      () => [gw],
      async () => {
        // The endpoint takes the first request and never answers it; the try's timeout is ten
        // minutes. The leave waited for that try (and would have for each message after it), the
        // reload with it: the grace counted from the leave's end never came.
        const hanging: ServerResponse[] = [];
        const respond = webhook.respond;
        webhook.respond = (r, res) => (r.url === '/hanging' ? void hanging.push(res) : respond(r, res));
        try {
          const to = `{http: {url: "${webhook.url}/hanging", concurrency: 1, timeoutMs: 600000, retry: {attempts: 1}}}`;
          await backlog('hanging', 3, 1, route('hanging', 'mqtt', to));
          // The cut try's message and the two behind it go back to the session, which is kept for them.
          const logs = await remove('hanging', 'kept');
          assert.equal(gaveUp(logs), undefined, 'it unsubscribed');
          assert.equal(logs.find((l) => l.msg.startsWith('mqtt session of a consume route a reload removed kept on the server'))?.givenBack, 3);
          assert.ok(
            logs.some((l) => l.msg.startsWith('webhook tries of a route leaving its group got no answer within the grace')),
            'the cut is said',
          );
          assert.deepEqual(delivered('hanging'), [0], 'the messages after the cut are not sent to the closed webhook');
        } finally {
          webhook.respond = respond;
          for (const res of hanging) res.end('late');
        }
      },
    ));

  it('does not take the silence it causes itself, holding its reading behind over 100 messages, for a server gone silent', () =>
    withLogsOnFailure(
      () => [gw],
      async () => {
        // QoS 0: no window bounds what mosquitto sends, so the route has more messages in hand
        // than it lets mqtt.js read past (MAX_IN_HAND, 100), and reads one packet each time it
        // finishes one. Its webhook answers every request after HELD_ANSWER_MS, 20 at a time
        // (`concurrency: 20`), so nothing is read for longer than the broker's ackTimeoutMs at a
        // stretch while the UNSUBACK waits behind what it holds.
        const total = 140;
        const respond = webhook.respond;
        webhook.respond = (r, res) => (r.url === '/held' ? setTimeout(() => res.end('ok'), HELD_ANSWER_MS) : respond(r, res));
        try {
          await backlog('held', total, 1, route('held', 'held', `{http: {url: "${webhook.url}/held", concurrency: 20}}`));
          const logs = await remove('held');
          assert.equal(gaveUp(logs), undefined, 'it did not give up on a server whose packets it was not reading');
          assert.ok(logs.some((l) => l.msg.startsWith('mqtt consume route a reload removed unsubscribed')));
          const got = delivered('held');
          assert.equal(new Set(got).size, total, `${total - new Set(got).size} of ${total} not delivered`);
        } finally {
          webhook.respond = respond;
        }
      },
    ));
});
