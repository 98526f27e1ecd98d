// Chains of proxies, groupcomm-proxy-07 §8 and §8.1: the timers of a non-last proxy (it keeps Multicast-Timeout,
// picks its own T > T', collects until T' and sends T'' onwards, with T'' < T', T'' < T and each gap at least the
// round trip of that hop), the 5.05 it answers when no T'' fits (carrying its own minimum), how it reacts to a 5.05
// from the next hop (retry with a larger T'', or its own 5.05, never the next hop's), and the Reply-From rewriting
// of a reverse chain that stands in for servers (§8: TARGET_OLD -> TARGET_NEW).

export interface ChainConfig {
  /** the next proxy towards the group */
  nextHop: { address: string; port: number };
  /** worst-case round trips in seconds to the previous hop and to the next hop */
  rttPrevious: number;
  rttNext: number;
  /**
   * seconds the servers need to answer a group request (their leisure, RFC 7252 §8.2, plus processing), as the
   * operator knows it; the smallest T'' this proxy sends is this plus the round trip beyond the next hop. Default 1.
   */
  serverAnswerTime?: number;
}

export interface ChainTimers {
  /** how long this proxy collects and relays: T' itself (§8.1), in s */
  collect: number;
  /** this proxy's own token retention T > T' towards the next hop, in s */
  tOwn: number;
  /** the value sent to the next hop, in s */
  tNext: number;
}

/** The smallest T'' this proxy sends: one with which the members actually answer (§8.1). */
export function minimumNext(c: ChainConfig): number {
  return Math.max(1, Math.ceil(c.serverAnswerTime ?? 1) + Math.ceil(c.rttNext));
}

/** The smallest T' this proxy accepts: the value its 5.05 carries (§8.1). */
export function minimumAcceptable(c: ChainConfig): number {
  return minimumNext(c) + Math.ceil(c.rttPrevious);
}

/**
 * §8.1 for a non-last proxy: T'' = T' - RTT(previous hop), T = max(T' + 1, T'' + RTT(next hop)); undefined when
 * T'' would be below the minimum (then 5.05 with minimumAcceptable). `atLeast` is a 5.05's value from the next hop.
 */
export function chainTimers(tPrime: number, c: ChainConfig, atLeast = 0): ChainTimers | undefined {
  const tNext = tPrime - Math.ceil(c.rttPrevious);
  if (tNext < Math.max(minimumNext(c), atLeast)) return undefined;
  return { collect: tPrime, tOwn: Math.max(tPrime + 1, tNext + Math.ceil(c.rttNext)), tNext };
}

/**
 * §8.1, a 5.05 from the next hop carrying `wanted`: the T'' to retry with (greater than the previous one and at
 * least `wanted`), or undefined when it no longer fits under T' (then this proxy answers its own 5.05).
 */
export function retryAfter505(tPrime: number, previousNext: number, wanted: number, c: ChainConfig): number | undefined {
  const next = Math.max(previousNext + 1, wanted);
  return next <= tPrime - Math.ceil(c.rttPrevious) ? next : undefined;
}

/** The minimum this proxy's own 5.05 carries after the next hop asked for `wanted`. */
export function ownMinimumAfter505(wanted: number, c: ChainConfig): number {
  return Math.max(minimumAcceptable(c), wanted + Math.ceil(c.rttPrevious));
}

/** Client side: the T' to announce for a token retention of `tMs` and a round trip to the proxy of `rttMs`. */
export function clientMulticastTimeout(tMs: number, rttMs: number): number {
  return Math.max(0, Math.floor((tMs - rttMs) / 1000));
}
