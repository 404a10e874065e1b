/**
 * The frame bound (`maxPayloadBytes`) of a connection already open. ws copies `maxPayload` into a
 * connection's Receiver once, as it opens; a reload that changes the bound reaches the clients
 * already connected only here. What of ws's internals this relies on (the Receiver's `_maxPayload`)
 * is here alone; package.json pins ws to one minor version, and e2e/limits covers it.
 */
import type { WebSocket } from 'ws';

interface WsInternals {
  _receiver?: { _maxPayload?: unknown } | null;
}

/** The Receiver of `ws` where its bound is as this module knows it (an integer, 0 for none), else undefined. */
function receiverOf(ws: WebSocket): { _maxPayload: number } | undefined {
  const receiver = (ws as unknown as WsInternals)._receiver;
  if (typeof receiver !== 'object' || receiver === null || !Number.isSafeInteger(receiver._maxPayload)) return undefined;
  return receiver as { _maxPayload: number };
}

/**
 * Holds the frames `ws` reads from now on to `bytes`: ws checks the bound as it reads a frame's
 * length, so a frame whose length it has read completes under the old one, and a fragmented
 * message's next fragment is held to the new one (the message counts whole). False, and nothing
 * changed, where ws's Receiver is not as known here: that connection keeps the bound it opened with.
 */
export function setFrameBound(ws: WebSocket, bytes: number): boolean {
  const receiver = receiverOf(ws);
  if (receiver === undefined) return false;
  receiver._maxPayload = bytes;
  return true;
}

/** The bound `ws`'s frames are held to, where its Receiver says it (0: none). */
export function frameBound(ws: WebSocket): number | undefined {
  return receiverOf(ws)?._maxPayload;
}
