import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { describe, it } from 'node:test';
import { post, WsClient } from '../helpers/clients.js';
import { eventually, useGateway } from '../helpers/gateway.js';
import { scrape, scrapeUntil, type Scrape } from '../helpers/prometheus.js';
import { fetch } from '../helpers/http.js';

const SCHEMA = '{ type: object, required: [n], properties: { n: { type: integer, minimum: 0 } } }';

const CONFIG = `
version: 1
admin: { port: 0 }
brokers:
  local: { kind: memory }
listeners:
  api: { kind: http, port: 0 }
  push: { kind: websocket, port: 0 }
routes:
  - name: mixed
    from: { listener: api, path: /mixed }
    through:
      - validate: { schema: { type: object, required: [n], properties: { n: { type: integer } } } }
      - filter: n != 0
      - transform: 'n = 13 ? $error("unlucky number") : $'
    to: { broker: local, topic: mixed }
  - name: tagging
    from: { listener: api, path: /tagging }
    through:
      - validate: { schema: ${SCHEMA}, onInvalid: tag }
    to: { broker: local, topic: tagged }
  - name: dead
    from: { listener: api, path: /dead }
    through:
      - validate: { schema: ${SCHEMA}, onInvalid: deadletter }
    to: { broker: local, topic: accepted }
    deadletter: { broker: local, topic: rejected }
  - name: limited
    from: { listener: api, path: /limited }
    through:
      - ratelimit: { rate: 1, per: hour, burst: 1 }
    to: { broker: local, topic: limited }
  - name: fanout
    from: { broker: local, topic: mixed }
    to: { listener: push, path: /ws/mixed, format: envelope }
  - name: ws-in
    from: { listener: push, path: /ws/in }
    ack: true
    through:
      - validate: { schema: ${SCHEMA} }
    to: { broker: local, topic: ws-in }
  - name: hooked
    from: { listener: api, path: /hooked }
    to: { http: { url: 'http://127.0.0.1:9/hook' } }
`;

/** Writes `head` on a new connection and reads until the server closes it. */
async function rawExchange(port: number, head: string): Promise<string> {
  const socket = connect(port, '127.0.0.1');
  socket.write(head);
  let answer = '';
  for await (const chunk of socket) answer += String(chunk);
  return answer;
}

function outcomes(s: Scrape, route: string): Record<string, number | undefined> {
  const out: Record<string, number | undefined> = {};
  for (const o of ['received', 'delivered', 'filtered', 'invalid', 'tagged', 'deadlettered', 'failed', 'rejected']) out[o] = s.value('eventgate_route_messages_total', { route, outcome: o });
  return out;
}

