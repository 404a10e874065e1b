import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { post, WsClient } from '../helpers/clients.js';
import { useGateway } from '../helpers/gateway.js';
import { freePort, holdPort } from '../helpers/ports.js';
import { fetch } from '../helpers/http.js';

/**
 * A reload whose new config is valid but cannot be put in place: the listener must move to a new
 * socket on the same port (here: from one address to all of them), and another process holds
 * that port on an address the new socket would cover. The old socket was already closed to free
 * the port, so the gateway must bring it back and say the reload was rolled back.
 */
function config(port: number, host: string, transform: string): string {
  return `version: 1
admin: { port: 0 }
brokers: { local: { kind: memory } }
listeners:
  api: { kind: http, port: ${port}, host: ${host} }
  push: { kind: websocket, port: 0 }
routes:
  - name: in
    from: { listener: api, path: /in }
    through: [{ transform: '${transform}' }]
    to: { broker: local, topic: t }
  - name: out
    from: { broker: local, topic: t }
    to: { listener: push, path: /ws }
`;
}

describe('hot reload: a commit that fails is rolled back', () => {
  const gw = useGateway();
  let holder: Awaited<ReturnType<typeof holdPort>> | undefined;
  afterEach(async () => {
    await holder?.release();
    holder = undefined;
  });

  it('restores the old listener when its new socket cannot bind because another process holds the port, and reports rolled_back', async () => {
    const port = await freePort('127.0.0.1');
    await gw.start(config(port, '127.0.0.1', '{"v": 1, "n": n}'));
    const client = await WsClient.connect(gw.url('push', '/ws', 'ws'));
    // Not kept alive: the reload closes the changed listener's idle connections (its socket is
    // given up to rebind), and a POST sent on a pooled one whose close this process had not read
    // yet failed with "socket hang up" (once in CI), the client's race, not the gateway's.
    assert.equal((await post(`http://127.0.0.1:${port}/in`, { n: 1 }, { connection: 'close' })).status, 200);
    assert.deepEqual(await client.next(), { v: 1, n: 1 });
    const versionBefore = (await gw.status()).version;

    // Another process takes the port on a second loopback address: 0.0.0.0:<port> cannot bind now.
    holder = await holdPort('127.0.0.2', port);
    const line = await gw.reconfigure(config(port, '0.0.0.0', '{"v": 2, "n": n}'));
    assert.equal(line.msg, 'reload rolled back; the running config keeps serving');
    assert.match(String(line.error), /listener 'api'.*already in use.*EADDRINUSE/);
    // At the listener's `port:`, as every config problem says where to change it.
    assert.match(String(line.diagnostic), /gateway\.yaml:5:22: could not start listener 'api': .*EADDRINUSE/);
    assert.equal(line.code, 'EG_START_FAILED');

    // The old pipeline serves on the old socket, and the websocket client on the unchanged listener stayed.
    assert.equal((await post(`http://127.0.0.1:${port}/in`, { n: 2 })).status, 200);
    assert.deepEqual(await client.next(), { v: 1, n: 2 });
    assert.equal(client.closed, undefined, 'the client of the unchanged listener stayed connected');

    const status = await gw.status();
    assert.equal(status.version, versionBefore);
    assert.equal(status.lastReload.result, 'rolled_back');
    assert.match(status.lastReloadError.message, /listener 'api'.*EADDRINUSE/);
    assert.deepEqual(
      status.lastReloadError.diagnostics.map((d: { line: number; column: number; path: string; code: string }) => [d.line, d.column, d.path, d.code]),
      [[5, 22, 'listeners.api.port', 'EG_START_FAILED']],
    );
    const api = status.listeners.find((l: { name: string }) => l.name === 'api');
    assert.equal(api.port, port);
    assert.equal(api.ready, true);
    const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
    assert.match(metrics, /eventgate_config_reloads_total\{result="rolled_back"\} 1/);
    assert.match(metrics, /eventgate_config_last_reload_successful 0/);

    // POST /admin/reload says the same, with 409, as a problem.
    const res = await fetch(`${gw.adminUrl}/admin/reload`, { method: 'POST' });
    assert.equal(res.status, 409);
    assert.equal(res.headers.get('content-type'), 'application/problem+json');
    const refusal = (await res.json()) as { code: string; result: string; errors: string[] };
    assert.equal(refusal.code, 'EG_RELOAD_ROLLED_BACK');
    assert.equal(refusal.result, 'rolled_back');
    assert.match(refusal.errors[0]!, /gateway\.yaml:5:22: could not start listener 'api'/);

    // Once the port is free, the same config applies.
    await holder.release();
    const applied = await fetch(`${gw.adminUrl}/admin/reload`, { method: 'POST' });
    assert.equal(applied.status, 200);
    assert.equal(((await applied.json()) as { result: string }).result, 'applied');
    assert.equal((await post(`http://127.0.0.1:${port}/in`, { n: 3 })).status, 200);
    assert.deepEqual(await client.next(), { v: 2, n: 3 });

    // A kafka listener added on a port another process holds: rejected at its `port:`, said once. Its
    // bootstrap socket logged the bind failure as a `listener error` of its own (the raw node error)
    // before the reload's diagnostic, as no other listener does.
    await holder.release();
    const kafkaPort = await freePort('127.0.0.1');
    holder = await holdPort('127.0.0.1', kafkaPort);
    const from = gw.logs.length;
    const withKafka = config(port, '0.0.0.0', '{"v": 2, "n": n}')
      .replace('brokers: { local: { kind: memory } }', 'brokers:\n  local: { kind: memory }\n  cluster: { kind: kafka, brokers: "127.0.0.1:1" }')
      .replace('listeners:\n', `listeners:\n  kin: { kind: kafka, upstream: cluster, host: 127.0.0.1, port: ${kafkaPort} }\n`);
    const kafkaLine = await gw.reconfigure(withKafka);
    assert.equal(kafkaLine.msg, 'reload rejected; the running config keeps serving');
    assert.match(String(kafkaLine.diagnostic), /gateway\.yaml:7:59: could not start listener 'kin': cannot bind 127\.0\.0\.1:\d+: the port is already in use/);
    assert.deepEqual(
      gw.logs
        .slice(from)
        .filter((l) => l.level === 'error')
        .map((l) => l.msg),
      ['reload rejected; the running config keeps serving'],
    );
  });

  it('restores the old admin server when its new socket cannot bind', async () => {
    const port = await freePort('127.0.0.1');
    const withAdmin = (host: string, transform: string) => config(0, '127.0.0.1', transform).replace('admin: { port: 0 }', `admin: { port: ${port}, host: ${host} }`);
    await gw.start(withAdmin('127.0.0.1', '{"v": 1}'));
    holder = await holdPort('127.0.0.2', port);
    const line = await gw.reconfigure(withAdmin('0.0.0.0', '{"v": 2}'));
    assert.equal(line.msg, 'reload rolled back; the running config keeps serving');
    assert.match(String(line.error), /admin server.*EADDRINUSE/);
    assert.match(String(line.diagnostic), /gateway\.yaml:2:10: could not start admin server: .*EADDRINUSE/);
    const status = await gw.status();
    assert.equal(status.lastReload.result, 'rolled_back');
    assert.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200);
  });

  it("shows no ${VAR}'s value the failure names: not in the log line, POST /admin/reload's 409 or /admin/status (5180)", async () => {
    // The new address, from the environment, is not this machine's (TEST-NET-1): the listener
    // that takes its port over cannot bind it at commit. Its value is a secret, as any ${VAR}'s.
    const BIND_HOST = '192.0.2.1';
    const port = await freePort('127.0.0.1');
    await gw.start(config(port, '127.0.0.1', '{"v": 1}'), { env: { BIND_HOST } });
    const from = gw.logs.length;
    const line = await gw.reconfigure(config(port, '"${BIND_HOST}"', '{"v": 2}'));
    assert.equal(line.msg, 'reload rolled back; the running config keeps serving');
    assert.match(String(line.error), /listener 'api': cannot bind \[redacted\]:\d+/);
    assert.match(String(line.diagnostic), /gateway\.yaml:5:35: could not start listener 'api': cannot bind \[redacted\]:\d+/);
    const res = await fetch(`${gw.adminUrl}/admin/reload`, { method: 'POST' });
    const answer = await res.text();
    assert.equal(res.status, 409, answer);
    const status = JSON.stringify(await gw.status());
    assert.match(status, /"result":"rolled_back"/);
    for (const text of [JSON.stringify(gw.logs.slice(from)), answer, status]) assert.equal(text.includes(BIND_HOST), false, text);
  });
});

