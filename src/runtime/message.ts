/** The unit that flows through a route (spec §3). Immutable by convention: steps return new messages. */
export interface Message {
  value: unknown;
  key: string | null;
  headers: Record<string, string>;
  topic: string | null;
  partition: number | null;
  offset: string | null;
  /** Milliseconds since the epoch. */
  timestamp: number;
}

/** Where the message entered, for expression bindings ($path, $query) and logs. */
export interface MessageContext {
  route: string;
  path?: Record<string, string>;
  query?: Record<string, string | string[]>;
  /** Client address, for rate limits and logs. */
  remoteAddress?: string;
  /** Set by a validate step that names AsyncAPI messages: which message (and channel) the value is. */
  asyncapi?: { message: string | null; channel: string | null };
}

/** One target's acknowledgement, as listed in the HTTP 200 body. */
export type Delivery =
  | { broker: string; topic: string; partition: number; offset: string }
  | { listener: string; path: string; clients: number };

export function withValue(msg: Message, value: unknown): Message {
  return { ...msg, value };
}

export function withHeaders(msg: Message, headers: Record<string, string>): Message {
  return { ...msg, headers };
}

/** JSON text of a value as it travels on the wire: strings as they are, everything else as JSON. */
export function encodeValue(value: unknown): string {
  return typeof value === 'string' ? value : JSON.stringify(value);
}

/** The inverse of encodeValue for payloads from brokers: JSON when it parses, otherwise the string. */
export function decodeValue(payload: string): unknown {
  const c = payload.trimStart()[0];
  if (c === '{' || c === '[' || c === '"' || c === '-' || (c !== undefined && c >= '0' && c <= '9') || payload === 'true' || payload === 'false' || payload === 'null') {
    try {
      return JSON.parse(payload);
    } catch {
      return payload;
    }
  }
  return payload;
}
