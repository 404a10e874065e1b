/**
 * Request bodies sent compressed (`Content-Encoding`, RFC 9110 §8.4). Log shippers and telemetry
 * exporters gzip what they post (Vector, Fluent Bit, OpenTelemetry), and a gateway that ignored
 * the header parsed compressed bytes: a 400 "not valid JSON" that hid the cause, or, for a body
 * taken as bytes (a binary-mode CloudEvent's data), the compressed bytes delivered as the event.
 * The body is decoded before anything else sees it, and never to more than maxBodyBytes.
 */
import { brotliDecompress, gunzip, inflate, inflateRaw, type InputType, type ZlibOptions } from 'node:zlib';
import { problem, type Problem } from './errors.js';

export type ContentCoding = 'gzip' | 'deflate' | 'br';

/** What a 415 for an unknown coding offers (its `Accept-Encoding` header, RFC 9110 §12.5.3). */
export const ACCEPTED_CODINGS = 'gzip, deflate, br';

const CODINGS: Readonly<Record<string, ContentCoding | 'identity'>> = { gzip: 'gzip', 'x-gzip': 'gzip', deflate: 'deflate', br: 'br', identity: 'identity' };

/** More than this many codings on one body is not something a client does; refusing bounds the work. */
const MAX_CODINGS = 2;

type Codings = { ok: true; codings: readonly ContentCoding[] } | { ok: false; problem: Problem };

const NONE: Codings = { ok: true, codings: [] };

/** The codings applied to a body, in the order they were applied, or the 415 naming one the gateway does not decode. */
export function contentCodings(header: string | string[] | undefined): Codings {
  if (header === undefined) return NONE;
  const codings: ContentCoding[] = [];
  for (const token of (Array.isArray(header) ? header.join(',') : header).split(',')) {
    const name = token.trim().toLowerCase();
    if (name === '') continue;
    const coding = Object.hasOwn(CODINGS, name) ? CODINGS[name] : undefined;
    if (coding === undefined) return unsupported(`content encoding '${name}' is not accepted; send the body uncompressed or as ${ACCEPTED_CODINGS}`);
    if (coding !== 'identity') codings.push(coding);
  }
  if (codings.length > MAX_CODINGS) return unsupported(`${codings.length} content encodings on one body are not accepted; at most ${MAX_CODINGS}`);
  return codings.length === 0 ? NONE : { ok: true, codings };
}

function unsupported(detail: string): Codings {
  return { ok: false, problem: problem('EG_UNSUPPORTED_MEDIA_TYPE', detail) };
}

/**
 * The body with its codings undone (the last applied first), or the problem: 413 when it would
 * decode to more than `max` bytes (a small body that inflates to gigabytes is stopped at `max`),
 * 400 when it is not valid data of its coding. Runs on libuv's thread pool, off the event loop.
 */
export async function decodeBody(body: Buffer, codings: readonly ContentCoding[], max: number): Promise<{ ok: true; body: Buffer } | { ok: false; problem: Problem }> {
  let out = body;
  for (let i = codings.length - 1; i >= 0; i--) {
    const coding = codings[i]!;
    try {
      out = await decode(coding, out, { maxOutputLength: max });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') {
        return { ok: false, problem: problem('EG_PAYLOAD_TOO_LARGE', `the ${coding} body decompresses to more than ${max} bytes, the most this listener accepts`) };
      }
      return { ok: false, problem: problem('EG_BAD_REQUEST', `the body is not valid ${coding} data (${(err as Error).message}), as its Content-Encoding says`) };
    }
  }
  return { ok: true, body: out };
}

function decode(coding: ContentCoding, data: Buffer, options: ZlibOptions): Promise<Buffer> {
  const fn = coding === 'gzip' ? gunzip : coding === 'br' ? brotliDecompress : hasZlibHeader(data) ? inflate : inflateRaw;
  return new Promise((resolve, reject) => (fn as (d: InputType, o: ZlibOptions, cb: (e: Error | null, r: Buffer) => void) => void)(data, options, (e, r) => (e ? reject(e) : resolve(r))));
}

/**
 * HTTP's `deflate` is the zlib format (RFC 1950), but some clients send raw deflate (RFC 1951),
 * as browsers have long accepted: a zlib stream starts with a CMF/FLG pair whose method is 8 and
 * whose 16-bit value is a multiple of 31.
 */
function hasZlibHeader(data: Buffer): boolean {
  return data.length >= 2 && (data[0]! & 0x0f) === 8 && ((data[0]! << 8) | data[1]!) % 31 === 0;
}