/**
 * A reload that gives a port to a new listener while the running config's component on it is
 * removed or moved away: new sockets bind before the old ones stop, so it is refused, the running
 * config serving on. The refusal names the gateway's own holder, not another process.
 */
describe('hot reload: a port the running config holds, asked for by a new listener', () => {
  const gw = useGateway();

  it('refuses a listener renamed on its port, naming the running listener that holds it, and serves on', async () => {
    const port = await freePort('127.0.0.1');
    await gw.start(config(port, '127.0.0.1', '{"v": 1, "n": n}'));
    const renamed = config(port, '127.0.0.1', '{"v": 1, "n": n}').replace('  api: {', '  edge: {').replace('listener: api,', 'listener: edge,');
    const line = await gw.reconfigure(renamed);
    assert.equal(line.msg, 'reload rejected; the running config keeps serving');
    assert.match(
      String(line.diagnostic),
      /gateway\.yaml:5:23: could not start listener 'edge': cannot bind 127\.0\.0\.1:\d+: listener 'api' of the running config holds the port until this reload is done \(new sockets bind before the old ones stop: only a listener that keeps its name takes its port over\); keep that listener \(its name\) on the port and change it in place, or free the port in one reload and take it in the next \(EADDRINUSE\)$/,
    );
    assert.equal((await post(`http://127.0.0.1:${port}/in`, { n: 2 }, { connection: 'close' })).status, 200);
  });

  it('blames another process, not the running listener, for a port held on an address that listener does not bind', async () => {
    const port = await freePort('127.0.0.1');
    // 127.0.0.2 is loopback too (Linux answers all of 127/8): another process holds the port there.
    const other = await holdPort('127.0.0.2', port);
    try {
      await gw.start(config(port, '127.0.0.1', '{"v": 1, "n": n}'));
      const moved = config(port, '127.0.0.2', '{"v": 1, "n": n}').replace('  api: {', '  edge: {').replace('listener: api,', 'listener: edge,');
      const line = await gw.reconfigure(moved);
      assert.equal(line.msg, 'reload rejected; the running config keeps serving');
      assert.match(String(line.diagnostic), /could not start listener 'edge': cannot bind 127\.0\.0\.2:\d+: the port is already in use \(another process, or another eventgate\)/);
      assert.equal((await post(`http://127.0.0.1:${port}/in`, { n: 3 }, { connection: 'close' })).status, 200);
    } finally {
      await other.release();
    }
  });

  it('refuses a listener on the port the admin server leaves in the same reload, naming the admin server', async () => {
    const [adminPort, otherPort] = [await freePort('127.0.0.1'), await freePort('127.0.0.1')];
    const withAdmin = (admin: number, extra: string) =>
      config(0, '127.0.0.1', '{"v": 1}').replace('admin: { port: 0 }', `admin: { port: ${admin}, host: 127.0.0.1 }`).replace('listeners:\n', `listeners:\n${extra}`);
    await gw.start(withAdmin(adminPort, ''));
    const line = await gw.reconfigure(withAdmin(otherPort, `  side: { kind: http, port: ${adminPort}, host: 127.0.0.1 }\n`));
    assert.equal(line.msg, 'reload rejected; the running config keeps serving');
    assert.match(
      String(line.diagnostic),
      /could not start listener 'side': cannot bind 127\.0\.0\.1:\d+: the admin server of the running config holds the port until this reload is done .*; free the port in one reload and take it in the next \(EADDRINUSE\)$/,
    );
    assert.equal((await fetch(`http://127.0.0.1:${adminPort}/healthz`)).status, 200);
  });
});
