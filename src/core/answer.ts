import { problemBody, type Problem } from './errors.js';
import type { Outcome } from './outcome.js';

/** How an outcome is answered to a publishing client; shared by the HTTP and WebSocket listeners. */
export interface Answer {
  status: number;
  body: Record<string, unknown>;
  problem?: Problem;
}

export function answerFor(outcome: Outcome): Answer {
  switch (outcome.outcome) {
    case 'delivered':
      return { status: 200, body: outcome.tagged ? { deliveries: outcome.deliveries, tagged: true } : { deliveries: outcome.deliveries } };
    case 'filtered':
      return { status: 200, body: { deliveries: [], filtered: true } };
    case 'deadlettered':
      return { status: 200, body: { deliveries: outcome.deliveries, deadlettered: true, errors: outcome.errors } };
    case 'invalid':
    case 'rejected':
    case 'failed':
      return { status: outcome.problem.status, body: problemBody(outcome.problem), problem: outcome.problem };
  }
}

/** The WebSocket form of a problem (spec §5): `{"type":"error","status",...}`. */
export function errorFrame(p: Problem): string {
  const frame: Record<string, unknown> = { type: 'error', status: p.status, title: p.title, detail: p.detail, code: p.code };
  frame.errors = p.errors ?? [];
  return JSON.stringify(frame);
}
