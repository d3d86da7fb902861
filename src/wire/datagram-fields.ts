/**
 * Checks on fields read from datagrams, which come from anywhere on the network: a value
 * that fails them makes its datagram (or the part of it) malformed, never an exception.
 */

/** Node ids as --node-id accepts them; anything else in a datagram is malformed. */
const NODE_ID = /^[A-Za-z0-9._:-]{1,128}$/;

export function isNodeId(value: string): boolean {
  return NODE_ID.test(value);
}

/** host:port (IPv4 or a DNS name) with a port a datagram can be sent to. */
export function isPeerAddress(address: string): boolean {
  const match = /^([A-Za-z0-9.-]{1,253}):(\d{1,5})$/.exec(address);
  return match !== null && Number(match[2]) >= 1 && Number(match[2]) <= 65535;
}

/** A wire sequence number as a JS number, or 0 (never valid) when out of the safe range. */
export function safeSeq(value: bigint): number {
  return value > 0n && value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : 0;
}
