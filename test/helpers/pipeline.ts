import assert from 'node:assert/strict';
import { afterEach } from 'node:test';
import { post, WsClient } from './clients.js';
import type { LogLine, RunningGateway } from './gateway.js';

/**
 * The pipeline the hot-reload tests change: HTTP POST /in → (validate) → transform → websocket
 * /out. The transform (and the schema file, and the HTTP port) are what a test edits.
 */
export function pipelineConfig(transform: string, options: { schema?: string; apiPort?: number } = {}): string {
  return `
version: 1
admin: { port: 0 }
listeners:
  api: { kind: http, port: ${options.apiPort ?? 0}, host: 127.0.0.1 }
  push: { kind: websocket, port: 0, host: 127.0.0.1 }
routes:
  - name: in
    from: { listener: api, path: /in }
    through:${options.schema ? `\n      - validate: { schema: ${options.schema} }` : ''}
      - transform: '${transform}'
    to: { listener: push, path: /out }
`;
}

export const reloaded = (l: LogLine) => l.msg === 'config reloaded';

/**
 * One gateway per test, stopped (with its websocket clients) after each: reload tests change
 * the config, so they do not share one.
 */
export function pipelineFixture() {
  const f = {
    gw: undefined as RunningGateway | undefined,
    clients: [] as WsClient[],
    async connect(path = '/out'): Promise<WsClient> {
      const c = await WsClient.connect(f.gw!.url('push', path, 'ws'));
      f.clients.push(c);
      return c;
    },
    /** Posts {n} to /in and returns what the websocket client receives. */
    async roundTrip(client: WsClient, n: number): Promise<any> {
      const reply = await post(f.gw!.url('api', '/in'), { n });
      assert.equal(reply.status, 200, reply.text);
      return client.next();
    },
  };
  afterEach(async () => {
    for (const c of f.clients.splice(0)) c.close();
    await f.gw?.stop();
    f.gw = undefined;
  });
  return f;
}
