import { createHash } from 'node:crypto';
import { bindingsFor, expressionProblem, type ExpressionEvaluationError } from '../../expr/expression.js';
import { problem } from '../../core/errors.js';
import { resultText, type Message, type MessageContext } from '../../core/message.js';
import type { StepStop } from '../../core/outcome.js';
import type { CompiledStep } from '../contracts.js';
import { defineStep, oneOfStrings, Type, type Static } from '../define.js';

const PERIOD_MS = { second: 1000, minute: 60_000, hour: 3_600_000 } as const;
const DEFAULT_MAX_KEYS = 100_000;

const options = Type.Object(
  {
    rate: Type.Number({ exclusiveMinimum: 0, description: 'Tokens added per period (may be fractional: 0.5 per second is one every 2 s).' }),
    per: Type.Optional(oneOfStrings(['second', 'minute', 'hour'], { default: 'second', description: 'The period of `rate`.' })),
    burst: Type.Optional(Type.Integer({ minimum: 1, description: 'Bucket size: messages a client may send at once (default: rate, rounded up).' })),
    key: Type.Optional(Type.String({ minLength: 1, description: 'JSONata expression naming the client (default: its IP address), e.g. $principal.' })),
    maxKeys: Type.Optional(
      Type.Integer({
        minimum: 1,
        default: DEFAULT_MAX_KEYS,
        description: 'Most clients tracked at once. At the bound, clients whose buckets have refilled completely are forgotten first (a new bucket would be full too), then the least recently seen.',
      }),
    ),
  },
  { additionalProperties: false },
);
export type RateLimitOptions = Static<typeof options>;

/**
 * Token buckets, one per client key: each holds up to `burst` tokens and refills at `rate` per
 * period; a message takes one. Idle clients' buckets are dropped once full again (they would be
 * created full anyway), so memory follows the number of recently active clients, bounded by
 * `maxKeys` (beyond it the least recently used buckets go).
 */
export class TokenBuckets {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(
    private readonly perMs: number,
    private readonly burst: number,
    private readonly maxKeys: number,
  ) {}

  /** The tokens left in the bucket take() last looked at (fractional), for the RateLimit fields. */
  left = 0;

  /** Takes a token for `key`: 0 when granted, otherwise the milliseconds until one is available. */
  take(key: string, now: number): number {
    const b = this.buckets.get(key);
    let tokens = this.burst;
    if (b) {
      tokens = Math.min(this.burst, b.tokens + (now - b.at) * this.perMs);
      this.buckets.delete(key); // re-inserted below: the map's order is least recently used first
    } else if (this.buckets.size >= this.maxKeys) {
      this.evict(now);
    }
    const granted = tokens >= 1;
    const left = granted ? tokens - 1 : tokens;
    this.left = left;
    this.buckets.set(key, { tokens: left, at: now });
    return granted ? 0 : (1 - tokens) / this.perMs;
  }

  get size(): number {
    return this.buckets.size;
  }

  private evict(now: number): void {
    for (const [k, b] of this.buckets) if (b.tokens + (now - b.at) * this.perMs >= this.burst) this.buckets.delete(k);
    const excess = this.buckets.size - Math.floor(this.maxKeys * 0.9);
    if (excess <= 0) return;
    let n = 0;
    for (const k of this.buckets.keys()) {
      if (n++ >= excess) break;
      this.buckets.delete(k);
    }
  }
}

