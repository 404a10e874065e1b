import { isJsonMediaType } from '../core/message.js';
import { type AnswerListener, type ClientRequest, type Exchange, type RequestSender, TIMED_OUT } from '../kinds/targets/webhook-client.js';
import type { Output } from './run-tests.js';
import type { EndpointAnswer } from './test-file.js';

/**
 * The endpoints of a route's `http` (webhook) targets in a config test. The route's real webhook
 * target prepares each request (URL, method, headers, body, signature) and makes its tries; this
 * answers them in-process, as the test's `answers` say for the URL (a status, with `Retry-After`,
 * a redirect's `Location` and a body, or a refused connection or no answer in time; else 200, a
 * healthy endpoint), so a test calls no URL: no network, and no test message reaches a real service. A
 * message's request is one output, however many tries it took (each try sends the same request).
 */
export class RecordingEndpoints implements RequestSender {
  private readonly recorded = new WeakSet<ClientRequest>();
  /** The test's answers that some request got: one no request got names a URL the route did not call. */
  readonly used = new Set<EndpointAnswer>();

  constructor(
    private readonly answers: readonly EndpointAnswer[],
    private readonly outputs: Output[],
  ) {}

  request(req: ClientRequest, listener: AnswerListener, ticket: number): Exchange {
    const url = `${req.origin}${req.path}`;
    if (!this.recorded.has(req)) {
      this.recorded.add(req);
      this.outputs.push(requestOutput(req, url));
    }
    const answer = this.answerFor(url);
    if (answer !== undefined) this.used.add(answer);
    let aborted = false;
    // Answered after request() returns, as a real endpoint's answer comes.
    queueMicrotask(() => {
      if (aborted) return;
      if (answer?.error === 'refused') listener.answered(ticket, REFUSED, undefined);
      // At once rather than after the target's timeoutMs: the try ends as that timer would end it.
      else if (answer?.error === 'timeout') listener.answered(ticket, TIMED_OUT, undefined);
      else listener.answered(ticket, undefined, { status: answer?.status ?? 200, retryAfter: answer?.retryAfter?.toString(), location: answer?.location, text: answer?.body ?? '' });
    });
    return {
      answer: undefined,
      // A test's endpoint that does not answer got the request; a refused connection did not.
      sent: answer?.error !== 'refused',
      abort: () => {
        aborted = true;
      },
    };
  }

  close(): void {}

  /** The test's answer for a URL: written with its query string, or without it. */
  private answerFor(url: string): EndpointAnswer | undefined {
    const q = url.indexOf('?');
    return this.answers.find((a) => a.url === url) ?? (q >= 0 ? this.answers.find((a) => a.url === url.slice(0, q)) : undefined);
  }
}

/** A refused connection, as the HTTP client reports one (the target reads its code). */
const REFUSED = Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });

/** The request as an output: its headers by (lower-case) name, its body as the endpoint reads it (JSON, text, else bytes). */
function requestOutput(req: ClientRequest, url: string): Output {
  const headers: Record<string, string> = {};
  for (let i = 0; i + 1 < req.headers.length; i += 2) headers[req.headers[i]!] = req.headers[i + 1]!;
  const contentType = headers['content-type'];
  let value: unknown = req.body;
  if (isJsonMediaType(contentType)) {
    try {
      value = JSON.parse(req.body.toString('utf8'));
    } catch {
      value = req.body.toString('utf8');
    }
  } else if (contentType?.startsWith('text/')) value = req.body.toString('utf8');
  return { url, method: req.method, key: null, headers, value };
}
