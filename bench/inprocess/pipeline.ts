/**
 * Child process of the pipeline scenario: the cost of one message through the compiled chain
 * (validate + filter + transform, compiled from a real gateway.yaml by the real compiler), against
 * the same work written by hand in plain JavaScript with the same ajv validator. Prints one JSON line.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { defaultRegistry } from '../../src/kinds/index.js';
import type { StepResult } from '../../src/kinds/contracts.js';
import { loadPlan } from '../../src/plan/compile.js';
import type { Message, MessageContext } from '../../src/core/message.js';
import { isStop } from '../../src/core/outcome.js';
import { runChain } from '../../src/runtime/route.js';
import { httpMemoryConfig, LIGHT_SCHEMA } from '../configs.js';

const seconds = Number(process.argv[2] ?? 5);

const dir = mkdtempSync(join(tmpdir(), 'eventgate-bench-'));
writeFileSync(join(dir, 'gateway.yaml'), httpMemoryConfig());
const loaded = await loadPlan(join(dir, 'gateway.yaml'), { registry: defaultRegistry(), env: {} });
// The plan holds what it read: the config's directory is not needed past the load (and not left behind).
rmSync(dir, { recursive: true, force: true });
if (!loaded.plan) throw new Error(`bench config does not load: ${JSON.stringify(loaded.diagnostics)}`);
const steps = loaded.plan.routes.get('light-in')!.steps;

/** Distinct messages, so no step sees one value over and over. */
const messages: Message[] = Array.from({ length: 64 }, (_, i) => ({
  value: { id: i, lumens: 1 + ((i * 37) % 1000), sentAt: `2026-11-23T10:${String(i % 60).padStart(2, '0')}:00Z` },
  key: null,
  headers: { 'content-type': 'application/json' },
  topic: null,
  partition: null,
  offset: null,
  timestamp: 1_780_000_000_000 + i,
}));
const ctx: MessageContext = { route: 'light-in', path: {}, query: {} };

const addFormats = addFormatsModule as unknown as (ajv: Ajv2020) => Ajv2020;
const check = addFormats(new Ajv2020({ allErrors: true, strict: false })).compile(LIGHT_SCHEMA);

/** What a user would write by hand for the same three steps. */
function byHand(msg: Message): StepResult {
  const v = msg.value as { id: number; lumens: number; sentAt: string };
  if (!check(v)) return { stop: 'invalid', problem: { code: 'EG_INVALID_MESSAGE', status: 400, title: 'invalid', detail: '', errors: [] } } as StepResult;
  if (!(v.lumens > 0)) return { stop: 'filtered' };
  return { ...msg, value: { streetlightId: v.id, lumens: v.lumens, sentAt: v.sentAt, bright: v.lumens >= 500 } };
}

async function measure(run: (m: Message) => StepResult | Promise<StepResult>, forSeconds: number): Promise<number> {
  let n = 0;
  const start = performance.now();
  const until = start + forSeconds * 1000;
  let now = start;
  while (now < until) {
    for (let i = 0; i < 1000; i++) {
      let r = run(messages[n++ & 63]!);
      if (r instanceof Promise) r = await r;
      if (isStop(r)) throw new Error(`bench message stopped: ${r.stop}`);
    }
    now = performance.now();
  }
  return ((now - start) * 1000) / n;
}

const chain = (m: Message) => runChain(steps, m, ctx);
const warm = Math.min(2, Math.max(0.5, seconds / 4));
await measure(chain, warm);
await measure(byHand, warm);
// Interleaved halves, so a burst of load from elsewhere on the machine hits both sides alike.
const half = seconds / 2;
const gateway = [await measure(chain, half)];
const hand = [await measure(byHand, half)];
gateway.push(await measure(chain, half));
hand.push(await measure(byHand, half));
process.stdout.write(`${JSON.stringify({ gateway_us: Math.min(...gateway), hand_us: Math.min(...hand) })}\n`);
