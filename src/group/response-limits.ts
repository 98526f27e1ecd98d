// Caps on what one group exchange keeps (groupcomm-bis §3.1: a group request is answered by any number of sources
// until its deadline). Shared by the group client's exchanges (group-client.ts) and the proxy's fan-out
// (proxy/group-proxy.ts), so both bound the same thing with the same numbers.

/**
 * What one exchange keeps. A group request is answered by any number of sources until its deadline (groupcomm-bis
 * §3.1, RFC 7252 §8.2), so without a cap a hostile network, or many spoofed sources, grows one exchange without
 * bound. What goes over a cap is counted and dropped; 'limit' fires once per cap.
 */
export interface ResponseLimits {
  /** responses kept per exchange, counting Block2 follow-ups in progress */
  maxResponses: number;
  /** responses kept from one origin (address and port) per exchange */
  maxResponsesPerServer: number;
  /** bytes kept per exchange: payloads and option values of the kept responses (reassembled bodies included) */
  maxBytes: number;
}

export type ResponseLimitKind = 'responses' | 'per-server' | 'bytes';

/** The 'limit' event: the first response one cap dropped in an exchange. */
export interface ResponseLimitEvent {
  kind: ResponseLimitKind;
  limit: number;
  /** the origin of the dropped response */
  origin: string;
}

/**
 * Defaults for real groups. 1000 responses: a group is a room's, a floor's or a building's devices (groupcomm-bis
 * Appendix A: actuator group control, device group status requests, network-wide queries), tens to a few hundred
 * members each answering once; 1000 leaves room for the largest of those. 100 per server: a server answers a group request once (RFC 7252 §8.2), so more is a
 * misbehaving or spoofed source, which then fills at most a tenth of the exchange (an observation's notifications
 * are not kept and not counted, see ResponseStream.laterNotification()). 4 MiB:
 * 1000 responses of the largest message RFC 7252 §4.6 expects (1152 bytes) is 1.1 MiB, leaving room for a few
 * Block2-reassembled bodies (maxBodySize, 1 MiB each).
 */
export const DEFAULT_RESPONSE_LIMITS: Readonly<ResponseLimits> = Object.freeze({ maxResponses: 1000, maxResponsesPerServer: 100, maxBytes: 4 << 20 });

/** The limits with defaults filled in; RangeError for a value that is not a whole number >= 1. */
export function responseLimits(given?: Partial<ResponseLimits>): ResponseLimits {
  const l = { ...DEFAULT_RESPONSE_LIMITS, ...given };
  for (const [k, v] of Object.entries(l)) {
    if (v === undefined) (l as Record<string, number>)[k] = DEFAULT_RESPONSE_LIMITS[k as keyof ResponseLimits];
    else if (!Number.isSafeInteger(v) || v < 1) throw new RangeError(`${k} must be a whole number >= 1 (got ${v})`);
  }
  return l;
}
