import type { Delivery } from './message.js';

/**
 * Every error code eventgate emits, in one place (test/unit/errors.test.ts checks each is documented
 * in docs/errors.md). Codes are never reused once retired.
 */
export const ErrorCodes = {
  // Config (reported as diagnostics by `eventgate validate` and on reload)
  EG_CONFIG_SYNTAX: { title: 'YAML syntax error' },
  EG_CONFIG_SCHEMA: { title: 'Config does not match the schema' },
  EG_CONFIG_UNKNOWN_KEY: { title: 'Unknown key' },
  EG_CONFIG_ENV: { title: 'Undefined environment variable' },
  EG_CONFIG_REF: { title: 'Reference to something that does not exist' },
  EG_CONFIG_CONFLICT: { title: 'Two parts of the config claim the same thing' },
  EG_CONFIG_EXPRESSION: { title: 'JSONata expression does not compile' },
  EG_CONFIG_JSON_SCHEMA: { title: 'JSON Schema does not compile' },
  EG_CONFIG_FEEDBACK_LOOP: { title: 'Routes feed the topic they read (a warning)' },
  EG_CONFIG_WEAK_TOKEN: { title: 'The admin token is short enough to guess (a warning)' },
  EG_CONFIG_SUSPICIOUS_TOPIC: { title: 'A route reads or writes a topic that most likely says something else than meant (a warning)' },
  EG_CONFIG_INSECURE_TLS: { title: "A broker's TLS accepts any server certificate (a warning)" },
  EG_CONFIG_SERVER_URL: { title: "A broker URL the client reads otherwise than meant: an '@' after its host, an AMQP parameter it ignores (a warning)" },
  EG_CONFIG_FORWARD_PARAMETER: { title: "A forward path names a parameter its route's path does not have (a warning)" },
  EG_CONFIG_TAG_NOT_SENT: { title: 'A webhook of a route that tags invalid messages does not send the tag header (a warning)' },
  EG_CONFIG_UNDECLARED_FIELD: { title: "An expression reads a field the schema of the route's validate step does not declare (a warning)" },
  EG_CONFIG_OPTIONAL_FIELD: { title: "A filter's `!=` on a field the schema of the route's validate step does not require drops every message without it (a warning)" },
  EG_CONFIG_SHELL_VARIABLE: { title: 'A value is written as a shell variable, `$VAR`, which eventgate takes as text (a warning)' },
  EG_CONFIG_TEXT_EXPRESSION: { title: 'A header, key or topic expression reads as text (`acme-corp`) but is JSONata arithmetic of fields (a warning)' },
  EG_CONFIG_HEADER_SPELLING: { title: 'An expression reads a header in another case than a headers step before it sets it (a warning)' },
  EG_CONFIG_CREDENTIALS_VALIDITY: { title: "A credentials file's JWT has expired, or is not valid yet, by this machine's clock (a warning)" },
  EG_CONFIG_FILE: { title: 'Referenced file cannot be read' },
  EG_CONFIG_ASYNCAPI: { title: 'AsyncAPI document problem' },
  EG_CONFIG_ASYNCAPI_REF: { title: 'AsyncAPI message or channel the config names is missing or unusable' },
  EG_TEST_FILE: { title: 'Config test file is not valid' },
  EG_START_FAILED: { title: 'A component of a valid config could not start' },
  EG_PLAN_NOT_MADE: { title: 'eventgate plan could not make a plan' },
  // Message path (HTTP status, WebSocket error frame status)
  EG_BAD_JSON: { status: 400, title: 'Body is not valid JSON' },
  EG_UNSUPPORTED_MEDIA_TYPE: { status: 415, title: 'Unsupported content type' },
  EG_INVALID_MESSAGE: { status: 400, title: 'Message failed validation' },
  EG_PAYLOAD_TOO_LARGE: { status: 413, title: 'Payload too large' },
  EG_NOT_FOUND: { status: 404, title: 'No route for this path' },
  EG_METHOD_NOT_ALLOWED: { status: 405, title: 'Method not allowed' },
  EG_EXPRESSION_FAILED: { status: 500, title: 'Expression failed' },
  EG_BROKER_UNAVAILABLE: { status: 503, title: 'Broker did not acknowledge' },
  EG_SHUTTING_DOWN: { status: 503, title: 'Gateway is shutting down' },
  EG_UNAUTHORIZED: { status: 401, title: 'Authentication required' },
  EG_FORBIDDEN: { status: 403, title: 'Forbidden' },
  EG_RATE_LIMITED: { status: 429, title: 'Too many requests' },
  EG_AUTH_UNAVAILABLE: { status: 503, title: 'Credentials cannot be checked right now' },
  EG_ORIGIN_NOT_ALLOWED: { status: 403, title: 'Origin not allowed' },
  EG_JSON_TOO_DEEP: { status: 400, title: 'JSON nested too deeply' },
  EG_JSON_FORBIDDEN_KEY: { status: 400, title: 'JSON has a forbidden key' },
  EG_BAD_REQUEST: { status: 400, title: 'Malformed request' },
  EG_HEADERS_TOO_LARGE: { status: 431, title: 'Request headers too large' },
  EG_REQUEST_TIMEOUT: { status: 408, title: 'Request timeout' },
  EG_EXPECTATION_FAILED: { status: 417, title: 'Expectation failed' },
  EG_TRANSFER_CODING_UNSUPPORTED: { status: 501, title: 'Unsupported transfer coding' },
  EG_INTERNAL: { status: 500, title: 'Internal error' },
  EG_CLOUDEVENT_INVALID: { status: 400, title: 'CloudEvent attribute missing or malformed' },
  EG_NOT_ACCEPTABLE: { status: 406, title: 'Not acceptable' },
  EG_UPGRADE_REQUIRED: { status: 426, title: 'Upgrade required' },
  EG_WEBHOOK_FAILED: { status: 502, title: 'Webhook endpoint did not accept the message' },
  EG_WEBHOOK_REFUSED: { status: 502, title: 'Webhook endpoint refused the message' },
  EG_WEBHOOK_TIMEOUT: { status: 504, title: 'Webhook endpoint did not answer in time' },
  // Kafka listener (records of a produce request): in the route's tap and log, never sent to the client
  EG_PRODUCE_REFUSED: { status: 400, title: 'Not written: another record of its produce request was refused' },
  EG_KAFKA_ERROR: { status: 502, title: 'The Kafka cluster answered with an error' },
  // Consume routes: in the _eventgate_error header of a dead-lettered record, never in a response
  EG_UNDECODABLE_BATCH: { status: 422, title: 'Record batch cannot be decoded' },
  EG_UNDECODABLE_RECORD: { status: 422, title: 'Record cannot be decoded' },
  // Admin API: POST /admin/reload (the body also carries the reload's own result and diagnostics)
  EG_RELOAD_REJECTED: { status: 422, title: 'Reload rejected: the running config keeps serving' },
  EG_RELOAD_ROLLED_BACK: { status: 409, title: 'Reload rolled back: the running config was restored' },
  // Admin API: AsyncAPI upload (PUT /admin/asyncapi)
  EG_ASYNCAPI_INVALID: { status: 422, title: 'AsyncAPI document rejected' },
  EG_ASYNCAPI_CONFLICT: { status: 409, title: 'AsyncAPI document drops a message or channel the config uses' },
  EG_ASYNCAPI_CHANGED_ON_DISK: { status: 409, title: 'AsyncAPI document changed on disk while the upload was checked' },
  EG_ASYNCAPI_FILE_REQUIRED: { status: 400, title: 'Several AsyncAPI documents: say which with ?file=' },
  EG_ASYNCAPI_UNKNOWN_FILE: { status: 404, title: 'No such AsyncAPI document in the config' },
} as const;

