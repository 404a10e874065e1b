import { Socket } from 'node:net';
import { TLSSocket } from 'node:tls';

/**
 * Ends a connection its client library gave up for liveness (PINGs or heartbeats unanswered) with
 * a reset (RST) instead of the library's close (FIN). A closed socket's kernel goes on sending
 * what it had not delivered — in a partition, until the path heals — so a server that still took
 * the connection for alive stored, late and after newer messages, publishes the gateway had
 * already answered 503 (docs/spec-checklist.md point 178). On a reset the kernel drops them.
 *
 * Only a plain TCP socket: a TLS socket's own handle cannot be reset (node refuses it, and
 * resetting the TCP socket under an upgraded one crashes node 20), so TLS connections still close
 * with a FIN. True when the socket was reset.
 */
export function resetGivenUp(socket: unknown): boolean {
  if (!(socket instanceof Socket) || socket instanceof TLSSocket || socket.destroyed || socket.connecting) return false;
  socket.resetAndDestroy();
  return true;
}