describe('GET /metrics', () => {
  const gw = useGateway(CONFIG);

  it('counts every outcome of a known mix of messages exactly, per route', async () => {
    const receiver = await WsClient.connect(gw.url('push', '/ws/mixed', 'ws'));
    const send = (path: string, body: unknown) => post(gw.url('api', path), body);
    const statuses = [
      ...(await Promise.all([send('/mixed', { n: 1 }), send('/mixed', { n: 2 }), send('/mixed', { n: 3 })])),
      await send('/mixed', { n: 0 }),
      await send('/mixed', { n: 0 }),
      await send('/mixed', { n: 'x' }),
      await send('/mixed', {}),
      await send('/mixed', { n: 13 }),
      await send('/tagging', { n: -1 }),
      await send('/tagging', { n: 5 }),
      await send('/dead', { n: -1 }),
      await send('/dead', { n: 1 }),
      await send('/limited', { n: 1 }),
      await send('/limited', { n: 2 }),
      await send('/no-such-path', { n: 1 }),
    ].map((r) => r.status);
    assert.deepEqual(statuses, [200, 200, 200, 200, 200, 400, 400, 500, 200, 200, 200, 200, 200, 429, 404]);
    // The consume route has forwarded the three delivered messages once the client has them.
    for (let i = 0; i < 3; i++) await receiver.next();
    receiver.close();
    // Gone from the gauge before the next test counts the clients from 0.
    await scrapeUntil(gw.adminUrl, (x) => x.value('eventgate_websocket_clients', { listener: 'push' }) === 0);

    const s = await scrape(gw.adminUrl);
    assert.match(s.contentType ?? '', /^text\/plain; version=0\.0\.4/);
    assert.deepEqual(outcomes(s, 'mixed'), { received: 8, delivered: 3, filtered: 2, invalid: 2, tagged: 0, deadlettered: 0, failed: 1, rejected: 0 });
    assert.deepEqual(outcomes(s, 'tagging'), { received: 2, delivered: 1, filtered: 0, invalid: 0, tagged: 1, deadlettered: 0, failed: 0, rejected: 0 });
    assert.deepEqual(outcomes(s, 'dead'), { received: 2, delivered: 1, filtered: 0, invalid: 0, tagged: 0, deadlettered: 1, failed: 0, rejected: 0 });
    assert.deepEqual(outcomes(s, 'limited'), { received: 2, delivered: 1, filtered: 0, invalid: 0, tagged: 0, deadlettered: 0, failed: 0, rejected: 1 });
    assert.deepEqual(outcomes(s, 'fanout'), { received: 3, delivered: 3, filtered: 0, invalid: 0, tagged: 0, deadlettered: 0, failed: 0, rejected: 0 });
    assert.equal(s.types.get('eventgate_route_messages_total'), 'counter');

    // Every HTTP answer is counted by status, including those that never reached a route (404).
    assert.deepEqual(
      s.series('eventgate_http_requests_total').sort((a, b) => a.labels.status!.localeCompare(b.labels.status!)),
      [
        { labels: { listener: 'api', status: '200' }, value: 10 },
        { labels: { listener: 'api', status: '400' }, value: 2 },
        { labels: { listener: 'api', status: '404' }, value: 1 },
        { labels: { listener: 'api', status: '429' }, value: 1 },
        { labels: { listener: 'api', status: '500' }, value: 1 },
      ],
    );
  });

  it('has a latency histogram per route counting the messages their targets acknowledged', async () => {
    const s = await scrape(gw.adminUrl);
    assert.equal(s.types.get('eventgate_route_latency_seconds'), 'histogram');
    // delivered + tagged + dead-lettered; filtered, invalid and failed messages reached no target.
    for (const [route, n] of [
      ['mixed', 3],
      ['tagging', 2],
      ['dead', 2],
      ['limited', 1],
      ['fanout', 3],
    ] as const) {
      assert.equal(s.value('eventgate_route_latency_seconds_count', { route }), n, route);
      assert.equal(s.value('eventgate_route_latency_seconds_bucket', { route, le: '+Inf' }), n, route);
      const sum = s.value('eventgate_route_latency_seconds_sum', { route })!;
      assert.ok(sum > 0 && sum < 10 * n, `${route} sum ${sum}`);
      // Buckets are cumulative.
      const buckets = s
        .series('eventgate_route_latency_seconds_bucket')
        .filter((b) => b.labels.route === route)
        .map((b) => b.value);
      assert.equal(buckets.length, 15);
      assert.deepEqual(
        buckets,
        [...buckets].sort((a, b) => a - b),
      );
    }
  });

  it('follows WebSocket clients as they connect and disconnect', async () => {
    const before = (await scrape(gw.adminUrl)).value('eventgate_websocket_clients', { listener: 'push' });
    assert.equal(before, 0);
    const a = await WsClient.connect(gw.url('push', '/ws/mixed', 'ws'));
    const b = await WsClient.connect(gw.url('push', '/ws/mixed', 'ws'));
    assert.equal((await scrape(gw.adminUrl)).value('eventgate_websocket_clients', { listener: 'push' }), 2);
    a.close();
    await a.waitClose();
    await scrapeUntil(gw.adminUrl, (s) => s.value('eventgate_websocket_clients', { listener: 'push' }) === 1);
    b.ws.terminate();
    await scrapeUntil(gw.adminUrl, (s) => s.value('eventgate_websocket_clients', { listener: 'push' }) === 0);
  });

  it('reports the memory consumer lag of each consume route, and the Node process metrics', async () => {
    const s = await scrape(gw.adminUrl);
    assert.equal(s.types.get('eventgate_memory_consumer_lag'), 'gauge');
    assert.deepEqual(s.series('eventgate_memory_consumer_lag'), [{ labels: { route: 'fanout', topic: 'mixed', partition: '0' }, value: 0 }]);
    assert.equal(s.value('eventgate_memory_producer_errors_total', { broker: 'local' }), 0);
    // A consume route's per-route counters exist from its start, at 0: a series born at its first
    // error is no increase to rate() or increase(), so a one-off burst went unseen by the alerts.
    assert.deepEqual(s.series('eventgate_memory_consumer_errors_total'), [{ labels: { broker: 'local', route: 'fanout' }, value: 0 }]);
    assert.deepEqual(s.series('eventgate_memory_consumer_crashes_total'), [{ labels: { broker: 'local', route: 'fanout' }, value: 0 }]);
    // So does each result of a route's webhook requests (none sent yet).
    assert.deepEqual(
      s.series('eventgate_webhook_requests_total'),
      ['2xx', '3xx', '4xx', '5xx', 'timeout', 'connection'].map((result) => ({ labels: { route: 'hooked', target: '0', result }, value: 0 })),
    );
    // Every broker kind's families exist (without series) whatever the config, so alerts and dashboards can rely on them.
    assert.equal(s.types.get('eventgate_kafka_consumer_lag'), 'gauge');
    assert.deepEqual(s.series('eventgate_kafka_consumer_lag'), []);
    assert.equal(s.types.get('eventgate_kafka_producer_errors_total'), 'counter');
    // Each kind's consumer-errors HELP names what it counts beyond retried failures (messages never read again).
    const help = (name: string) => s.text.split('\n').find((l) => l.startsWith(`# HELP ${name} `)) ?? '';
    assert.match(help('eventgate_memory_consumer_errors_total'), /never read because the topic's retention dropped it first .*not retried/);
    assert.match(help('eventgate_nats_consumer_errors_total'), /corePendingBytes behind \(not retried\)/);
    assert.match(help('eventgate_mqtt_consumer_errors_total'), /subscription the server refused/);
    // Offset resets count there too (since the forty-third session), and its HELP said nothing of them (spec-checklist 2265).
    assert.match(help('eventgate_kafka_consumer_errors_total'), /group offset the cluster answered out of range/);
    assert.doesNotMatch(help('eventgate_amqp_consumer_errors_total'), /also/);
    assert.ok(s.value('process_cpu_user_seconds_total')! >= 0);
    assert.ok(s.value('nodejs_heap_size_used_bytes')! > 0);
    assert.equal(s.value('eventgate_ready'), 1);
  });

  it('counts reloads by result and names the running config version', async () => {
    const first = await scrape(gw.adminUrl);
    const version0 = (await gw.status()).version as string;
    assert.deepEqual(first.series('eventgate_config_info'), [{ labels: { version: version0 }, value: 1 }]);
    assert.equal(first.value('eventgate_config_reloads_total', { result: 'success' }), 0);
    assert.equal(first.value('eventgate_config_reloads_total', { result: 'failure' }), 0);

    // `extra-hook`'s webhook refuses every connection: each try counts a consumer error of the route.
    const extra = [
      '  - name: extra\n    from: { listener: api, path: /extra }\n    to: { broker: local, topic: extra }',
      '  - name: extra-hook\n    from: { broker: local, topic: extra }\n    to: { http: { url: "http://127.0.0.1:9/refused", retry: { attempts: 1 } } }',
    ].join('\n');
    // `mixed` and `fanout` move to another broker, and `hooked` sends to a broker instead of its webhook.
    const moved = CONFIG.replace('mixed }\n  - name: tagging', `mixed }\n${extra}\n  - name: tagging`)
      .replace('local: { kind: memory }', 'local: { kind: memory }\n  other: { kind: memory }')
      .replaceAll('broker: local, topic: mixed }', 'broker: other, topic: mixed }')
      .replace("to: { http: { url: 'http://127.0.0.1:9/hook' } }", 'to: { broker: local, topic: hooked }');
    const applied = await gw.reconfigure(moved);
    assert.equal(applied.msg, 'config reloaded');
    const version1 = (await gw.status()).version as string;
    assert.notEqual(version1, version0);
    let s = await scrape(gw.adminUrl);
    assert.equal(s.value('eventgate_config_reloads_total', { result: 'success' }), 1);
    assert.deepEqual(s.series('eventgate_config_info'), [{ labels: { version: version1 }, value: 1 }]);
    assert.equal(s.value('eventgate_config_last_reload_successful'), 1);
    // The new route starts at zero; the kept routes keep their counts.
    assert.equal(s.value('eventgate_route_messages_total', { route: 'extra', outcome: 'received' }), 0);
    assert.equal(s.value('eventgate_route_messages_total', { route: 'mixed', outcome: 'received' }), 8);
    // A moved route's series are those of the broker it reads now, and no webhook's once it has none.
    const fanoutErrors = (x: Scrape) => x.series('eventgate_memory_consumer_errors_total').filter((e) => e.labels.route === 'fanout');
    assert.deepEqual(fanoutErrors(s), [{ labels: { broker: 'other', route: 'fanout' }, value: 0 }]);
    assert.deepEqual(
      s.series('eventgate_webhook_requests_total').filter((e) => e.labels.route === 'hooked'),
      [],
    );
    assert.equal((await post(gw.url('api', '/extra'), { n: 1 })).status, 200);
    await scrapeUntil(gw.adminUrl, (x) => (x.value('eventgate_memory_consumer_errors_total', { broker: 'local', route: 'extra-hook' }) ?? 0) > 0);

    const rejected = await gw.reconfigure(CONFIG.replace('kind: memory', 'kind: memroy'));
    assert.match(rejected.msg, /^reload rejected/);
    s = await scrape(gw.adminUrl);
    assert.equal(s.value('eventgate_config_reloads_total', { result: 'failure' }), 1);
    assert.equal(s.value('eventgate_config_last_reload_successful'), 0);
    assert.deepEqual(s.series('eventgate_config_info'), [{ labels: { version: version1 }, value: 1 }]);

    // A reload that fails at its build (a listener on a port in use) after building a broker: no series of that broker stay.
    const ghost = CONFIG.replace('local: { kind: memory }', 'local: { kind: memory }\n  ghost: { kind: memory }')
      .replace('  push: { kind: websocket, port: 0 }', `  push: { kind: websocket, port: 0 }\n  busy: { kind: http, port: ${gw.port('api')} }`)
      .replace(
        'routes:\n',
        'routes:\n  - name: ghost-writer\n    from: { listener: api, path: /ghost }\n    to: { broker: ghost, topic: t }\n  - name: ghost-reader\n    from: { broker: ghost, topic: t }\n    to: { broker: local, topic: u }\n',
      );
    const ghostReload = await gw.reconfigure(ghost);
    assert.match(ghostReload.msg, /^reload rejected/);
    s = await scrape(gw.adminUrl);
    assert.equal(s.value('eventgate_config_reloads_total', { result: 'failure' }), 2);
    assert.deepEqual(
      s.text.split('\n').filter((l) => l.includes('ghost')),
      [],
    );

    // Back to the first config: the removed route's series go away.
    await gw.reconfigure(CONFIG);
    s = await scrape(gw.adminUrl);
    assert.equal(s.value('eventgate_config_reloads_total', { result: 'success' }), 2);
    assert.equal(s.value('eventgate_config_last_reload_successful'), 1);
    assert.equal(s.value('eventgate_route_messages_total', { route: 'extra', outcome: 'received' }), undefined);
    assert.deepEqual(fanoutErrors(s), [{ labels: { broker: 'local', route: 'fanout' }, value: 0 }]);
    assert.equal(s.series('eventgate_webhook_requests_total').filter((e) => e.labels.route === 'hooked').length, 6);
    // So do the series a kept broker counts per route: nothing names a removed route any more.
    assert.deepEqual(
      s.text.split('\n').filter((l) => l.includes('extra')),
      [],
    );
  });

  it('serves the same counters as JSON at /admin/stats', async () => {
    const res = await fetch(`${gw.adminUrl}/admin/stats`);
    assert.equal(res.status, 200);
    const stats = (await res.json()) as any;
    assert.equal(stats.routes.mixed.received, 8);
    assert.equal(stats.routes.mixed.failed, 1);
    assert.equal(stats.routes.mixed.latency.count, 3);
    assert.deepEqual(stats.listeners.api.responses, { 200: 11, 400: 2, 404: 1, 429: 1, 500: 1 }); // 200: the 10 of the first test, and the reload test's /extra
    assert.equal(stats.listeners.push.clients, 0);
    // Every listener counter /metrics has (eventgate_listener_connections_dropped_total, ..._slow_clients_...), each from 0.
    assert.equal(stats.listeners.api.connectionsDropped, 0);
    assert.equal(stats.listeners.push.slowClientsDisconnected, 0);
    assert.equal(stats.brokerErrors.local.crashes, 0);
    assert.deepEqual(stats.consumerLag, [{ broker: 'local', kind: 'memory', route: 'fanout', topic: 'mixed', partition: 0, lag: 0 }]);
    assert.deepEqual(stats.reloads, { success: 2, failure: 2, rolledBack: 0 });
  });

  it('counts the error frames of a WebSocket listener by status, also for frames no route saw', async () => {
    const client = await WsClient.connect(gw.url('push', '/ws/in', 'ws'));
    const forwardOnly = await WsClient.connect(gw.url('push', '/ws/mixed', 'ws'));
    const replies: string[] = [];
    const reply = async (c: WsClient) => {
      const f = (await c.next()) as { type: string; status?: number };
      replies.push(f.type === 'ack' ? 'ack' : `${f.type} ${f.status}`);
    };
    for (const frame of [{ n: 1 }, { n: -1 }, 'not json', { n: 2 }, { n: 'x' }]) {
      client.send(frame);
      await reply(client);
    }
    client.ws.send(Buffer.from('{"n":3}'), { binary: true });
    await reply(client);
    forwardOnly.send({ n: 4 });
    await reply(forwardOnly);
    assert.deepEqual(replies, ['ack', 'error 400', 'error 400', 'ack', 'error 400', 'error 415', 'error 405']);
    client.close();
    forwardOnly.close();

    const s = await scrape(gw.adminUrl);
    assert.equal(s.types.get('eventgate_websocket_error_frames_total'), 'counter');
    assert.deepEqual(
      s.series('eventgate_websocket_error_frames_total').sort((a, b) => a.labels.status!.localeCompare(b.labels.status!)),
      [
        { labels: { listener: 'push', status: '400' }, value: 3 },
        { labels: { listener: 'push', status: '405' }, value: 1 },
        { labels: { listener: 'push', status: '415' }, value: 1 },
      ],
    );
    // The route counted the frames it saw: not the one that was not JSON, nor the binary one.
    assert.deepEqual(outcomes(s, 'ws-in'), { received: 4, delivered: 2, filtered: 0, invalid: 2, tagged: 0, deadlettered: 0, failed: 0, rejected: 0 });
    const stats = (await (await fetch(`${gw.adminUrl}/admin/stats`)).json()) as any;
    assert.deepEqual(stats.listeners.push.errorFrames, { 400: 3, 405: 1, 415: 1 });
  });

  it('counts the answers given before there is a request: a malformed or oversized head, CONNECT', async () => {
    const before = await scrape(gw.adminUrl);
    const count = (s: Scrape, status: string) => s.value('eventgate_http_requests_total', { listener: 'api', status }) ?? 0;
    // node's parser answers these itself, before the listener's request handler runs.
    const answers = [];
    for (const head of ['GARBAGE\r\n\r\n', `POST /mixed HTTP/1.1\r\nhost: x\r\nx-big: ${'a'.repeat(20000)}\r\n\r\n`, 'CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n']) {
      answers.push((await rawExchange(gw.port('api'), head)).split('\r\n')[0]);
    }
    assert.deepEqual(answers, ['HTTP/1.1 400 Malformed request', 'HTTP/1.1 431 Request headers too large', 'HTTP/1.1 405 Method not allowed']);
    const after = await scrape(gw.adminUrl);
    assert.deepEqual(
      ['400', '405', '431'].map((status) => count(after, status) - count(before, status)),
      [1, 1, 1],
    );
  });

  it('counts no answer for a request whose client went away before it was answered', async () => {
    const inFlight = async () => ((await (await fetch(`${gw.adminUrl}/admin/status`)).json()) as any).listeners.find((l: any) => l.name === 'api').inFlight as number;
    const before = await scrape(gw.adminUrl);
    const socket = connect(gw.port('api'), '127.0.0.1');
    socket.write('POST /mixed HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 10\r\n\r\n{');
    // The listener has the request (and waits for the rest of its body) before the client resets it.
    await eventually(async () => assert.equal(await inFlight(), 1));
    socket.resetAndDestroy();
    await eventually(async () => assert.equal(await inFlight(), 0));
    const after = await scrape(gw.adminUrl);
    assert.deepEqual(after.series('eventgate_http_requests_total'), before.series('eventgate_http_requests_total'));
  });
});

describe('GET /metrics with an admin token', () => {
  const gw = useGateway('version: 1\nadmin:\n  port: 0\n  token: ${ADMIN_TOKEN}\n', { env: { ADMIN_TOKEN: 's3cret-metrics-token' } });
  it('needs the token, while /healthz and /readyz stay open', async () => {
    const denied = await fetch(`${gw.adminUrl}/metrics`);
    assert.equal(denied.status, 401);
    assert.equal(denied.headers.get('www-authenticate'), 'Bearer realm="eventgate-admin"');
    assert.equal((await fetch(`${gw.adminUrl}/admin/stats`)).status, 401);
    assert.equal((await fetch(`${gw.adminUrl}/readyz`)).status, 200);
    const s = await scrape(gw.adminUrl, { authorization: 'Bearer s3cret-metrics-token' });
    assert.equal(s.value('eventgate_ready'), 1);
    assert.ok(!s.text.includes('s3cret-metrics-token'));
  });
});