export type ErrorCode = keyof typeof ErrorCodes;

export function problemType(code: ErrorCode): string {
  return `urn:eventgate:problem:${code}`;
}

/** A webhook target's failure after its own retries (it may pass later, but not by retrying at once). */
export function retriedByWebhook(p: Problem): boolean {
  return p.code === 'EG_WEBHOOK_FAILED' || p.code === 'EG_WEBHOOK_TIMEOUT';
}

/**
 * A failure a later try may not meet: a broker that did not acknowledge (503), a webhook that
 * failed. Any other failure (a record a broker refused as too large or invalid, a webhook's final
 * refusal, a failed expression) meets every try the same way.
 */
export function mayPassLater(p: Problem): boolean {
  return p.status === 503 || retriedByWebhook(p);
}

/** An RFC 9457 problem as eventgate sends it over HTTP (and, reshaped, as a WebSocket error frame). */
export interface Problem {
  code: ErrorCode;
  status: number;
  title: string;
  detail: string;
  errors?: string[];
  /** Extra response headers, e.g. Retry-After. */
  headers?: Record<string, string>;
  /** For the log only, never answered to a client: e.g. which expression at which config line failed. */
  logDetail?: string;
  /**
   * A fan-out failure: per target, in `to` order, its delivery, or undefined where it failed.
   * Answered as `deliveries` (the targets that took the message, so a client that retries knows it
   * sends it to them again); a consume route retries the message to the others only.
   */
  took?: readonly (Delivery | undefined)[];
  /**
   * Per target, in `to` order: the outcome of a write still out after its ack deadline
   * (AckTimeout.late), for a consume route to wait for before it writes again. Never answered.
   */
  late?: readonly ({ wait(): Promise<Delivery | undefined> } | undefined)[];
  /**
   * A fan-out failure with `late`, or where more than one target failed: each target's own
   * failure, in `to` order (undefined where it took the message), so a consume route can tell
   * which failure stands once the late answers came, and the route logs each as it would alone.
   * Never answered.
   */
  targets?: readonly (Problem | undefined)[];
  /**
   * A webhook target's failure: the tries it made of the message (its last delivery), and the HTTP
   * status the endpoint last answered, from any of them (absent when none was answered). A
   * dead-letter copy's `_eventgate_error`, the problem answer (problemBody, errorFrame) and the tap
   * carry them as fields of their own.
   */
  attempts?: number;
  endpointStatus?: number;
  /**
   * The failing target's place in the route's `to`, from 0 (the `target` label of
   * eventgate_webhook_requests_total): set where a target's failure becomes the route's (the
   * single-target path, everyTarget, settledLate's standing failure), absent for a failure no
   * target made (a step, a chain's expression). Carried as `attempts` is.
   */
  target?: number;
}

export function problem(code: ErrorCode, detail: string, extra: Partial<Problem> = {}): Problem {
  const def = ErrorCodes[code] as { status?: number; title: string };
  return { code, status: def.status ?? 500, title: def.title, detail, ...extra };
}

export function problemBody(p: Problem): Record<string, unknown> {
  const body: Record<string, unknown> = {
    type: problemType(p.code),
    title: p.title,
    status: p.status,
    detail: p.detail,
    code: p.code,
  };
  if (p.errors) body.errors = p.errors;
  if (p.took) body.deliveries = tookDeliveries(p.took);
  // RFC 9457 extension members, after the contract's (a reader of those finds them unchanged).
  if (p.attempts !== undefined) body.attempts = p.attempts;
  if (p.endpointStatus !== undefined) body.endpointStatus = p.endpointStatus;
  if (p.target !== undefined) body.target = p.target;
  return body;
}

/** The deliveries of the targets that took a message whose fan-out failed (Problem.took). */
export function tookDeliveries(took: readonly (Delivery | undefined)[]): Delivery[] {
  return took.filter((d): d is Delivery => d !== undefined);
}