export const ratelimitStep = defineStep({
  kind: 'ratelimit',
  options,
  doc: {
    summary:
      'Token-bucket rate limit per client: each client may send `burst` messages at once and `rate` per `per` on average. Over the limit, HTTP answers 429 with `Retry-After` (seconds) and WebSocket clients get an error frame with status 429 and `retryAfter` (seconds). ' +
      'Every HTTP answer of the route carries the IETF RateLimit fields as draft 6 writes them (`RateLimit-Policy: <burst>;w=<seconds to refill it>`, `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset`: seconds until the next token), as does a 429 error frame (`rateLimit`). ' +
      'Clients are told apart by IP address, or by the JSONata `key` (for example `$principal` after an `auth` step; when it has no result the IP is used). Behind a proxy, key on `$headers."x-forwarded-for"` only if the proxy sets that header. ' +
      'Buckets are kept across reloads for as long as the route keeps this step unchanged. Each route has its own buckets, even when it uses the step through a shared chain, and each gateway process its own (docs/security.md). Only for routes from a listener.',
    example: 'ratelimit:\n  rate: 100\n  per: minute\n  burst: 20\n  key: $principal',
  },
  compile(options, ctx) {
    const key = options.key === undefined ? undefined : ctx.compileExpression(options.key, ['key']);
    if (options.key !== undefined && !key) return undefined;
    const per = options.per ?? 'second';
    const burst = options.burst ?? Math.max(1, Math.ceil(options.rate));
    const perMs = options.rate / PERIOD_MS[per];
    const maxKeys = options.maxKeys ?? DEFAULT_MAX_KEYS;
    const limit = `${options.rate} per ${per}${burst !== options.rate ? ` (burst ${burst})` : ''}`;
    const fields = rateLimitFields(burst, perMs);
    const create = () => new TokenBuckets(perMs, burst, maxKeys);
    const step = (buckets: TokenBuckets): CompiledStep => ({
      kind: 'ratelimit',
      keepsValue: true,
      needsClient: true,
      run(msg, mctx) {
        if (!key) return admitOne(buckets, `ip:${clientAddress(mctx)}`, msg, mctx, limit, fields);
        return key.evaluate(msg.value, bindingsFor(msg, mctx)).then(
          (k) => admitOne(buckets, k === undefined || k === null ? `ip:${clientAddress(mctx)}` : bucketKey(resultText(k, Buffer.isBuffer(msg.value))), msg, mctx, limit, fields),
          (err) => ({ stop: 'failed' as const, problem: expressionProblem('ratelimit key', err as ExpressionEvaluationError) }),
        );
      },
      // Buckets live in the route's step state, not in this compiled object, so they outlast reloads.
      forRoute: (rt) => step(rt.state(create)),
    });
    return step(create());
  },
});

/**
 * The bucket of a computed key. A key longer than a digest (a header clients fill as they like)
 * is kept as its SHA-256: `maxKeys` buckets of 15 KB keys would otherwise hold ~1.5 GB.
 */
export function bucketKey(k: string): string {
  return k.length <= 64 ? `key:${k}` : `sha256:${createHash('sha256').update(k).digest('base64url')}`;
}

/**
 * The IETF RateLimit fields as draft-ietf-httpapi-ratelimit-headers-06 writes them (and Kong and
 * express-rate-limit's default `standardHeaders: 'draft-6'` send; docs/http-edge.md says why this
 * draft): `RateLimit-Policy: <burst>;w=<seconds>`, `RateLimit-Limit`, `RateLimit-Remaining`,
 * `RateLimit-Reset`. A token bucket's quota is its burst, given back in full over the seconds the
 * policy names (20 per 12 s is 100 per minute, burst 20); Reset is when the next token comes
 * (on a 429, the same moment as Retry-After, as the draft asks).
 */
interface RateLimitFields {
  policy: string;
  limit: string;
  perMs: number;
}

function rateLimitFields(burst: number, perMs: number): RateLimitFields {
  return { policy: `${burst};w=${Math.max(1, Math.round(burst / perMs / 1000))}`, limit: String(burst), perMs };
}

/** Seconds until the bucket holding `left` tokens gains its next whole one: at least 1. */
function secondsToNextToken(left: number, perMs: number): number {
  return Math.max(1, Math.ceil((Math.floor(left) + 1 - left) / perMs / 1000));
}

function admitOne(buckets: TokenBuckets, key: string, msg: Message, mctx: MessageContext, limit: string, f: RateLimitFields): Message | StepStop {
  const waitMs = buckets.take(key, performance.now());
  const left = buckets.left;
  if (waitMs === 0) {
    // For the HTTP answer: the client learns what it has left before it is refused.
    mctx.replyHeaders = ['ratelimit-policy', f.policy, 'ratelimit-limit', f.limit, 'ratelimit-remaining', String(Math.floor(left)), 'ratelimit-reset', String(secondsToNextToken(left, f.perMs))];
    return msg;
  }
  const seconds = Math.max(1, Math.ceil(waitMs / 1000));
  return {
    stop: 'rejected',
    problem: problem('EG_RATE_LIMITED', `rate limit of ${limit} exceeded; retry in ${seconds} s`, {
      headers: { 'retry-after': String(seconds), 'ratelimit-policy': f.policy, 'ratelimit-limit': f.limit, 'ratelimit-remaining': '0', 'ratelimit-reset': String(seconds) },
    }),
  };
}

/** IPv4 clients of a dual-stack socket appear as ::ffff:a.b.c.d; one client, one key. */
function clientAddress(ctx: MessageContext): string {
  const a = ctx.remoteAddress ?? ctx.request?.remoteAddress ?? 'unknown';
  return a.startsWith('::ffff:') ? a.slice(7) : a;
}
