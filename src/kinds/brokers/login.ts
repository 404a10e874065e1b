/**
 * What /readyz and a 503 say of a broker that cannot connect: `login refused` when the server
 * turned the gateway's credentials down (fixed on either side, not in the network), else
 * `unreachable`. /readyz shows the part before the colon; the server's words follow it.
 */
export function notConnectedDetail(why: string, loginRefused: boolean): string {
  return `${loginRefused ? 'login refused' : 'unreachable'}: ${why}`;
}
