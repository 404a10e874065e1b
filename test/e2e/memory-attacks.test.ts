import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { RawWsClient, WsClient } from '../helpers/clients.js';
import { eventually, startGateway, type RunningGateway } from '../helpers/gateway.js';

/**
 * Memory a client could grow without bound (issue #13, docs/security.md "Memory bounds"): each
 * attack is run as an outsider would, and the gateway's resident memory must stay within
 * RSS_BOUND of what it was before the attack — during it and after the attacker is gone.
 */
const RSS_BOUND = 96 * 1024 * 1024;

function rss(pid: number): number {
  const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  return Number(kb) * 1024;
}

const mb = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MB`;

const config = `
version: 1
admin: { port: 0 }
brokers:
  local: { kind: memory }
listeners:
  push: { kind: websocket, port: 0, host: 127.0.0.1 }
routes:
  - name: acked
    from: { listener: push, path: /acked }
    ack: true
    to: { broker: local, topic: acked }
  - name: strict
    from: { listener: push, path: /strict }
    through:
      - validate: { schema: { type: object } }
    to: { broker: local, topic: strict }
`;

describe('memory a client can grow (websocket send bound)', () => {
  let gw: RunningGateway;
  before(async () => {
    gw = await startGateway(config);
  });
  after(async () => {
    await gw.stop();
  });

  /**
   * A client that never reads floods a route with 1-byte frames, each drawing a reply (an ack, or
   * an error frame): every reply counts against its send bound, so it is closed with 1013 and its
   * memory is returned, while other clients are still served.
   */
  async function neverReadingClient(path: string, frameText: string): Promise<void> {
    const pid = gw.process.pid!;
    const baseline = rss(pid);
    let peak = baseline;
    const sampler = setInterval(() => (peak = Math.max(peak, rss(pid))), 50);
    try {
      const attacker = await RawWsClient.connect(gw.url('push', path, 'ws'));
      attacker.pause();
      const from = gw.logs.length;
      let evicted = false;
      void gw.waitForLog((l) => l.msg === 'client too slow; disconnecting with 1013', 120000, from).then(() => (evicted = true), () => undefined);
      const frames = Buffer.concat(Array.from({ length: 4096 }, () => RawWsClient.textFrame(frameText)));
      const deadline = Date.now() + 60000;
      await attacker.flood(frames, () => evicted || peak - baseline > RSS_BOUND || Date.now() > deadline);
      assert.ok(peak - baseline < RSS_BOUND, `RSS grew by ${mb(peak - baseline)} during the attack (bound ${mb(RSS_BOUND)}; baseline ${mb(baseline)})`);
      assert.ok(evicted, 'the client that never reads was disconnected');
      // Another client is served meanwhile.
      const other = await WsClient.connect(gw.url('push', '/acked', 'ws'));
      other.send({ ok: true });
      assert.equal((await other.next(10000)).type, 'ack');
      other.close();
      // The attacker reads what was queued for it before the bound was hit, then the close frame.
      attacker.resume();
      assert.equal((await attacker.waitCloseFrame(20000)).code, 1013);
      attacker.destroy();
      await eventually(async () => assert.equal((await gw.status()).listeners.find((l: { name: string }) => l.name === 'push').clients, 0), 10000);
      const afterwards = rss(pid);
      console.log(`# ${path}: RSS baseline ${mb(baseline)}, peak +${mb(peak - baseline)}, after +${mb(afterwards - baseline)}`);
      assert.ok(peak - baseline < RSS_BOUND, `RSS grew by ${mb(peak - baseline)} during the attack (bound ${mb(RSS_BOUND)}; baseline ${mb(baseline)})`);
      assert.ok(afterwards - baseline < RSS_BOUND, `RSS is ${mb(afterwards - baseline)} above its baseline after the attack`);
    } finally {
      clearInterval(sampler);
    }
  }

  it('closes a never-reading client flooding 1-byte frames to an ack: true route with 1013, RSS bounded', async () => {
    await neverReadingClient('/acked', '1');
  });

  it('closes a never-reading client whose 1-byte frames each draw an error frame with 1013, RSS bounded', async () => {
    await neverReadingClient('/strict', '1');
  });
});
