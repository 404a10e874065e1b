import assert from 'node:assert/strict';
import { afterEach } from 'node:test';
import { post, WsClient } from './clients.js';
import { type LogLine, useGateway } from './gateway.js';

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
 * One gateway per test (`await f.gw.start(yaml)`), stopped with its websocket clients after each:
 * reload tests change the config, so they do not share one.
 */
export function pipelineFixture() {
  const clients: WsClient[] = [];
  afterEach(() => {
    for (const c of clients.splice(0)) c.close();
  });
  const gw = useGateway();
  const f = {
    gw,
    async connect(path = '/out'): Promise<WsClient> {
      const c = await WsClient.connect(gw.url('push', path, 'ws'));
      clients.push(c);
      return c;
    },
    /** Posts {n} to /in and returns what the websocket client receives. */
    async roundTrip(client: WsClient, n: number): Promise<any> {
      const reply = await post(gw.url('api', '/in'), { n });
      assert.equal(reply.status, 200, reply.text);
      return client.next();
    },
  };
  return f;
}
