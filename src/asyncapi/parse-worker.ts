/**
 * The parser thread's entry (parser-thread.ts starts it): parses each document it is sent, asking
 * the gateway's thread for every local file a `$ref` reads.
 */
import { parentPort } from 'node:worker_threads';
import { parseDocument } from './parse.js';
import type { FromParser, ToParser } from './parser-thread.js';

const port = parentPort!;
const reads = new Map<number, { resolve: (text: string) => void; reject: (err: Error) => void }>();
let nextRead = 1;

port.on('message', (m: ToParser) => {
  if (m.kind === 'file') {
    const r = reads.get(m.read);
    reads.delete(m.read);
    if (m.error !== undefined) r?.reject(new Error(m.error));
    else r?.resolve(m.text!);
    return;
  }
  const read = (file: string) =>
    new Promise<string>((resolve, reject) => {
      const id = nextRead++;
      reads.set(id, { resolve, reject });
      port.postMessage({ kind: 'read', id: m.id, read: id, file } satisfies FromParser);
    });
  parseDocument(m.file, m.text, read, m.policy).then(
    (outcome) => port.postMessage({ kind: 'done', id: m.id, outcome } satisfies FromParser),
    (err: unknown) => port.postMessage({ kind: 'failed', id: m.id, error: err instanceof Error ? err.message : String(err) } satisfies FromParser),
  );
});
