/**
 * The query parameters of an amqp URL that amqplib reads (`?heartbeat=30&frameMax=131072`), checked
 * at load. amqplib takes any text: `heartbeat=abc` failed every connect for ever (`Field 'heartbeat'
 * is the wrong type`), a `frameMax` under AMQP's 4096 had RabbitMQ close the socket at the handshake
 * (`unreachable: read ECONNRESET`), and a parameter it does not read (`heartbeet=30`) was silently
 * ignored.
 */

/** A frame size under AMQP's least (4096), but 0: what `zero` means. */
const frameSize =
  (zero: string) =>
  (n: number): string | undefined =>
    n !== 0 && n < 4096 ? `is under 4096, AMQP's least frame size (0 ${zero})` : undefined;

/** Each parameter amqplib reads and the whole numbers it may be (0 is "the server's", or no limit). */
const NUMBERS: Record<string, { max: number; check?: (n: number) => string | undefined }> = {
  heartbeat: { max: 65535 },
  channelMax: { max: 65535 },
  frameMax: { max: 4294967295, check: frameSize("takes the server's") },
  // The largest frame amqplib takes from the server; it refuses to connect with one under 4096 (but 0), every try.
  maxFrameSize: { max: 4294967295, check: frameSize('for no limit') },
};
const TEXTS = new Set(['locale']);

export interface UrlParameterProblems {
  /** Parameters the connection cannot be opened with. */
  errors: string[];
  /** Parameters amqplib does not read (most likely misspelt). */
  warnings: string[];
}

export function urlParameterProblems(url: string): UrlParameterProblems {
  const out: UrlParameterProblems = { errors: [], warnings: [] };
  let params: URLSearchParams;
  try {
    params = new URL(url).searchParams;
  } catch {
    return out;
  }
  const known = [...Object.keys(NUMBERS), ...TEXTS];
  for (const [name, value] of params) {
    const number = NUMBERS[name];
    if (number) {
      const n = /^\d+$/.test(value) ? Number(value) : Number.NaN;
      const why = Number.isNaN(n) || n > number.max ? `is not a whole number from 0 to ${number.max}` : number.check?.(n);
      if (why) out.errors.push(`the URL parameter ${name}=${value} ${why}`);
    } else if (!TEXTS.has(name)) {
      out.warnings.push(`the URL parameter '${name}' is not one the AMQP client reads (${known.join(', ')}): it is ignored`);
    }
  }
  return out;
}
